"""Tests for `myol_keras.augment.evaluation_transform.EvaluationTransform`.

The transform itself is tested in `tests/test_preprocessing.py`; here the layer's shapes and config.
"""

import numpy as np
import tensorflow as tf

from augment_cases import CIFAR_MEAN, CIFAR_STD, assert_config_round_trip, uint8_images
from myol_keras import augment, preprocessing


def test_layer_is_the_evaluation_transform():
    images = uint8_images(2, size=40)
    layer = augment.EvaluationTransform(24, CIFAR_MEAN, CIFAR_STD)
    np.testing.assert_array_equal(
        layer(images), preprocessing.evaluation_transform(images, 24, CIFAR_MEAN, CIFAR_STD)
    )
    assert layer.compute_output_shape((None, 40, 50, 3)) == (None, 24, 24, 3)


def test_config_round_trip():
    layer = augment.EvaluationTransform(16, CIFAR_MEAN, CIFAR_STD)
    revived = assert_config_round_trip(layer, tf.zeros([2, 20, 20, 3], tf.uint8))
    assert revived.image_size == 16
