"""tf.distribute for pre-training: strategies, synchronised BatchNorm, replica-aware updates.

`--strategy` (DESIGN §4.9) picks a `tf.distribute.Strategy`; the model is built
and compiled inside its scope and `fit` splits the *global* batch between the
replicas. What a custom `train_step` must do under a strategy, and where this
library does it:

* the loss is divided by `num_replicas_in_sync` before the gradient
  (`BootstrapMethod.train_step`), because Keras' optimizer *sums* the replica
  gradients (`_all_reduce_sum_gradients`);
* coupled weight decay is added once: each replica adds `wd * w / R` to its
  gradient, so the all-reduce sum is `wd * w` (every replica holds the same
  mirrored `w`). Added as `wd * w` per replica it would become `R * wd`;
* the mixing randomness folds in the replica id (`BootstrapMethod.mixing_seed`),
  so replicas draw different λ and π — π permutes within a replica's batch, a
  documented deviation from one-device training;
* the EMA of the target runs in cross-replica context, through
  `strategy.extended.update` on each mirrored target variable
  (`ema.ema_assign`), never as an `assign` in replica context;
* `--sync_batchnorm` builds every BatchNormalization with
  `synchronized=True` (statistics over the global batch, TF backend only), so
  a mirrored step equals a one-device step with the same global batch.

Example:
```python
strategy = myol_keras.distribute.make_strategy("mirrored")
with strategy.scope(), myol_keras.distribute.batchnorm_options(synchronized=True):
    model = myol_keras.BYOL(myol_keras.ResNet(18, width=16))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
```
"""

import contextlib
import json
import os

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")

_BN_OPTIONS = {"synchronized": False}


@contextlib.contextmanager
def batchnorm_options(synchronized=False):
    """Within the block, `batch_normalization()` builds BN with `synchronized`."""
    saved = dict(_BN_OPTIONS)
    _BN_OPTIONS["synchronized"] = bool(synchronized)
    try:
        yield
    finally:
        _BN_OPTIONS.clear()
        _BN_OPTIONS.update(saved)


def batch_normalization(**kwargs):
    """The library's BatchNormalization, synchronised inside `batchnorm_options(True)`.

    `batchnorm.BatchNormalization` (Keras' layer on TF's fused kernel,
    torch's running variance); a synchronised layer takes Keras' own path.
    """
    from myol_keras.batchnorm import BatchNormalization

    if _BN_OPTIONS["synchronized"]:
        kwargs.setdefault("synchronized", True)
    return BatchNormalization(**kwargs)


def validate_strategy(name, environ=None):
    """Raise `ValueError` (one line, actionable) for an unusable `--strategy`."""
    environ = os.environ if environ is None else environ
    if name not in STRATEGIES:
        raise ValueError(f"unknown --strategy={name!r}; choose one of: {', '.join(STRATEGIES)}")
    if name == "multi_worker":
        raw = environ.get("TF_CONFIG")
        if not raw:
            raise ValueError(
                "--strategy=multi_worker needs the TF_CONFIG environment variable "
                '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}); '
                "use --strategy=mirrored on one machine"
            )
        try:
            config = json.loads(raw)
            cluster, task = config["cluster"], config["task"]
            task["type"], int(task["index"])  # noqa: B018 (validates)
            if not isinstance(cluster, dict) or not cluster:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                f"TF_CONFIG is not valid JSON with 'cluster' and 'task' {{'type', 'index'}}: {raw[:200]!r}"
            ) from None


def make_strategy(name):
    """The `tf.distribute.Strategy` for `--strategy=name`.

    auto: MirroredStrategy over all GPUs when there are several, else the
    default strategy; one_device: the first GPU or the CPU; mirrored: every
    local GPU (or the logical CPU devices if there is no GPU); multi_worker:
    MultiWorkerMirroredStrategy from `TF_CONFIG`.
    """
    import tensorflow as tf

    validate_strategy(name)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief():
    """Whether this process writes checkpoints and exports.

    Without `TF_CONFIG`: yes. With it: the `chief` task if the cluster has
    one, else worker 0 (MultiWorkerMirroredStrategy's convention).
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    config = json.loads(raw)
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0
