"""Starting CLI workers of a localhost cluster, for the multi-process tests (test_cluster, test_multi_worker).

Each worker is a `python -m myol_keras.main --strategy=multi_worker` process in its own working directory
(as on its own machine), with its own `TF_CONFIG` and nothing inherited from the test process's
`TF_CONFIG` or fault hook.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    """A localhost port that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def two_worker_cluster():
    """A cluster spec of two workers on fresh localhost ports."""
    return {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}


def tf_config(cluster_spec, index, job="worker"):
    return json.dumps({"cluster": cluster_spec, "task": {"type": job, "index": index}})


def env(extra=None):
    """The test process's environment for a child: this checkout importable, no TF_CONFIG, no fault hook."""
    child = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                 PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child.pop("TF_CONFIG", None)
    child.pop("MYOL_KERAS_FAULT", None)
    child.update(extra or {})
    return child


def start_worker(cwd, cluster_spec, index, args, fault=""):
    """Start worker `index` of `cluster_spec` in `cwd` (created); `fault` sets MYOL_KERAS_FAULT."""
    cwd.mkdir(parents=True, exist_ok=True)
    extra = {"TF_CONFIG": tf_config(cluster_spec, index)}
    if fault:
        extra["MYOL_KERAS_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "myol_keras.main", "--strategy=multi_worker", *args], cwd=cwd,
                            env=env(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout):
    """(status, stdout, stderr) of `proc`, killed (and the test failed) after `timeout` s."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running after {timeout} s: {out[-2000:]} {err[-2000:]}") from None
    return proc.returncode, out, err


def lines_starting(err, prefix):
    return [line for line in err.splitlines() if line.startswith(prefix)]
