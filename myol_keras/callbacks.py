"""Training callbacks: the EMA target update and schedule/history logging."""

import csv
import os
import time

import keras
import tensorflow as tf

from myol_keras import ema
from myol_keras import rundir


@keras.saving.register_keras_serializable(package="myol_keras")
class EMATargetUpdate(keras.callbacks.Callback):
    """Moves the target network towards the online one after every step.

    tau is a pure function of `optimizer.iterations` (restored by
    `BackupAndRestore`, so a resumed run continues the schedule): `constant`
    (the MYOL reference, 0.996) or `cosine` (BYOL paper,
    `1 - (1 - tau) (cos(pi k / K) + 1) / 2`, reaching 1 at `total_steps`).
    Only parameters are averaged (`model.ema_pairs`); the target's BatchNorm
    moving statistics come from its own training-mode forward passes. The
    current tau is logged every epoch as `ema_tau`.

    Keras calls batch callbacks once per *execution*: with
    `compile(steps_per_execution=k)`, k > 1, an update here would run once
    every k steps, a different algorithm. Pass `in_step=True` there: the
    callback then hands the same update to the model's `train_step`
    (`set_in_step_ema`) and only logs tau. Without it such a model is refused.

    Args:
        tau: base EMA momentum.
        schedule: `"constant"` or `"cosine"`.
        total_steps: total optimizer steps (needed for `cosine`).
        in_step: run the update inside `train_step` (any `steps_per_execution`).

    Example:
    ```python
    model.fit(ds, epochs=100, callbacks=[myol_keras.EMATargetUpdate(0.996)])
    ```
    """

    def __init__(self, tau=0.996, schedule="constant", total_steps=None, in_step=False):
        super().__init__()
        ema.ema_tau(0, tau, schedule, total_steps)  # validates
        self.tau = float(tau)
        self.schedule = schedule
        self.total_steps = total_steps
        self.in_step = bool(in_step)
        self._update_fn = None

    def current_tau(self):
        """tau for the update that follows the last completed step."""
        step = max(int(self.model.optimizer.iterations.numpy()) - 1, 0)
        return ema.ema_tau(step, self.tau, self.schedule, self.total_steps)

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "ema_pairs"):
            raise ValueError(
                "EMATargetUpdate needs a model with `ema_pairs` (a myol_keras "
                f"method). Received: {type(self.model).__name__}"
            )
        if self.in_step:
            if not hasattr(self.model, "set_in_step_ema"):
                raise ValueError(
                    "EMATargetUpdate(in_step=True) needs a myol_keras method model "
                    f"(with `set_in_step_ema`). Received: {type(self.model).__name__}"
                )
            # Before the first call of the train function, which is when it is traced.
            self.model.set_in_step_ema(self.tau, self.schedule, self.total_steps)
            self.model.make_train_function()
            self._update_fn = None
            return
        executions = int(keras.ops.convert_to_numpy(getattr(self.model, "steps_per_execution", 1) or 1))
        if executions > 1:
            raise ValueError(
                f"The model runs {executions} steps per execution, but batch callbacks run once per "
                "execution, so this EMA would move the target once every "
                f"{executions} steps. Use EMATargetUpdate(..., in_step=True)."
            )
        if getattr(self.model, "in_step_ema", None) is not None:
            self.model.set_in_step_ema(None)  # the callback owns the update again
            self.model.make_train_function()
        model = self.model
        # Under tf.distribute the update runs in cross-replica context inside
        # the model's strategy scope, so `ema.ema_assign` moves every
        # mirrored copy with `strategy.extended.update`.
        strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()

        @tf.function
        def update():
            with strategy.scope():
                ema.ema_after_step(model, self.tau, self.schedule, self.total_steps)

        self._update_fn = update

    def on_train_batch_end(self, batch, logs=None):
        if self._update_fn is not None:
            self._update_fn()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["ema_tau"] = float(self.current_tau())

    def get_config(self):
        return {"tau": self.tau, "schedule": self.schedule, "total_steps": self.total_steps, "in_step": self.in_step}


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate of the last step to the epoch logs (`learning_rate`)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        lr = optimizer.learning_rate
        if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            step = max(int(optimizer.iterations.numpy()) - 1, 0)
            lr = optimizer._learning_rate(step)
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))


class EpochHistoryCSV(keras.callbacks.Callback):
    """CSV history with exactly one row per epoch, also across resumes.

    Unlike `keras.callbacks.CSVLogger(append=True)`, an epoch that is re-run
    after an interruption replaces its old row instead of duplicating it, and
    the file is rewritten atomically.

    Args:
        filename: path of the CSV file.
    """

    def __init__(self, filename):
        super().__init__()
        self.filename = filename

    def _read(self):
        if not os.path.exists(self.filename):
            return []
        with open(self.filename, newline="") as f:
            return list(csv.DictReader(f))

    def on_epoch_end(self, epoch, logs=None):
        rows = [r for r in self._read() if int(r["epoch"]) < epoch]
        row = {"epoch": epoch}
        row.update({k: float(keras.ops.convert_to_numpy(v)) for k, v in (logs or {}).items()})
        rows.append(row)
        rundir.atomic_write_csv(self.filename, rows)


