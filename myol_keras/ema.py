"""The target network's exponential moving average (docs/METHODS.md §1.3, docs/DECISIONS.md §4.3).

`target <- tau * target + (1 - tau) * online` over parameter pairs (BatchNorm
moving statistics are not averaged: the target's come from its own
training-mode passes, as in the reference). tau is a pure function of the
optimizer step (`ema_tau`), so a resumed run continues the schedule exactly.

Both places that run the EMA import this module and nothing of each other:
the `EMATargetUpdate` callback (after every batch) and a method's in-step
path (`BootstrapMethod.set_in_step_ema`, inside `train_step`).

Example:
```python
from myol_keras import ema

ema.ema_update(model.ema_pairs, tau=0.996)
```
"""

import math

import tensorflow as tf

from myol_keras.schedule_choices import EMA_SCHEDULES as TAU_SCHEDULES


def ema_tau(step, base_tau=0.996, schedule="constant", total_steps=None):
    """EMA momentum for the update after global step `step`.

    `constant` is the MYOL reference (tau = 0.996 throughout); `cosine` is the
    BYOL paper's `1 - (1 - base) (cos(pi k / K) + 1) / 2`, rising to 1 at K.

    Args:
        step: the optimizer step just taken (0-based; a float or a scalar tensor).
        base_tau: tau at step 0.
        schedule: `"constant"` or `"cosine"`.
        total_steps: K, needed for `"cosine"`.

    Example:
    >>> ema_tau(500, 0.996, "cosine", total_steps=1000)
    0.998
    """
    if schedule not in TAU_SCHEDULES:
        raise ValueError(f"Expected `schedule` to be one of {TAU_SCHEDULES}. Received: schedule={schedule!r}")
    if not 0.0 <= base_tau <= 1.0:
        raise ValueError(f"Expected 0 <= `base_tau` <= 1. Received: base_tau={base_tau}")
    if schedule == "constant":
        return base_tau
    if not total_steps:
        raise ValueError("`schedule='cosine'` needs `total_steps`. Received: total_steps=None")
    if tf.is_tensor(step):
        progress = tf.minimum(tf.cast(step, tf.float32) / float(total_steps), 1.0)
        return 1.0 - (1.0 - base_tau) * (tf.cos(math.pi * progress) + 1.0) / 2.0
    progress = min(float(step) / float(total_steps), 1.0)
    return 1.0 - (1.0 - base_tau) * (math.cos(math.pi * progress) + 1.0) / 2.0


def ema_assign(target, online, tau):
    """`target <- tau * target + (1 - tau) * online`, correct under a strategy.

    In cross-replica context (a callback, under MirroredStrategy) each mirrored
    copy of `target` is updated from the copy of `online` on the same device
    with `strategy.extended.update`; in a replica context of several replicas
    (the in-step EMA, called like Keras' optimizer through `maybe_merge_call`)
    the same call updates this replica's copy from its own `online` copy;
    without a strategy it is a plain `assign`.
    """

    def update(t, o):
        tau_cast = tf.cast(tau, t.dtype)
        return t.assign(tau_cast * t + (1.0 - tau_cast) * tf.cast(o, t.dtype))

    replica = tf.distribute.get_replica_context()
    several = replica is not None and replica.num_replicas_in_sync > 1
    if tf.distribute.has_strategy() and (tf.distribute.in_cross_replica_context() or several):
        strategy = tf.distribute.get_strategy()
        t = getattr(target, "value", target)  # keras.Variable -> tf.Variable
        o = getattr(online, "value", online)
        return strategy.extended.update(t, update, args=(o,), group=False)
    return update(target, online)


def ema_update(pairs, tau):
    """`ema_assign` over `(target, online)` pairs: a stateless function of its arguments.

    Args:
        pairs: `(target, online)` variable pairs, e.g. `model.ema_pairs`.
        tau: EMA momentum (a float or a scalar tensor).
    """
    for target, online in pairs:
        ema_assign(target, online, tau)


def ema_after_step(model, base_tau, schedule="constant", total_steps=None):
    """The EMA that follows the optimizer step just taken (`iterations - 1`).

    tau comes from the schedule at that step. The model's own rule is used
    when it has one (`update_targets(tau, step)`: TriBYOL alternates two
    targets), else `ema_update` over `model.ema_pairs`.

    Args:
        model: a model with `optimizer` and `ema_pairs` (a myol_keras method).
        base_tau, schedule, total_steps: as in `ema_tau`.
    """
    step = tf.maximum(tf.cast(model.optimizer.iterations, tf.int64) - 1, 0)
    tau = ema_tau(step, base_tau, schedule, total_steps)
    method_update = getattr(model, "update_targets", None)
    if method_update is not None:
        method_update(tau, step)
    else:
        ema_update(model.ema_pairs, tau)
