"""Agreement and the chief's state for a multi-worker run (docs/DECISIONS.md §4.9).

* `fingerprint` — everything the workers must share: the resolved settings except the per-worker ones
  (`cluster.PER_WORKER_SETTINGS`), the data identity (count, image size, a digest of up to 64 images), the
  steps per epoch and the code version;
* `agree` — all-gathers a hash of it before the first step; on a mismatch every worker raises
  `cluster.SettingsDiffer` naming the first differing setting and the workers' values;
* `chief_value`, `broadcast_from_chief` — the chief's run directory decides, and its restored state
  (weights, optimizer variables, epoch) is what every worker starts from.

Example:
```python
agreement.agree(strategy, cluster.task_config(), agreement.fingerprint(config, plan))
```
"""

import hashlib
import os

from myol_keras.cluster import PER_WORKER_SETTINGS
from myol_keras.cluster import SettingsDiffer

def _digest(value):
    return int.from_bytes(hashlib.sha1(repr(value).encode()).digest()[:8], "big") & (2**63 - 1)


def data_digest(images):
    """A hash of the pre-training images: shape and up to 64 images spread over the set."""
    import numpy as np

    if not hasattr(images, "shape"):
        return "not an array"
    h = hashlib.sha1(repr(tuple(images.shape)).encode())
    for i in np.unique(np.linspace(0, len(images) - 1, min(len(images), 64)).astype(int)):
        h.update(np.ascontiguousarray(images[int(i)]).tobytes())
    return h.hexdigest()[:16]


def code_digest():
    """A hash of the myol_keras source files this process runs."""
    root = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha1()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for path in sorted(os.path.join(folder, f) for f in files if f.endswith(".py")):
            with open(path, "rb") as f:
                h.update(os.path.relpath(path, root).encode() + f.read())
    return h.hexdigest()[:16]


def fingerprint(config, plan):
    """Everything the workers must share, in the order a difference is reported: name -> value."""
    import keras
    import tensorflow as tf

    values = {f"--{k}": v for k, v in config.to_dict().items() if k not in PER_WORKER_SETTINGS}
    values.update({
        "number of images": plan.num_images, "image size": plan.image_size, "data content": data_digest(plan.images),
        "steps per epoch": plan.steps_per_epoch, "myol_keras code": code_digest(),
        "TensorFlow version": tf.__version__, "Keras version": keras.__version__,
    })
    return values


def _gather_rows(strategy, vector, dtype="int64"):
    """Every replica's `vector`, one row per replica (replicas in rank order: the chief's first)."""
    import tensorflow as tf

    value = strategy.experimental_distribute_values_from_function(
        lambda _: tf.constant([list(vector)], getattr(tf, dtype)))
    return strategy.gather(value, axis=0).numpy()


def agree(strategy, task, settings):
    """All-gather a hash of `settings`; raise `SettingsDiffer` naming the first difference (same line everywhere)."""
    names = list(settings)
    hashes = [_digest(settings[n]) for n in names]
    rows = _gather_rows(strategy, [_digest(hashes), _digest(names)])
    if (rows == rows[0]).all():
        return
    per_worker = max(1, strategy.num_replicas_in_sync // len(task.tasks))  # rows are replicas, in rank order
    owners = [min(i // per_worker, len(task.tasks) - 1) for i in range(len(rows))]
    if not (rows[:, 1] == rows[0, 1]).all():
        name = "myol_keras code"
        differ = sorted({owners[i] for i in range(len(rows)) if rows[i, 1] != rows[0, 1]})
    else:
        rows = _gather_rows(strategy, hashes)
        column = next(j for j in range(len(names)) if not (rows[:, j] == rows[0, j]).all())
        name = names[column]
        differ = sorted({owners[i] for i in range(len(rows)) if rows[i, column] != rows[0, column]})
    text = str(settings.get(name, "?")).encode()[:120]
    shown = _gather_rows(strategy, list(text) + [-1] * (128 - len(text)), "int32")
    value_of = {}
    for i, row in enumerate(shown):
        value_of.setdefault(owners[i], bytes(int(b) for b in row if b >= 0).decode(errors="replace"))
    listed = "; ".join(f"{task.name(r)}: {value_of.get(r, '?')}" for r in [0, *differ])
    raise SettingsDiffer(
        f"the workers disagree on {name} ({listed}); {', '.join(task.name(r) for r in differ)} "
        f"{'differs' if len(differ) == 1 else 'differ'} from the chief: start every worker with the same command, "
        "data and code (only TF_CONFIG's task.index and per-worker paths may differ)")


def chief_value(strategy, value):
    """The chief's `value` (an int), on every worker."""
    return int(_gather_rows(strategy, [int(value)])[0, 0])


_REDUCIBLE = ("float16", "bfloat16", "float32", "float64", "int32", "int64")


def broadcast_from_chief(strategy, variables):
    """Give every worker the chief's values of `variables` (Keras or tf variables, same order everywhere).

    One packed all-reduce: the chief's first replica contributes each value, every other replica
    zeros, so the sum is the chief's value exactly.
    """
    import tensorflow as tf

    targets = [getattr(v, "value", v) for v in variables]
    if not targets:
        return

    def wire(v):  # the dtype the all-reduce carries (it packs tensors of one dtype)
        return v.dtype.name if v.dtype.name in _REDUCIBLE else "int64"

    groups = {}
    for i, v in enumerate(targets):
        groups.setdefault(wire(v), []).append(i)

    def contribute():
        replica = tf.distribute.get_replica_context()
        first = tf.equal(replica.replica_id_in_sync_group, 0)
        summed = {}
        for dtype, members in groups.items():
            values = [tf.cast(tf.convert_to_tensor(targets[i]), dtype) for i in members]
            values = [tf.where(first, x, tf.zeros_like(x)) for x in values]
            summed[dtype] = replica.all_reduce(tf.distribute.ReduceOp.SUM, values)
        return summed

    summed = tf.function(lambda: strategy.run(contribute))()
    for dtype, members in groups.items():
        for i, total in zip(members, summed[dtype]):
            local = strategy.experimental_local_results(total)[0]
            targets[i].assign(tf.cast(local, targets[i].dtype))
