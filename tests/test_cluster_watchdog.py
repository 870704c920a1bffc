"""cluster.runtime_start: a TensorFlow runtime start that never finishes is ended by a watchdog process.

`MultiWorkerMirroredStrategy()` holds the GIL while it waits for the other workers, so no thread of ours
can time it out; a worker that vanished between the greeting and TensorFlow's own handshake used to
leave the others waiting for ever (seen once in the suite: 600 s, then the test's own timeout).
"""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code, timeout=60):
    start = time.time()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return result, time.time() - start


def test_a_start_past_its_deadline_ends_the_process_with_one_line():
    code = ("import time\nfrom myol_keras import cluster\n"
            "with cluster.runtime_start(deadline=1):\n    time.sleep(30)\nprint('not reached')")
    result, seconds = _run(code)
    assert result.returncode == -15 and seconds < 15, (result.returncode, seconds, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "collective runtime did not start within 1 s" in lines[0], result.stderr
    assert "not reached" not in result.stdout


def test_a_start_in_time_leaves_no_watchdog_behind():
    code = ("import time\nfrom myol_keras import cluster\n"
            "with cluster.runtime_start(deadline=2):\n    time.sleep(0.2)\ntime.sleep(3)\nprint('done')")
    result, _ = _run(code)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr
    assert result.stderr.strip() == ""
