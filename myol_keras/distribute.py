"""tf.distribute for pre-training: strategies, synchronised BatchNorm, replica-aware updates.

`--strategy` (docs/DECISIONS.md §4.9) picks a `tf.distribute.Strategy`; the model is built
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
  `synchronized=True` (statistics over the global batch, TF backend only;
  `batchnorm.options`), so a mirrored step equals a one-device step with the
  same global batch;
* Keras 3's own `fit` fails under MultiWorkerMirroredStrategy
  (keras-team/keras#20585): `MultiWorkerFitWorkaround`, which the method base
  class inherits, is the removable workaround.

Example:
```python
strategy = myol_keras.distribute.make_strategy("mirrored")
with strategy.scope(), myol_keras.batchnorm.options(synchronized=True):
    model = myol_keras.BYOL(myol_keras.ResNet(18, width=16))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
```
"""

import os
import sys

from myol_keras import cluster
from myol_keras.native_logs import quiet_native_stderr

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")

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
        cluster.parse_tf_config(raw)  # the whole TF_CONFIG, one line per problem


#: seconds a collective may wait for a peer before it fails (a dead worker ends the survivors' run).
COLLECTIVE_TIMEOUT_SECONDS = 30


def make_strategy(name, collective_timeout=COLLECTIVE_TIMEOUT_SECONDS, cluster_timeout=cluster.DEFAULT_CLUSTER_TIMEOUT):
    """The `tf.distribute.Strategy` for `--strategy=name`.

    auto: MirroredStrategy over all GPUs when there are several, else the
    default strategy; one_device: the first GPU or the CPU; mirrored: every
    local GPU (or the logical CPU devices if there is no GPU); multi_worker:
    MultiWorkerMirroredStrategy from `TF_CONFIG`, created before anything else
    touches TensorFlow's runtime (it must be: "Collective ops must be
    configured at program startup"), with collectives that give up after
    `collective_timeout` seconds, so the survivors of a dead worker stop
    instead of waiting forever. Before it, the workers meet (`cluster.rendezvous`,
    at most `cluster_timeout` seconds) and SIGINT/SIGTERM get their watchdog
    (`cluster.install_stop_handlers`). Other strategies ignore a `TF_CONFIG`,
    with a one-line notice.
    """
    import tensorflow as tf

    validate_strategy(name)
    if name == "multi_worker":
        task = cluster.task_config()
        cluster.check_port(task)
        cluster.install_stop_handlers(task)
        cluster.rendezvous(task, cluster_timeout)
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
        try:
            with cluster.runtime_start(deadline=cluster_timeout):
                return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        except RuntimeError as e:
            if "program startup" in str(e):
                raise RuntimeError(
                    "--strategy=multi_worker must be created before TensorFlow runs any op in this process "
                    "(create it first: myol_keras.pretrain does); " + " ".join(str(e).split())
                ) from None
            raise
    notice = cluster.stray_tf_config_notice(name)
    if notice:
        print(notice, file=sys.stderr, flush=True)
    with quiet_native_stderr():  # listing devices logs CUDA probing on machines without a GPU
        gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(cpus)


def is_multi_worker(strategy):
    """Whether `strategy` spans several worker processes (MultiWorkerMirroredStrategy in multi-worker mode)."""
    import tensorflow as tf

    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def is_chief(strategy=None):
    """Whether this process writes checkpoints and exports.

    Yes unless it is a worker of a multi-worker run (`strategy` spans several
    processes, or without `strategy`, `TF_CONFIG` is set) other than the chief:
    the `chief` task if the cluster has one, else worker 0
    (MultiWorkerMirroredStrategy's convention).
    """
    if strategy is not None and not is_multi_worker(strategy):
        return True
    task = cluster.task_config()
    return task is None or task.is_chief


class MultiWorkerFitWorkaround:
    """WORKAROUND for Keras 3's `fit` under MultiWorkerMirroredStrategy: https://github.com/keras-team/keras/issues/20585.

    Still reproduced with Keras 3.15.1 / TensorFlow 2.21 (the test named below). Keras 3.15's TensorFlow trainer cannot `fit` with several workers:
    `_maybe_symbolic_build` reduces a PerReplica *batch* with `strategy.reduce`
    (ValueError), and the train function's `reduce_per_replica(..., "auto")`
    reduces the scalar logs with `axis=0` ("Invalid reduction dimension 0").
    The two overrides below act only in multi-worker mode (`is_multi_worker`);
    everywhere else they hand over to Keras. `BootstrapMethod` inherits this
    mixin before `keras.Model` (it needs the model built in `__init__` and
    the optimizer built in `compile`, as the method base class does).

    Still needed? `tests/test_distribute.py::test_keras_fit_on_two_workers_still_fails_upstream`
    runs Keras' own `fit` of a plain model on two worker processes and
    expects it to fail; `tests/test_multi_worker.py` trains through this
    workaround. To delete it once that first test fails (Keras fixed): delete
    this class, drop it from `BootstrapMethod`'s bases, and delete that test.

    Example:
    ```python
    class Method(MultiWorkerFitWorkaround, keras.Model):
        ...
    ```
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if is_multi_worker(self.distribute_strategy) and self.built and self.optimizer.built:
            return  # built in __init__ and compile: nothing to trace, so no batch to pull
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def make_train_function(self, force=False):
        import tensorflow as tf

        strategy = self.distribute_strategy
        if not is_multi_worker(strategy):
            return super().make_train_function(force)
        if self.train_function is not None and not force:
            return self.train_function

        @tf.function(reduce_retracing=True, autograph=False)  # as Keras' own (do_not_convert)
        def train_function(iterator):
            logs = strategy.run(self.train_step, args=(iterator.get_next(),))
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), logs)

        self.train_function = train_function
        return train_function
