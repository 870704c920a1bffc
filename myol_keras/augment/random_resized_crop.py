"""`RandomResizedCrop`: torchvision's crop of random area and aspect ratio, resized."""

import math

import keras
import tensorflow as tf

from myol_keras.augment.common import (
    RandomAugmentation,
    as_batch,
    base_seed,
    is_int,
    restore_rank,
    split_seed,
    validate_pair,
)

# torchvision's RandomResizedCrop tries this many candidates before falling back.
CROP_ATTEMPTS = 10


@keras.saving.register_keras_serializable(package="myol_keras")
class RandomResizedCrop(RandomAugmentation):
    """Random crop of random area and aspect ratio, resized (torchvision).

    For each image, independently: draw 10 candidate crops with area fraction
    `a ~ U(scale)` and aspect ratio `r = exp(U(log ratio))`, with
    `w = round(sqrt(a * H * W * r))`, `h = round(sqrt(a * H * W / r))`; take
    the first candidate that fits in the image and a uniform integer offset;
    if none fits, take the centre crop of the whole image clamped to the
    ratio range. The crop is resized to `(size, size)` with bilinear
    interpolation (half-pixel centres, no antialiasing) by
    `tf.image.crop_and_resize`. For square images `w = round(sqrt(a r) W)`.

    Input: float images `(N, H, W, C)` or `(H, W, C)`. Output:
    `(N, size, size, C)` or `(size, size, C)`, float32. In inference mode
    (`training=False`) the whole image is resized.

    Args:
        size: int >= 1, output height and width.
        scale: pair `0 < a <= b <= 1`, range of the crop's area fraction.
        ratio: pair `0 < a <= b`, range of the crop's aspect ratio (w / h).
        seed: optional int, seed of the layer's `SeedGenerator`.
        **kwargs: standard layer arguments (`name`, ...).

    Example:

    >>> crop = RandomResizedCrop(32, scale=(0.2, 1.0), seed=0)
    >>> crop(tf.random.uniform([8, 96, 96, 3])).shape
    TensorShape([8, 32, 32, 3])
    """

    def __init__(
        self, size, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), seed=None, **kwargs
    ):
        if not is_int(size) or size < 1:
            raise ValueError(
                f"Expected `size` to be an int >= 1. Received: size={size}"
            )
        scale = validate_pair("scale", scale, high=1)
        ratio = validate_pair("ratio", ratio)
        super().__init__(seed=seed, **kwargs)
        self.size = int(size)
        self.scale = scale
        self.ratio = ratio

    def get_random_transformation(self, images, training=True, seed=None):
        """Draws one crop per image.

        Returns:
            A dict with `"boxes"`, int32 `(N, 4)` rows
            `(top, left, height, width)` in pixels, and `"fallback"`, bool
            `(N,)`, true where no candidate fitted and the centre crop was used.
            Unbatched input gives `N = 1`.
        """
        images, _ = as_batch(images)
        shape = tf.shape(images)
        batch = shape[0]
        height = tf.cast(shape[1], tf.float32)
        width = tf.cast(shape[2], tf.float32)
        if not training:
            zeros = tf.zeros([batch], tf.float32)
            boxes = tf.stack(
                [zeros, zeros, zeros + height, zeros + width], axis=1
            )
            return {
                "boxes": tf.cast(boxes, tf.int32),
                "fallback": tf.zeros([batch], tf.bool),
            }
        seed_area, seed_ratio, seed_top, seed_left = split_seed(
            base_seed(self.generator, seed), 4
        )
        area = height * width
        candidates = [batch, CROP_ATTEMPTS]
        target_area = area * tf.random.stateless_uniform(
            candidates, seed_area, self.scale[0], self.scale[1]
        )
        log_ratio = tf.random.stateless_uniform(
            candidates,
            seed_ratio,
            math.log(self.ratio[0]),
            math.log(self.ratio[1]),
        )
        aspect = tf.exp(log_ratio)
        # tf.round is round-half-to-even, like Python's round() in torchvision.
        widths = tf.round(tf.sqrt(target_area * aspect))
        heights = tf.round(tf.sqrt(target_area / aspect))
        fits = (
            (widths > 0)
            & (widths <= width)
            & (heights > 0)
            & (heights <= height)
        )
        first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
        found = tf.reduce_any(fits, axis=1)
        crop_w = tf.gather(widths, first, batch_dims=1)
        crop_h = tf.gather(heights, first, batch_dims=1)
        top = tf.floor(
            tf.random.stateless_uniform([batch], seed_top)
            * (height - crop_h + 1.0)
        )
        left = tf.floor(
            tf.random.stateless_uniform([batch], seed_left)
            * (width - crop_w + 1.0)
        )
        top = tf.minimum(top, height - crop_h)
        left = tf.minimum(left, width - crop_w)

        # Fallback: whole image, clamped to the ratio range, centred.
        in_ratio = width / height
        low, high = self.ratio
        fallback_w = tf.where(
            in_ratio > high, tf.round(height * high), width
        )
        fallback_h = tf.where(in_ratio < low, tf.round(width / low), height)
        fallback_top = tf.floor((height - fallback_h) / 2.0)
        fallback_left = tf.floor((width - fallback_w) / 2.0)
        boxes = tf.stack(
            [
                tf.where(found, top, fallback_top),
                tf.where(found, left, fallback_left),
                tf.where(found, crop_h, fallback_h),
                tf.where(found, crop_w, fallback_w),
            ],
            axis=1,
        )
        return {"boxes": tf.cast(boxes, tf.int32), "fallback": ~found}

    def transform_images(self, images, transformation, training=True):
        """Crops `transformation["boxes"]` and resizes to `(size, size)`."""
        del training
        images, was_unbatched = as_batch(images)
        images = tf.cast(images, self.compute_dtype)
        shape = tf.shape(images)
        height = tf.cast(shape[1], tf.float32)
        width = tf.cast(shape[2], tf.float32)
        boxes = tf.cast(transformation["boxes"], tf.float32)
        top, left, crop_h, crop_w = tf.unstack(boxes, axis=1)
        size = float(self.size)
        # crop_and_resize samples y1*(H-1) + k*(y2-y1)*(H-1)/(size-1); choose
        # y1, y2 so that the samples sit at half-pixel centres of the crop,
        # top + (k + 0.5) * crop_h / size - 0.5 (align_corners=False), clamped
        # to the image as PyTorch/PIL do instead of extrapolating zeros.
        y1 = top + 0.5 * crop_h / size - 0.5
        y2 = top + (size - 0.5) * crop_h / size - 0.5
        x1 = left + 0.5 * crop_w / size - 0.5
        x2 = left + (size - 0.5) * crop_w / size - 0.5
        y_den = tf.maximum(height - 1.0, 1.0)
        x_den = tf.maximum(width - 1.0, 1.0)
        normalized = tf.stack(
            [
                tf.clip_by_value(y1, 0.0, height - 1.0) / y_den,
                tf.clip_by_value(x1, 0.0, width - 1.0) / x_den,
                tf.clip_by_value(y2, 0.0, height - 1.0) / y_den,
                tf.clip_by_value(x2, 0.0, width - 1.0) / x_den,
            ],
            axis=1,
        )
        outputs = tf.image.crop_and_resize(
            images,
            normalized,
            box_indices=tf.range(shape[0]),
            crop_size=[self.size, self.size],
            method="bilinear",
        )
        outputs = tf.cast(outputs, self.compute_dtype)
        return restore_rank(outputs, was_unbatched)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-3]) + (self.size, self.size, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "size": self.size,
                "scale": self.scale,
                "ratio": self.ratio,
                "seed": self.seed,
            }
        )
        return config


