"""`ColorJitter`: torchvision's colour jitter, per sample, in a random order (docs/METHODS.md §1.6)."""

import functools
import math

import keras
import tensorflow as tf

from myol_keras.augment.color import GRAY_WEIGHTS, clip01, shift_hue
from myol_keras.augment.common import (
    RandomAugmentation,
    as_batch,
    base_seed,
    is_number,
    restore_rank,
    split_seed,
)

# Order of the colour operations in `ColorJitter` transformations.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def _jitter(images, brightness, contrast, saturation, hue, order, dense_hue=False):
    """ColorJitter's arithmetic: the four ops of each sample in its `order`.

    `dense_hue` computes the hue shift for every sample and selects it where
    needed (static shapes, for XLA); otherwise only the samples that need it
    are gathered (cheaper without fusion).
    """
    ones = tf.ones_like(brightness)
    zeros = tf.zeros_like(brightness)
    # Work on three (N, H*W) colour planes: per-sample factors then
    # broadcast as (N, 1), much cheaper on CPU than (N, 1, 1, 1) against
    # (N, H, W, 3), and the grey image needs no channel slicing.
    shape = tf.shape(images)
    batch = shape[0]
    planes = tf.unstack(
        tf.reshape(tf.transpose(images, [0, 3, 1, 2]), [batch, 3, -1]),
        axis=1,
    )
    w_red, w_green, w_blue = GRAY_WEIGHTS
    for slot in range(4):
        op = order[:, slot]
        # Brightness, contrast and saturation are all torchvision blends
        # `clip(f x + (1 - f) t)` with target t = 0, the mean grey value
        # m, or the pixel's grey value g: one pass per slot covers all
        # three, `clip(f x + u g + v m)` with per-sample f, u, v. Samples
        # whose op in this slot is hue get f = 1, u = v = 0 (identity).
        is_contrast = op == CONTRAST
        is_saturation = op == SATURATION
        f = tf.where(
            op == BRIGHTNESS,
            brightness,
            tf.where(
                is_contrast,
                contrast,
                tf.where(is_saturation, saturation, ones),
            ),
        )
        u = tf.where(is_saturation, 1.0 - f, zeros)
        v = tf.where(is_contrast, 1.0 - f, zeros)
        red, green, blue = planes
        gray = w_red * red + w_green * green + w_blue * blue
        mean = tf.reduce_mean(gray, axis=1)
        offset = u[:, tf.newaxis] * gray + (v * mean)[:, tf.newaxis]
        planes = [
            clip01(f[:, tf.newaxis] * plane + offset) for plane in planes
        ]
        hue_mask = (op == HUE) & tf.not_equal(hue, 0.0)
        if dense_hue:
            # Static shapes for XLA: shift every sample, keep it where needed
            # (a data-dependent gather would recompile for every count).
            shifted = shift_hue(*planes, hue[:, tf.newaxis])
            planes = [
                tf.where(hue_mask[:, tf.newaxis], new_plane, plane)
                for plane, new_plane in zip(planes, shifted)
            ]
            continue
        # Hue (the expensive op) only on the samples that need it.
        needs_hue = tf.where(hue_mask)
        shifted = shift_hue(
            *[tf.gather_nd(plane, needs_hue) for plane in planes],
            tf.gather_nd(hue, needs_hue)[:, tf.newaxis],
        )
        planes = [
            tf.tensor_scatter_nd_update(plane, needs_hue, new_plane)
            for plane, new_plane in zip(planes, shifted)
        ]
    return tf.reshape(tf.stack(planes, axis=-1), shape)


# The jitter is ~250 small element-wise ops; XLA fuses them into a few loops
# (about 3.5x faster on a CPU, also inside tf.data's map). Same arithmetic, so
# results agree with `_jitter` to float32 rounding (~1e-6).
_jitter_xla = tf.function(
    functools.partial(_jitter, dense_hue=True), jit_compile=True, reduce_retracing=True
)


