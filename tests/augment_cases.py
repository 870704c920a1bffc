"""Shared cases and checks for the `tests/test_augment*.py` files (one per `myol_keras.augment` module)."""

import keras
import numpy as np
import tensorflow as tf

from myol_keras import augment

PIXEL_A = (0.2, 0.5, 0.8)
WHITE = (1.0, 1.0, 1.0)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

# Hand-made torchvision checks from docs/METHODS.md §1.6: (op, factor, input, expected).
TORCHVISION_CASES = [
    ("brightness", 1.4, [PIXEL_A], (0.28, 0.70, 1.0)),
    ("saturation", 0.6, [PIXEL_A], (0.297792, 0.477792, 0.657792)),
    ("contrast", 0.6, [PIXEL_A, WHITE], (0.408876, 0.588876, 0.768876)),
    ("hue", 0.1, [PIXEL_A], (0.26, 0.2, 0.8)),
    ("hue", -0.1, [PIXEL_A], (0.2, 0.8, 0.74)),
]

PURE_FUNCTIONS = {
    "brightness": augment.adjust_brightness,
    "contrast": augment.adjust_contrast,
    "saturation": augment.adjust_saturation,
    "hue": augment.adjust_hue,
}


def pixel_image(*pixels):
    """A batch of one image, one row of the given pixels: (1, 1, P, 3)."""
    return tf.constant([[list(pixels)]], dtype=tf.float32)


def uint8_images(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def assert_config_round_trip(layer, images):
    """`from_config(get_config())` and a Keras serialize/deserialize give the same layer and output shape."""
    config = layer.get_config()
    restored = type(layer).from_config(config)
    assert restored.get_config() == config
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(revived) is type(layer)
    assert revived.get_config() == config
    assert revived(images).shape == layer(images).shape
    return revived
