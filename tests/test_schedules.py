"""Learning-rate and tau schedules (docs/DECISIONS.md §4.8, docs/METHODS.md §1.3, §1.5)."""

import pytest
import tensorflow as tf

from myol_keras import schedules
from myol_keras.ema import ema_tau
from myol_keras.schedules import warmup_learning_rate

T = 196  # CIFAR-10 at B=256
W = 10 * T


@pytest.mark.parametrize(
    "step, mode, expected",
    [
        (0, "myol_faithful", 0.05 * (1 + T) / W),  # 0.005026 (docs/METHODS.md §1.5)
        (W - 1, "myol_faithful", 0.055),  # end of epoch 10: 1.1 * lr0
        (W, "myol_faithful", 0.055),
        (50 * W, "myol_faithful", 0.055),  # never decays
        (0, "linear", 0.05 / W),
        (W // 2 - 1, "linear", 0.025),
        (W - 1, "linear", 0.05),
        (10 * W, "linear", 0.05),
    ],
)
def test_warmup_table(step, mode, expected):
    assert warmup_learning_rate(step, 0.05, T, 10, mode) == pytest.approx(expected, rel=1e-6)
    schedule = schedules.WarmupSchedule(0.05, T, 10, mode)
    assert float(schedule(tf.constant(step))) == pytest.approx(expected, rel=1e-5)


def test_faithful_first_value_is_0_005026():
    assert warmup_learning_rate(0, 0.05, T, warmup_mode="myol_faithful") == pytest.approx(0.005026, rel=1e-4)


def test_cosine_after_warmup():
    total = 100 * T
    lr = lambda k: warmup_learning_rate(k, 0.1, T, 10, "linear", "cosine", total)  # noqa: E731
    assert lr(W) == pytest.approx(0.1)
    assert lr(W + (total - W) // 2) == pytest.approx(0.05, rel=1e-3)
    assert lr(total) == pytest.approx(0.0, abs=1e-9)


def test_schedule_config_round_trip():
    schedule = schedules.WarmupSchedule(0.05, T, 10, "myol_faithful")
    clone = schedules.WarmupSchedule.from_config(schedule.get_config())
    assert float(clone(tf.constant(123))) == pytest.approx(float(schedule(tf.constant(123))))


def test_tau_end_points():
    assert ema_tau(0, 0.996, "cosine", 1000) == pytest.approx(0.996)
    assert ema_tau(500, 0.996, "cosine", 1000) == pytest.approx(0.998)
    assert ema_tau(1000, 0.996, "cosine", 1000) == pytest.approx(1.0)
    assert ema_tau(12345, 0.996, "constant") == 0.996
    assert float(ema_tau(tf.constant(500), 0.996, "cosine", 1000)) == pytest.approx(0.998, abs=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"warmup_mode": "bogus"}, "warmup_mode"),
        ({"decay": "step"}, "decay"),
        ({"decay": "cosine"}, "total_steps"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
    ],
)
def test_bad_schedule_arguments(kwargs, match):
    args = {"base_lr": 0.05, "steps_per_epoch": 10}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        schedules.WarmupSchedule(**args)
