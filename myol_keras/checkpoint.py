"""Crash-safe epoch checkpoints: `ResumableBackup` (docs/DECISIONS.md §4.11).

Keras' `BackupAndRestore` rewrites its files in place; a SIGKILL in the middle
of that write can leave a backup that neither loads nor points to a good one.
`ResumableBackup` never modifies a complete checkpoint. At the end of every
epoch it writes a new one into a temporary directory, fsyncs the files, and
renames the directory into place in one atomic step:

    backup/
      epoch-000002/   model.weights.h5, history.csv, state.json   (previous good one, kept)
      epoch-000003/   ...                                          (latest)
      .tmp-epoch-000004-xxxx/                                      (being written; ignored)

`model.weights.h5` holds every model variable (online and target networks, BN
statistics, MoCo's queue) and the optimizer's (`iterations`, momentum slots);
`history.csv` is the run's history up to that epoch, so a resumed run's
history has neither gaps nor duplicates; `state.json` records the epoch and
step. Restoring takes the newest checkpoint that loads and falls back to the
previous one if it does not. A checkpoint is never written when the loss or
any weight is NaN/Inf, so the last good one survives a divergence.

Fault-injection points (`MYOL_KERAS_FAULT`, see `myol_keras.faults`):
`checkpoint_first_file` (after the weights file of a new checkpoint is
written), `checkpoint_before_rename`, `checkpoint_after_rename` (before older
checkpoints are pruned).
"""

import json
import math
import os
import re
import shutil
import tempfile
import time
import warnings

import keras
import numpy as np

from myol_keras import faults
from myol_keras import rundir

WEIGHTS_FILE = "model.weights.h5"
HISTORY_FILE = rundir.HISTORY_FILE
STATE_FILE = "state.json"
_NAME = re.compile(r"^epoch-(\d{6,})$")


class NonFiniteError(RuntimeError):
    """Training produced NaN/Inf (loss or weights); nothing was checkpointed."""


