"""The run directory and export roots: file names, markers, versions, atomic writes.

One run writes one directory (docs/DECISIONS.md §2, §4.11):

| name | written by | holds |
|---|---|---|
| `config.json` | `pretrain` | the `PretrainConfig` and what was resolved from it |
| `flags.txt` | `pretrain` | the settings as a reusable `--flagfile` |
| `history.csv` | `EpochHistoryCSV` | one row per epoch |
| `backup/` | `ResumableBackup` | the last two epoch checkpoints |
| `tensorboard/` | Keras' `TensorBoard` | event files |
| `EXPORTING` | `pretrain` | the version directory an export is writing (a kill-safe claim) |
| `DONE` | `pretrain` | the export path, once the export is complete |
| `results.json` | the evaluations | one record per evaluation |

Every file that must never be seen half-written goes through `atomic_write`
(a temporary sibling, flushed and fsynced, then `os.replace`), and every
directory through `atomic_directory` (a temporary sibling renamed into place).

Example:
```python
run = RunDirectory("runs/myol-digits")
if run.is_done():
    print(run.read_done()["export"])
```
"""

import contextlib
import json
import os
import shutil
import tempfile

CONFIG_FILE = "config.json"
FLAGS_FILE = "flags.txt"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "tensorboard"
EXPORTING_FILE = "EXPORTING"
DONE_FILE = "DONE"
RESULTS_FILE = "results.json"
TEMPORARY_PREFIX = ".tmp-"


def fsync_file(path):
    """Flush `path`'s data to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path):
    """Flush a directory entry (a rename into it) to disk, where the OS allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, content):
    """Write `content` (str or bytes) to `path` so a reader sees the old or the new file, never a part.

    Args:
        path: the destination file.
        content: the whole new content.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    mode = "wb" if isinstance(content, (bytes, bytearray)) else "w"
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX + os.path.basename(path) + "-", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(directory)
    return path


def atomic_write_json(path, payload):
    """`atomic_write` of `payload` as indented, key-sorted JSON (non-JSON values as strings)."""
    return atomic_write(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_csv(path, rows):
    """`atomic_write` of dict `rows` as CSV; the columns are every key, in order of first appearance."""
    import csv
    import io

    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, text.getvalue())


def atomic_copy(source, destination):
    """Copy `source` over `destination` atomically."""
    with open(source, "rb") as f:
        return atomic_write(destination, f.read())


def read_json(path, default=None):
    """The JSON in `path`, or `default` if the file does not exist."""
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


@contextlib.contextmanager
def atomic_directory(final_dir, before_rename=None):
    """Yield a temporary sibling of `final_dir`; rename it to `final_dir` when the block succeeds.

    On any exception (a full disk, a kill signal turned into an exception, a
    failing converter) the temporary directory is removed and `final_dir`
    never appears.

    Args:
        final_dir: the directory to create; must not exist yet.
        before_rename: optional callable run after the block, before the
            rename (a fault-injection point in tests).

    Example:
    ```python
    with atomic_directory("saved_models/run/3") as tmp:
        archive.write_out(tmp)
    ```
    """
    final_dir = os.fspath(final_dir)
    if os.path.exists(final_dir):
        raise FileExistsError(f"{final_dir} already exists")
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}{os.path.basename(final_dir)}-", dir=parent)
    try:
        yield tmp
        for root, _, files in os.walk(tmp):
            for name in files:
                fsync_file(os.path.join(root, name))
            fsync_dir(root)
        if before_rename is not None:
            before_rename()
        os.rename(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(parent)


def remove_temporaries(directory):
    """Delete what an atomic write killed mid-way left in `directory` (`.tmp-*`)."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name.startswith(TEMPORARY_PREFIX):
            remove_path(os.path.join(directory, name))


def remove_path(path):
    """Remove a file or a directory tree, whichever `path` is; missing is fine."""
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)


def versions(export_root):
    """The integer version directories under `export_root`, ascending."""
    if not os.path.isdir(export_root):
        return []
    return sorted(int(d) for d in os.listdir(export_root) if d.isdigit())


def next_version(export_root):
    """The next integer version under `export_root` (1 if there is none)."""
    return max(versions(export_root), default=0) + 1


def check_writable_directory(path, what="directory"):
    """Raise `ValueError` unless `path` is, or can become, a writable directory.

    Checked before training so a bad output path fails in seconds, not after
    the whole run. Creates nothing.
    """
    path = os.path.abspath(os.fspath(path))
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ValueError(f"{what} {path} cannot be created: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path} is not writable (no write permission on {probe})")
    return path


class RunDirectory:
    """The files of one run directory and its lifecycle markers.

    Args:
        path: the run directory (`<run_dir>/<run_name>`).

    Example:
    ```python
    run = RunDirectory("runs/myol-digits")
    run.write_config({"method": "myol"})
    run.mark_done("saved_models/myol-digits/1")
    ```
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.config_path = self.file(CONFIG_FILE)
        self.history_path = self.file(HISTORY_FILE)
        self.backup_dir = self.file(BACKUP_DIR)
        self.tensorboard_dir = self.file(TENSORBOARD_DIR)
        self.results_path = self.file(RESULTS_FILE)

    def file(self, name):
        """The path of `name` inside the run directory."""
        return os.path.join(self.path, name)

    def exists(self):
        return os.path.isdir(self.path)

    def create(self):
        os.makedirs(self.path, exist_ok=True)
        return self

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)

    def write_config(self, payload):
        return atomic_write_json(self.config_path, payload)

    def read_config(self):
        return read_json(self.config_path)

    def write_flagfile(self, settings):
        """`flags.txt`: `--name=value` lines, reusable as a `--flagfile`."""
        lines = "".join(f"--{k}={v}\n" for k, v in settings.items() if v is not None)
        return atomic_write(self.file(FLAGS_FILE), lines)

    # --- markers ------------------------------------------------------------------

    def is_done(self):
        return os.path.exists(self.file(DONE_FILE))

    def read_done(self):
        return read_json(self.file(DONE_FILE))

    def mark_done(self, export_path, finished=None):
        import time

        done = {"run_dir": self.path, "export": export_path,
                "finished": finished or time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(self.file(DONE_FILE), done)
        return done

    def pending_export(self):
        """The export path claimed by `claim_export` and not yet completed, else None."""
        pending = read_json(self.file(EXPORTING_FILE))
        return pending["export"] if pending else None

    def claim_export(self, export_path):
        """Record the version directory about to be written, so a rerun after a kill reuses it."""
        atomic_write_json(self.file(EXPORTING_FILE), {"export": export_path})

    def clear_claim(self):
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.file(EXPORTING_FILE))

    def __repr__(self):
        return f"RunDirectory({self.path!r})"
