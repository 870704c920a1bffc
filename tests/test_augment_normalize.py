"""Tests for `myol_keras.augment.normalize.Normalize` (torchvision `Normalize`)."""

import numpy as np
import pytest
import tensorflow as tf

from augment_cases import CIFAR_MEAN, CIFAR_STD, assert_config_round_trip
from myol_keras import augment


def test_normalize_per_channel():
    out = augment.Normalize(CIFAR_MEAN, CIFAR_STD)(tf.ones([1, 1, 1, 3]))
    expected = (1.0 - np.array(CIFAR_MEAN)) / np.array(CIFAR_STD)
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-6)


def test_config_round_trip():
    layer = augment.Normalize(CIFAR_MEAN, CIFAR_STD)
    revived = assert_config_round_trip(layer, tf.random.uniform([2, 4, 4, 3]))
    assert revived.mean == CIFAR_MEAN and revived.std == CIFAR_STD


@pytest.mark.parametrize("kwargs,message", [
    ({"mean": (0.5, 0.5), "std": (1, 1, 1)},
     r"Expected `mean` to be 3 numbers.*Received: mean=\(0.5, 0.5\)"),
    ({"mean": (0.5,) * 3, "std": (1, 0, 1)},
     r"Expected every value of `std` to be > 0. Received: std=\(1, 0, 1\)"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        augment.Normalize(**kwargs)
