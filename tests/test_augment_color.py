"""Tests for `myol_keras.augment.color`: torchvision's colour functions (docs/METHODS.md §1.6)."""

import numpy as np
import pytest
import tensorflow as tf

from augment_cases import PURE_FUNCTIONS, TORCHVISION_CASES, pixel_image
from myol_keras import augment
from myol_keras.augment import color


@pytest.mark.parametrize("op,factor,pixels,expected", TORCHVISION_CASES)
def test_pure_function_matches_torchvision(op, factor, pixels, expected):
    out = PURE_FUNCTIONS[op](pixel_image(*pixels), [factor])
    np.testing.assert_allclose(out[0, 0, 0], expected, atol=1e-5)


@pytest.mark.parametrize("op,factor,pixels,expected", TORCHVISION_CASES)
def test_pure_function_unbatched_scalar_factor(op, factor, pixels, expected):
    out = PURE_FUNCTIONS[op](pixel_image(*pixels)[0], factor)
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-5)


@pytest.mark.parametrize("delta", [-0.5, -0.1, -0.03, 0.0, 0.07, 0.1, 0.45])
def test_adjust_hue_matches_hsv_round_trip(delta):
    images = tf.random.uniform([4, 8, 8, 3], seed=15)
    # Grey pixels and ties between channels too.
    images = tf.concat(
        [images, tf.constant([[[[0.5, 0.5, 0.5], [0.7, 0.7, 0.2]] * 4] * 8])],
        axis=0,
    )
    hsv = tf.image.rgb_to_hsv(images)
    hue = tf.math.floormod(hsv[..., :1] + delta, 1.0)
    expected = tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1))
    out = augment.adjust_hue(images, tf.fill([5], delta))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_gray_uses_torchvision_luma_weights():
    images = tf.constant([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]])
    np.testing.assert_allclose(
        color.gray(images)[0, 0, :, 0], color.GRAY_WEIGHTS, rtol=1e-6
    )
