"""`ToFloat`: integer images to float32 in [0, 1] (torchvision `ToTensor`)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="myol_keras")
class ToFloat(keras.layers.Layer):
    """Converts integer images to float32 in [0, 1] (torchvision `ToTensor`).

    Integer images are divided by the largest value of their dtype (255 for
    uint8); float images are passed through unchanged (as float32).

    Args:
        **kwargs: standard layer arguments (`name`, ...).

    Example:

    >>> images = tf.constant([[[[0, 51, 255]]]], dtype=tf.uint8)
    >>> ToFloat()(images)[0, 0, 0].numpy()
    array([0. , 0.2, 1. ], dtype=float32)
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, images):
        images = tf.convert_to_tensor(images)
        if images.dtype.is_floating:
            return tf.cast(images, self.compute_dtype)
        # Divide (not multiply by 1/255) to match torchvision bit for bit.
        return tf.cast(images, self.compute_dtype) / float(images.dtype.max)

    def compute_output_shape(self, input_shape):
        return input_shape

