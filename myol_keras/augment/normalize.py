"""`Normalize`: per-channel `(x - mean) / std` (torchvision `Normalize`)."""

import keras
import tensorflow as tf

from myol_keras.augment.common import is_number


@keras.saving.register_keras_serializable(package="myol_keras")
class Normalize(keras.layers.Layer):
    """Per-channel normalisation `(x - mean) / std` (torchvision `Normalize`).

    Args:
        mean: 3 floats, per-channel mean.
        std: 3 floats > 0, per-channel standard deviation.
        **kwargs: standard layer arguments (`name`, ...).

    Example:

    >>> norm = Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    >>> norm(tf.random.uniform([2, 32, 32, 3])).shape
    TensorShape([2, 32, 32, 3])
    """

    def __init__(self, mean, std, **kwargs):
        for name, value in (("mean", mean), ("std", std)):
            if (
                not isinstance(value, (tuple, list))
                or len(value) != 3
                or not all(is_number(v) for v in value)
            ):
                raise ValueError(
                    f"Expected `{name}` to be 3 numbers, one per channel. "
                    f"Received: {name}={value}"
                )
        if not all(v > 0 for v in std):
            raise ValueError(
                f"Expected every value of `std` to be > 0. Received: std={std}"
            )
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def call(self, images):
        images = tf.cast(images, self.compute_dtype)
        mean = tf.constant(self.mean, dtype=images.dtype)
        std = tf.constant(self.std, dtype=images.dtype)
        return (images - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std})
        return config