@keras.saving.register_keras_serializable(package="myol_keras")
class ColorJitter(RandomAugmentation):
    """torchvision's `ColorJitter`, per sample, with a random order of ops.

    For each image, independently (docs/METHODS.md §1.6): brightness, contrast and
    saturation factors `b, c, s ~ U[max(0, 1 - x), 1 + x]`, a hue shift
    `h ~ U[-hue, hue]` and a random permutation of the four operations;

    - brightness `x * b`;
    - contrast `x * c + (1 - c) * m`, `m` the mean grey value of the image;
    - saturation `x * s + (1 - s) * gray(x)` per pixel;
    - hue: RGB → HSV, `H ← (H + h) mod 1`, back to RGB;

    with `gray = 0.2989 r + 0.587 g + 0.114 b` and a clip to [0, 1] after each
    op. A strength of 0 disables an op. Unlike `keras.layers.RandomColorJitter`
    (fixed order, additive brightness, per-channel contrast mean, different
    saturation and hue scales), this follows torchvision, which produced the
    reference numbers. The hue shift runs only on the samples whose current
    op is hue. Input: float images in [0, 1], `(N, H, W, 3)` or
    `(H, W, 3)`.

    Args:
        brightness: float >= 0, brightness strength.
        contrast: float >= 0, contrast strength.
        saturation: float >= 0, saturation strength.
        hue: float in [0, 0.5], hue strength.
        seed: optional int, seed of the layer's `SeedGenerator`.
        jit_compile: compile the colour arithmetic with XLA (default; about
            3.5x faster on a CPU, including inside `tf.data`). `False` runs
            the same ops without XLA.
        **kwargs: standard layer arguments (`name`, ...).

    Example:

    >>> jitter = ColorJitter(0.4, 0.4, 0.4, 0.1, seed=0)
    >>> images = tf.random.uniform([4, 32, 32, 3])
    >>> params = jitter.get_random_transformation(images)
    >>> sorted(params)
    ['brightness', 'contrast', 'hue', 'order', 'saturation']
    >>> jitter.transform_images(images, params).shape
    TensorShape([4, 32, 32, 3])
    """

    def __init__(
        self,
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
        seed=None,
        jit_compile=True,
        **kwargs,
    ):
        for name, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if not is_number(value) or value < 0:
                raise ValueError(
                    f"Expected `{name}` to be a float >= 0. "
                    f"Received: {name}={value}"
                )
        if not is_number(hue) or not 0.0 <= hue <= 0.5:
            raise ValueError(
                f"Expected `hue` to be a float in [0, 0.5]. Received: hue={hue}"
            )
        super().__init__(seed=seed, **kwargs)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.hue = float(hue)
        self.jit_compile = bool(jit_compile)

    def get_random_transformation(self, images, training=True, seed=None):
        """Draws per-sample factors and op orders.

        Returns:
            A dict of float32 `(N,)` tensors `"brightness"`, `"contrast"`,
            `"saturation"`, `"hue"` and an int32 `(N, 4)` tensor `"order"`, a
            permutation of (0 brightness, 1 contrast, 2 saturation, 3 hue) per
            sample, applied left to right. Disabled ops (strength 0, or
            `training=False`) get the identity factor (1, or 0 for hue).
            Unbatched input gives `N = 1`.
        """
        images, _ = as_batch(images)
        batch = tf.shape(images)[0]
        ones = tf.ones([batch], tf.float32)
        if not training:
            return {
                "brightness": ones,
                "contrast": ones,
                "saturation": ones,
                "hue": ones * 0.0,
                "order": tf.tile(tf.range(4)[tf.newaxis], [batch, 1]),
            }
        seeds = split_seed(base_seed(self.generator, seed), 5)

        def factor(strength, op_seed):
            if strength == 0:
                return ones
            return tf.random.stateless_uniform(
                [batch], op_seed, max(0.0, 1.0 - strength), 1.0 + strength
            )

        if self.hue == 0:
            hue = ones * 0.0
        else:
            hue = tf.random.stateless_uniform(
                [batch], seeds[3], -self.hue, self.hue
            )
        order = tf.argsort(
            tf.random.stateless_uniform([batch, 4], seeds[4]), axis=1
        )
        return {
            "brightness": factor(self.brightness, seeds[0]),
            "contrast": factor(self.contrast, seeds[1]),
            "saturation": factor(self.saturation, seeds[2]),
            "hue": hue,
            "order": tf.cast(order, tf.int32),
        }

    def transform_images(self, images, transformation, training=True):
        """Applies the four ops of `transformation` in each sample's order."""
        if not training:
            return images
        images, was_unbatched = as_batch(images)
        images = tf.cast(images, self.compute_dtype)
        dtype = images.dtype
        brightness = tf.cast(transformation["brightness"], dtype)
        contrast = tf.cast(transformation["contrast"], dtype)
        saturation = tf.cast(transformation["saturation"], dtype)
        hue = tf.cast(transformation["hue"], dtype)
        order = tf.cast(transformation["order"], tf.int32)
        if not self.jit_compile:
            images = _jitter(images, brightness, contrast, saturation, hue, order)
            return restore_rank(images, was_unbatched)
        # XLA compiles once per input shape, and `RandomApply` hands over a
        # random number of samples: pad the batch to the next power of two
        # (identity factors on the padding) so a few shapes cover every count.
        count = tf.shape(images)[0]
        bucket = tf.maximum(
            8, tf.cast(2 ** tf.math.ceil(tf.math.log(tf.cast(tf.maximum(count, 1), tf.float32)) / math.log(2.0)), tf.int32)
        )
        bucket = tf.where(bucket < count, 2 * bucket, bucket)  # guard float rounding
        pad = bucket - count

        def padded(values, fill):
            widths = [[0, pad]] + [[0, 0]] * (len(values.shape) - 1)
            return tf.pad(values, widths, constant_values=fill)

        outputs = _jitter_xla(
            padded(images, 0.0),
            padded(brightness, 1.0),
            padded(contrast, 1.0),
            padded(saturation, 1.0),
            padded(hue, 0.0),
            padded(order, 0),
        )
        return restore_rank(outputs[:count], was_unbatched)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "brightness": self.brightness,
                "contrast": self.contrast,
                "saturation": self.saturation,
                "hue": self.hue,
                "seed": self.seed,
                "jit_compile": self.jit_compile,
            }
        )
        return config