def checkpoints(backup_dir):
    """Complete checkpoints in `backup_dir`, oldest first, as `(epoch, path)`."""
    if not os.path.isdir(backup_dir):
        return []
    found = []
    for name in os.listdir(backup_dir):
        match = _NAME.match(name)
        path = os.path.join(backup_dir, name)
        if match and os.path.exists(os.path.join(path, STATE_FILE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(backup_dir):
    """`(epoch, path)` of the newest complete checkpoint, or `(0, None)`."""
    found = checkpoints(backup_dir)
    return found[-1] if found else (0, None)


def weights_finite(model):
    """Whether every model and optimizer variable is finite."""
    variables = list(model.weights)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    for v in variables:
        value = v.numpy()  # convert_to_numpy(variable) warns under NumPy 2 (its __array__ takes no copy=)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            return False
    return True


@keras.saving.register_keras_serializable(package="myol_keras")
class ResumableBackup(keras.callbacks.Callback):
    """Atomic, kill-safe epoch checkpoints with resume (replaces `BackupAndRestore`).

    Call `restore()` before `fit` (it returns the number of completed epochs,
    to pass as `initial_epoch` and to position the data pipeline), or let
    `on_train_begin` do it. The model must be built and its optimizer built
    on the variables it trains, as for `BackupAndRestore`.

    Args:
        backup_dir: directory of the checkpoints.
        history_path: the run's `history.csv` (written by `EpochHistoryCSV`,
            which must come *before* this callback); copied into every
            checkpoint and restored from it. None: no history.
        keep: complete checkpoints kept (at least 2: the latest and the
            previous good one).
        write: False on non-chief workers of a multi-worker run: restore
            only, never write.

    Example:
    ```python
    backup = myol_keras.checkpoint.ResumableBackup("runs/r1/backup", "runs/r1/history.csv")
    start = backup.restore(model)
    model.fit(ds, epochs=100, initial_epoch=start, steps_per_epoch=steps,
              callbacks=[myol_keras.EpochHistoryCSV("runs/r1/history.csv"), backup])
    ```
    """

    def __init__(self, backup_dir, history_path=None, keep=2, write=True):
        super().__init__()
        if int(keep) < 2:
            raise ValueError(f"Expected `keep` >= 2 (the latest and the previous good checkpoint). Received: keep={keep}")
        self.backup_dir = backup_dir
        self.history_path = history_path
        self.keep = int(keep)
        self.write = bool(write)
        self.restored_epoch = None

    # --- restore --------------------------------------------------------------

    def restore(self, model=None, at_most=None):
        """Load the newest loadable checkpoint into `model`; returns its epoch (0: none).

        Args:
            model: the built, compiled model (default: the callback's).
            at_most: ignore checkpoints of later epochs (the workers of a
                multi-worker run agree on the newest epoch they all have).
        """
        model = model or self.model
        if model is None:
            raise ValueError("ResumableBackup.restore() needs a model.")
        if not model.built:
            raise ValueError(f"ResumableBackup needs a built model before fit(); {model.name} is not built.")
        self._remove_temporaries()
        errors = []
        for epoch, path in reversed(checkpoints(self.backup_dir)):
            if at_most is not None and epoch > at_most:
                continue
            try:
                model.load_weights(os.path.join(path, WEIGHTS_FILE))
            except Exception as error:  # noqa: BLE001 - a damaged checkpoint: try the previous one
                errors.append(f"{path}: {type(error).__name__}: {error}")
                continue
            if errors:
                warnings.warn(f"Skipped damaged checkpoint(s): {'; '.join(errors)}", stacklevel=2)
            history = os.path.join(path, HISTORY_FILE)
            if self.history_path and self.write:
                if os.path.exists(history):
                    rundir.atomic_copy(history, self.history_path)
                elif os.path.exists(self.history_path):
                    os.remove(self.history_path)
            self.restored_epoch = epoch
            model._initial_epoch = epoch
            return epoch
        if errors:
            raise OSError(f"No checkpoint in {self.backup_dir} could be loaded: {'; '.join(errors)}")
        if self.history_path and self.write and os.path.exists(self.history_path):
            os.remove(self.history_path)  # rows of an epoch that never got checkpointed
        self.restored_epoch = 0
        return 0

    def on_train_begin(self, logs=None):
        if self.restored_epoch is None:
            self.restore(self.model)

    # --- save -----------------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteError(f"NaN or Inf loss in epoch {epoch + 1}; no checkpoint written")
        if not weights_finite(self.model):
            raise NonFiniteError(f"NaN or Inf weights at the end of epoch {epoch + 1}; no checkpoint written")
        if self.write:
            self.save(epoch + 1)

    def save(self, epoch):
        """Write the checkpoint of `epoch` completed epochs (atomically)."""
        os.makedirs(self.backup_dir, exist_ok=True)
        final = os.path.join(self.backup_dir, f"epoch-{epoch:06d}")
        tmp = tempfile.mkdtemp(prefix=f".tmp-epoch-{epoch:06d}-", dir=self.backup_dir)
        try:
            weights = os.path.join(tmp, WEIGHTS_FILE)
            self.model.save_weights(weights)
            rundir.fsync_file(weights)
            faults.maybe_fail("checkpoint_first_file")
            if self.history_path and os.path.exists(self.history_path):
                shutil.copyfile(self.history_path, os.path.join(tmp, HISTORY_FILE))
                rundir.fsync_file(os.path.join(tmp, HISTORY_FILE))
            state = {
                "epoch": epoch,
                "iterations": int(self.model.optimizer.iterations.numpy()),
                "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            with open(os.path.join(tmp, STATE_FILE), "w") as f:
                json.dump(state, f)
                f.flush()
                os.fsync(f.fileno())
            rundir.fsync_dir(tmp)
            faults.maybe_fail("checkpoint_before_rename")
            if os.path.exists(final):  # a re-run epoch after a fallback: replace it
                stale = tempfile.mkdtemp(prefix=".tmp-stale-", dir=self.backup_dir)
                os.rename(final, os.path.join(stale, "old"))
                shutil.rmtree(stale, ignore_errors=True)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        rundir.fsync_dir(self.backup_dir)
        faults.maybe_fail("checkpoint_after_rename")
        for _, old in checkpoints(self.backup_dir)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _remove_temporaries(self):
        if not os.path.isdir(self.backup_dir) or not self.write:
            return
        for name in os.listdir(self.backup_dir):
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(self.backup_dir, name), ignore_errors=True)

    def get_config(self):
        return {"backup_dir": self.backup_dir, "history_path": self.history_path, "keep": self.keep, "write": self.write}
