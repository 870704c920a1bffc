"""Tests for `myol_keras.augment.to_float.ToFloat` (torchvision `ToTensor`)."""

import numpy as np
import tensorflow as tf

from augment_cases import assert_config_round_trip
from myol_keras import augment


def test_to_float_scales_uint8_and_passes_floats():
    images = tf.constant([[[[0, 51, 255]]]], dtype=tf.uint8)
    out = augment.ToFloat()(images)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 0.2, 1.0], atol=1e-7)
    floats = tf.random.uniform([2, 3, 3, 3], seed=11)
    np.testing.assert_array_equal(augment.ToFloat()(floats), floats)


def test_to_float_divides_by_the_dtype_maximum():
    images = tf.constant([[[[0, 32767, 65535]]]], dtype=tf.uint16)
    np.testing.assert_array_equal(
        augment.ToFloat()(images)[0, 0, 0], np.float32([0, 32767, 65535]) / np.float32(65535)
    )


def test_config_round_trip():
    assert_config_round_trip(augment.ToFloat(), tf.zeros([2, 4, 4, 3], tf.uint8))
