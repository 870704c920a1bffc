"""Named fault-injection points for deterministic kill tests.

Set `MYOL_KERAS_FAULT=<point>` and the process kills itself with SIGKILL when
it reaches that point, as a preemption would. Unset, `maybe_fail` does nothing.

Points (docs/DECISIONS.md §4.11):

* `epoch_end:<n>` — after epoch n (1-based) is checkpointed (`callbacks.FaultPoint`);
* `step_end:<k>` — after global step k (1-based), mid-epoch;
* `nan_loss:<k>` — not a kill: step k gets NaN weights, hence a NaN loss;
* `checkpoint_first_file` — a new checkpoint's weights file is written, the
  rest is not (`checkpoint.ResumableBackup`);
* `checkpoint_before_rename` — the new checkpoint is complete in its
  temporary directory, not yet renamed into place;
* `checkpoint_after_rename` — renamed, older checkpoints not yet pruned;
* `before_export` — training finished, nothing exported;
* `mid_export` — inside the export's temporary directory, before its rename;
* `after_export` — the export is in place, the run's DONE marker is not;
* `cache_build` — a decoded-image cache entry has its first chunk of images
  written in its temporary directory (`data.cache.load`).
"""

import os
import signal

ENV_VAR = "MYOL_KERAS_FAULT"


def requested():
    """The fault point named in the environment, or None."""
    return os.environ.get(ENV_VAR) or None


def maybe_fail(point):
    """SIGKILL this process if `MYOL_KERAS_FAULT` names `point`."""
    wanted = os.environ.get(ENV_VAR)
    if wanted and wanted == point:
        os.kill(os.getpid(), signal.SIGKILL)
