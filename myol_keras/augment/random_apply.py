"""`RandomApply`: a layer applied to each sample with probability `rate`."""

import keras
import tensorflow as tf

from myol_keras.augment.common import (
    RandomAugmentation,
    as_batch,
    base_seed,
    is_number,
    split_seed,
)
from myol_keras.augment.view import stateless_layer_call


@keras.saving.register_keras_serializable(package="myol_keras")
class RandomApply(RandomAugmentation):
    """Applies a layer to each sample with probability `rate`.

    A per-sample Bernoulli mask selects the samples; the wrapped layer runs on
    those only (a batch of dynamic size, possibly empty) and they are
    scattered back into the batch. The wrapped layer must keep the shape of
    each sample. In inference mode (`training=False`) the input is returned
    unchanged.

    Args:
        layer: a `keras.layers.Layer` (any Keras-compatible augmentation).
        rate: float in [0, 1], probability of applying `layer` to a sample.
        seed: optional int, seed of the layer's `SeedGenerator`.
        **kwargs: standard layer arguments (`name`, ...).

    Example:

    >>> jitter = RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), rate=0.8)
    >>> jitter(tf.random.uniform([8, 32, 32, 3])).shape
    TensorShape([8, 32, 32, 3])
    """

    def __init__(self, layer, rate=0.8, seed=None, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                "Expected `layer` to be a `keras.layers.Layer` instance. "
                f"Received: layer={layer!r}"
            )
        if not is_number(rate) or not 0.0 <= rate <= 1.0:
            raise ValueError(
                "Expected `rate` to be a float in [0, 1]. "
                f"Received: rate={rate}"
            )
        super().__init__(seed=seed, **kwargs)
        self.layer = layer
        self.rate = float(rate)

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def get_random_transformation(self, images, training=True, seed=None):
        """Returns the per-sample bool mask `(N,)` (`N = 1` if unbatched)."""
        images, _ = as_batch(images)
        batch = tf.shape(images)[0]
        if not training:
            return tf.zeros([batch], tf.bool)
        uniform = tf.random.stateless_uniform(
            [batch], base_seed(self.generator, seed)
        )
        return uniform < self.rate

    def call(self, images, training=True):
        images = tf.convert_to_tensor(images)
        if not training or self.rate == 0.0:
            return images
        if self.rate == 1.0:
            return self.layer(images)
        mask = self.get_random_transformation(images)
        return self.transform_images(images, mask)

    def transform_images(self, images, transformation, training=True):
        """Runs the wrapped layer where the mask `transformation` holds."""
        images = tf.convert_to_tensor(images)
        if not training:
            return images
        return _apply_where(transformation, self.layer, images)

    def seeded_call(self, images, seed):
        """`call` in training mode with the mask and the wrapped layer's randomness from `seed`."""
        images = tf.convert_to_tensor(images)
        mask_seed, inner_seed = split_seed(tf.cast(seed, tf.int64), 2)
        if self.rate == 0.0:
            return images
        if self.rate == 1.0:
            return stateless_layer_call(self.layer, images, inner_seed)
        mask = self.get_random_transformation(images, seed=mask_seed)
        return _apply_where(
            mask, lambda x: stateless_layer_call(self.layer, x, inner_seed), images
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layer": keras.saving.serialize_keras_object(self.layer),
                "rate": self.rate,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(
            config["layer"]
        )
        return cls(**config)


def _apply_where(mask, function, images):
    """`function` on the samples where `mask` holds, the others unchanged.

    One image (rank 3) is all or nothing. A batch runs `function` on the
    selected samples only (a batch of dynamic size, possibly empty) and
    scatters them back.
    """
    if images.shape.rank == 3:
        outputs = function(images)
        images = tf.cast(images, outputs.dtype)
        return tf.where(tf.reshape(mask, []), outputs, images)
    selected = tf.where(mask)
    outputs = function(tf.gather_nd(images, selected))
    images = tf.cast(images, outputs.dtype)
    return tf.tensor_scatter_nd_update(images, selected, outputs)