class Throughput(keras.callbacks.Callback):
    """Logs training images/s of each epoch as `images_per_second`.

    Args:
        batch_size: images per step.
    """

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size
        self._start = None
        self._start_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._start_step = _global_step(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._start is not None:
            elapsed = time.perf_counter() - self._start
            # Optimizer steps, not batch callbacks: with steps_per_execution = k
            # Keras calls on_train_batch_end once per k steps.
            steps = _global_step(self.model) - self._start_step
            logs["images_per_second"] = steps * self.batch_size / max(elapsed, 1e-9)


def _global_step(model):
    return int(model.optimizer.iterations.numpy())  # convert_to_numpy warns under NumPy 2 (no copy=)


class InputWait(keras.callbacks.Callback):
    """Logs the share of each epoch's training time spent waiting for input, as `input_bound_percent`.

    In Keras 3 on TensorFlow the iterator's `get_next` runs inside the
    compiled train function, so timing on the host between batches cannot
    see it. `instrument(dataset)` appends one synchronous stage to the
    pipeline: when the train function asks for a batch, the stage reads
    `tf.timestamp()`, pulls the batch from the pipeline (blocking until its
    last stage, usually a prefetch buffer, has one ready), reads the clock
    again and adds the difference to a float64 variable. The callback resets
    the variable when an epoch begins and, when it ends, logs
    `100 * waited / epoch wall time` (capped at 100), so the progress line,
    `history.csv` and TensorBoard show it. Near 0: the step is the
    bottleneck; near 100: tf.data is (more parallel calls, caching,
    `--augment_on=device`).

    Every step of `steps_per_execution` is counted. Under a strategy with
    several local devices tf.distribute prefetches into each device from a
    background thread, which is then what waits: the share is that of the
    slower side, approximately. The stage costs two clock reads and one
    variable update per batch (`benchmarks/input_wait.py` measures it).

    Call `instrument` outside any `strategy.scope()` (the variables must be
    plain host variables), and put the callback before the loggers. Under
    `tf.config.experimental.enable_op_determinism()` TensorFlow refuses to
    read the clock: `instrument` then returns the dataset unchanged and the
    callback logs nothing.

    Example:
    ```python
    wait = myol_keras.callbacks.InputWait()
    model.fit(wait.instrument(ds), epochs=10, callbacks=[wait, EMATargetUpdate(0.996)])
    ```
    """

    def __init__(self):
        super().__init__()
        self._waited = None
        self._batches = None
        self._start = None
        self._checked = False
        self.enabled = True

    def instrument(self, dataset):
        """`dataset` with the timing stage appended (same elements, same order)."""
        if not isinstance(dataset, tf.data.Dataset):
            raise ValueError(f"InputWait.instrument needs a tf.data.Dataset. Received: {type(dataset).__name__}")
        if tf.distribute.has_strategy():
            raise ValueError("InputWait.instrument must be called outside strategy.scope(): its counters are "
                             "host variables that the input pipeline updates")
        try:
            tf.timestamp()
        except tf.errors.FailedPreconditionError:  # "Timestamp cannot be called when determinism is enabled"
            self.enabled = False
            return dataset
        if self._waited is None:
            with tf.init_scope():
                self._waited = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="input_wait_seconds")
                self._batches = tf.Variable(0, dtype=tf.int64, trainable=False, name="input_wait_batches")
        waited, batches = self._waited, self._batches

        @tf.autograph.experimental.do_not_convert
        def request_time(_):
            return tf.timestamp()

        @tf.autograph.experimental.do_not_convert
        def record(requested, element):
            with tf.control_dependencies(tf.nest.flatten(element)):
                seconds = tf.timestamp() - requested
            with tf.control_dependencies([waited.assign_add(seconds), batches.assign_add(1)]):
                return tf.nest.map_structure(tf.identity, element)

        # The zip calls its inputs in order, in the consumer's thread: the clock first, then the pipeline.
        clock = tf.data.Dataset.from_tensors(tf.constant(0, tf.int8)).repeat().map(request_time)
        options = tf.data.Options()
        # Else tf.data may add a prefetch after this stage, which would then time a background thread.
        options.experimental_optimization.inject_prefetch = False
        return tf.data.Dataset.zip((clock, dataset)).map(record).with_options(options)

    def on_epoch_begin(self, epoch, logs=None):
        if self._waited is not None:
            self._waited.assign(0.0)
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._checked or not self.enabled:
            return
        self._checked = True
        if self._batches is None or int(self._batches.numpy()) == 0:
            raise ValueError("InputWait saw no batch: pass the training dataset through its instrument() method "
                             "(model.fit(wait.instrument(ds), callbacks=[wait]))")

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self._start is None or self._waited is None or not self.enabled:
            return
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        logs["input_bound_percent"] = 100.0 * min(float(self._waited.numpy()) / elapsed, 1.0)


class FaultPoint(keras.callbacks.Callback):
    """SIGKILL at a point of `fit` named by `MYOL_KERAS_FAULT` (see `myol_keras.faults`).

    Put it last in the callback list:

    * `epoch_end:<n>`: after epoch `n` (1-based) has been checkpointed;
    * `step_end:<k>`: after global step `k` (1-based), mid-epoch.
    """

    def on_train_batch_end(self, batch, logs=None):
        from myol_keras import faults

        wanted = faults.requested()
        if wanted and wanted.startswith("step_end:"):
            faults.maybe_fail(f"step_end:{_global_step(self.model)}")

    def on_epoch_end(self, epoch, logs=None):
        from myol_keras import faults

        faults.maybe_fail(f"epoch_end:{epoch + 1}")


class InjectNaN(keras.callbacks.Callback):
    """`MYOL_KERAS_FAULT=nan_loss:<k>`: a diverging run, made deterministic.

    Before global step `k` (1-based) the first trained variable is overwritten
    with NaN, so step `k` reports a NaN loss. Put it first in the list.
    """

    def on_train_batch_begin(self, batch, logs=None):
        from myol_keras import faults

        wanted = faults.requested()
        if wanted and wanted == f"nan_loss:{_global_step(self.model) + 1}":
            model = self.model
            variables = model.optimized_variables if hasattr(model, "optimized_variables") else model.trainable_variables
            variable = variables[0]
            variable.assign(keras.ops.full(variable.shape, float("nan"), dtype=variable.dtype))
