"""Named fault-injection points for deterministic kill tests.

Set `MYOL_KERAS_FAULT=<point>` (e.g. `mid_export`, `epoch_end:2`) and the
process kills itself with SIGKILL when it reaches that point, as a
preemption would. Unset, `maybe_fail` does nothing.
"""

import os
import signal

ENV_VAR = "MYOL_KERAS_FAULT"


def maybe_fail(point):
    """SIGKILL this process if `MYOL_KERAS_FAULT` names `point`."""
    wanted = os.environ.get(ENV_VAR)
    if wanted and wanted == point:
        os.kill(os.getpid(), signal.SIGKILL)
