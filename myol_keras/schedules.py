"""Learning-rate schedules: pure functions of the global step (the EMA momentum's is `ema.ema_tau`).

Both are computed from `optimizer.iterations`, which `BackupAndRestore`
restores, so a resumed run continues the schedule exactly (docs/DECISIONS.md §4.3, §4.8).

Learning rate, with `k` the global step, `T` steps per epoch and `W = 10 T`:

| `warmup_mode` | lr(k) for k < W | after the warm-up |
|---|---|---|
| `linear` (default) | lr0 * (k + 1) / W | lr0, constant or cosine to 0 |
| `myol_faithful` | lr0 * (k + 1 + T) / W | 1.1 * lr0 (the MYOL reference's plateau) |
"""

import math

import keras
import tensorflow as tf

from myol_keras.schedule_choices import LR_SCHEDULES as LR_DECAYS
from myol_keras.schedule_choices import WARMUP_MODES


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Expected `{name}` to be one of {choices}. Received: {name}={value!r}"
        )


def warmup_learning_rate(
    step,
    base_lr,
    steps_per_epoch,
    warmup_epochs=10,
    warmup_mode="linear",
    decay="constant",
    total_steps=None,
):
    """The learning rate at global step `step` (a float or a scalar tensor).

    Args:
        step: global step `k` (0 for the first update).
        base_lr: the set learning rate `lr0`.
        steps_per_epoch: `T`.
        warmup_epochs: warm-up length in epochs (`W = warmup_epochs * T`).
        warmup_mode: `"linear"` or `"myol_faithful"` (see the module table).
        decay: `"constant"` or `"cosine"` (to 0 at `total_steps`) after warm-up.
        total_steps: needed for `decay="cosine"`.

    Example:
    >>> warmup_learning_rate(99, 0.05, 10, warmup_mode="myol_faithful")
    0.055
    """
    _check_choice("warmup_mode", warmup_mode, WARMUP_MODES)
    _check_choice("decay", decay, LR_DECAYS)
    if steps_per_epoch < 1:
        raise ValueError(
            f"Expected `steps_per_epoch` >= 1. Received: steps_per_epoch={steps_per_epoch}"
        )
    if decay == "cosine" and not total_steps:
        raise ValueError("`decay='cosine'` needs `total_steps`. Received: total_steps=None")
    tensor = tf.is_tensor(step)
    k = tf.cast(step, tf.float32) if tensor else float(step)
    warmup_steps = float(warmup_epochs * steps_per_epoch)
    offset = float(steps_per_epoch) if warmup_mode == "myol_faithful" else 0.0
    plateau = 1.1 * base_lr if warmup_mode == "myol_faithful" else base_lr

    def after_warmup(k):
        if decay == "constant":
            return plateau
        span = max(float(total_steps) - warmup_steps, 1.0)
        progress = (k - warmup_steps) / span
        if tensor:
            progress = tf.clip_by_value(progress, 0.0, 1.0)
            return plateau * 0.5 * (1.0 + tf.cos(math.pi * progress))
        progress = min(max(progress, 0.0), 1.0)
        return plateau * 0.5 * (1.0 + math.cos(math.pi * progress))

    def during_warmup(k):
        return base_lr * (k + 1.0 + offset) / warmup_steps

    if warmup_steps <= 0:
        return after_warmup(k)
    if tensor:
        return tf.where(k < warmup_steps, during_warmup(k), after_warmup(k))
    return during_warmup(k) if k < warmup_steps else after_warmup(k)


@keras.saving.register_keras_serializable(package="myol_keras")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up then constant or cosine learning rate (`warmup_learning_rate`).

    Args:
        base_lr: the set learning rate (absolute, not scaled by batch size).
        steps_per_epoch: optimizer steps per epoch.
        warmup_epochs: warm-up epochs (10 in the MYOL reference).
        warmup_mode: `"linear"` (to `base_lr`) or `"myol_faithful"` (to 1.1x).
        decay: `"constant"` or `"cosine"` after the warm-up.
        total_steps: total optimizer steps, for the cosine decay.

    Example:
    >>> schedule = WarmupSchedule(0.05, steps_per_epoch=196)
    >>> optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    """

    def __init__(
        self,
        base_lr,
        steps_per_epoch,
        warmup_epochs=10,
        warmup_mode="linear",
        decay="constant",
        total_steps=None,
    ):
        # Validate once, eagerly.
        warmup_learning_rate(
            0, base_lr, steps_per_epoch, warmup_epochs, warmup_mode, decay, total_steps
        )
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_epochs = float(warmup_epochs)  # fractional warm-ups (Q1-batch: 2.5 epochs at B=32)
        self.warmup_mode = warmup_mode
        self.decay = decay
        self.total_steps = None if total_steps is None else int(total_steps)

    def __call__(self, step):
        return warmup_learning_rate(
            tf.convert_to_tensor(step),
            self.base_lr,
            self.steps_per_epoch,
            self.warmup_epochs,
            self.warmup_mode,
            self.decay,
            self.total_steps,
        )

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_epochs": self.warmup_epochs,
            "warmup_mode": self.warmup_mode,
            "decay": self.decay,
            "total_steps": self.total_steps,
        }
