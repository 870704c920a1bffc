"""`EvaluationTransform`: the evaluation transform (`myol_keras.preprocessing`) as a layer."""

import keras

from myol_keras import preprocessing


@keras.saving.register_keras_serializable(package="myol_keras")
class EvaluationTransform(keras.layers.Layer):
    """The evaluation transform as a layer (`myol_keras.preprocessing.evaluation_transform`).

    uint8 images to [0, 1], the largest centred square, a bilinear resize to
    `(image_size, image_size)` with antialiasing (PIL's `BILINEAR` when
    shrinking; the identity at the same size), then `(x - mean) / std`.

    Args:
        image_size: int >= 1, output height and width.
        mean: 3 floats, per-channel mean.
        std: 3 floats > 0, per-channel standard deviation.
        **kwargs: standard layer arguments (`name`, ...).

    Example:

    >>> layer = EvaluationTransform(64, (0.5,) * 3, (0.25,) * 3)
    >>> layer(tf.zeros([2, 96, 120, 3], tf.uint8)).shape
    TensorShape([2, 64, 64, 3])
    """

    def __init__(self, image_size, mean, std, **kwargs):
        image_size = preprocessing.check_image_size(image_size)
        mean, std = preprocessing.check_mean_std(mean, std)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.image_size = image_size
        self.mean = mean
        self.std = std

    def call(self, images):
        return preprocessing.evaluation_transform(images, self.image_size, self.mean, self.std)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-3], self.image_size, self.image_size, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"image_size": self.image_size, "mean": self.mean, "std": self.std})
        return config
