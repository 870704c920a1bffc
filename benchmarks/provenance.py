"""Where a result row came from: code, libraries, data, machine, command (standard library only).

Every row a benchmark records carries `provenance(...)`, so that a reader can
tell which commit and which flags produced it and rerun it:

    >>> p = provenance(data_path="../shared/data/cifar10_subset.npz", command=["quality.py", "--seeds=0"])
    >>> sorted(p)[:3]
    ['command', 'commit', 'cpu']

* `commit` and `dirty`: `git rev-parse HEAD` of the checkout the code ran from,
  and whether it had uncommitted changes to tracked files (untracked scratch
  such as run directories does not count);
* `versions`: Python, TensorFlow, Keras, NumPy (those importable);
* `data`: the data file's path, size and SHA-256;
* `cpu`: model, the SIMD flags that matter for TensorFlow here, logical CPUs;
* `onednn`: whether TensorFlow ran oneDNN's CPU kernels (True/False once TensorFlow is imported, else the
  `TF_ENABLE_ONEDNN_OPTS` setting or None): with them on, a BYOL-family run does not repeat bit for bit;
* `load_average`: the 1/5/15-minute load when the row was made;
* `command`: the command line as typed.
"""

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a file beside bench_common.py
import bench_common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def git_state(root=ROOT):
    """`(commit, dirty)` of the checkout at `root`; `(None, None)` outside git."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(status.strip())


def library_versions():
    """Versions of Python and of the numerical libraries already imported or importable."""
    versions = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "numpy"):
        module = sys.modules.get(name)
        if module is None:
            try:
                from importlib.metadata import version

                versions[name] = version(name)
            except Exception:  # not installed
                continue
        else:
            versions[name] = getattr(module, "__version__", "unknown")
    return versions


def file_sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def cpu(path="/proc/cpuinfo"):
    """`{"model", "flags", "logical_cpus"}`: `bench_common.cpu_info`'s reading as a record."""
    model, flags, logical_cpus = bench_common.cpu_info(path)
    return {"model": model, "flags": flags, "logical_cpus": logical_cpus}


def onednn_state():
    """True/False: this process' TensorFlow runs oneDNN's kernels; before TensorFlow is imported, what the
    environment asks for (True for "1", False for "0", None when unset)."""
    if "tensorflow" in sys.modules:
        from myol_keras.process_settings import onednn_enabled

        return onednn_enabled()
    return {"1": True, "0": False}.get(os.environ.get("TF_ENABLE_ONEDNN_OPTS"))


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def provenance(*, data_path=None, command=None, root=ROOT):
    """The provenance record of a result row (see the module docstring)."""
    commit, dirty = git_state(root)
    record = {
        "commit": commit, "dirty": dirty, "versions": library_versions(), "cpu": cpu(),
        "onednn": onednn_state(), "load_average": load_average(),
        "command": list(command) if command is not None else list(sys.argv),
    }
    if data_path is not None:
        record["data"] = {"path": str(data_path), "bytes": os.path.getsize(data_path), "sha256": file_sha256(data_path)}
    return record


def write_record(path, record):
    """Write `record` (with a `provenance` dict) to `path` as JSON, its `load_average_at_end` stamped now."""
    record["provenance"]["load_average_at_end"] = load_average()
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
