"""Pre-training view augmentations (METHODS §1.6, DESIGN §4.4).

The MYOL / i-Mix view recipe as Keras layers that run inside
`tf.data.Dataset.map` (TensorFlow backend):

0. uint8 → float32 in [0, 1] (`ToFloat`, the reference's `ToTensor`, moved
   first: the float ops differ from PIL's uint8 ones by a few 1/255 steps);
1. `RandomResizedCrop(S, scale=(0.2, 1.0), ratio=(3/4, 4/3))`, bilinear;
2. horizontal flip with p=0.5 (Keras core `RandomFlip`);
3. with p=0.8, `ColorJitter(0.4, 0.4, 0.4, 0.1)` with torchvision's formulas
   (multiplicative brightness / contrast / saturation, contrast towards the
   mean of the grey image, hue shift in HSV, the four ops in a random order);
4. grayscale with p=0.2 (Keras core `RandomGrayscale`);
5. per-channel normalisation (`Normalize`).

Every random layer draws its parameters **per sample** from its own
`keras.random.SeedGenerator` (one `next()` per call, then stateless TF ops),
so the randomness differs between the images of a batch, between calls and
between epochs, and is never frozen at trace time.

Random layers follow the Keras split between the random draw and the maths:
`get_random_transformation(images, training=True, seed=None)` returns the
per-sample parameters, and `transform_images(images, transformation)` applies
them deterministically; `call` does both.
"""

import functools
import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from myol_keras import preprocessing

__all__ = [
    "ToFloat",
    "RandomResizedCrop",
    "RandomApply",
    "ColorJitter",
    "Normalize",
    "EvaluationTransform",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "myol_view_recipe",
    "eval_recipe",
    "apply_recipe",
    "stateless_layer_call",
    "make_view_fn",
]

# torchvision's `rgb_to_grayscale` weights (ITU-R 601-2 luma).
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# Order of the colour operations in `ColorJitter` transformations.
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 0, 1, 2, 3
# torchvision's RandomResizedCrop tries this many candidates before falling back.
_CROP_ATTEMPTS = 10


# ----------------------------------------------------------------------------
# Private helpers.
# ----------------------------------------------------------------------------
def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _validate_seed(seed):
    if seed is not None and not _is_int(seed):
        raise ValueError(
            f"Expected `seed` to be None or an int. Received: seed={seed}"
        )


def _as_batch(images):
    """Returns `(batched_images, was_unbatched)` for rank-3 or rank-4 input."""
    images = tf.convert_to_tensor(images)
    rank = images.shape.rank
    if rank == 3:
        return images[tf.newaxis], True
    if rank == 4:
        return images, False
    raise ValueError(
        "Expected images of rank 3 (height, width, channels) or rank 4 "
        f"(batch, height, width, channels). Received: images.shape={images.shape}"
    )


def _restore_rank(images, was_unbatched):
    return images[0] if was_unbatched else images


def _base_seed(generator, seed):
    """A `[2]` int64 stateless seed: from `seed` if given, else `generator`."""
    if seed is None:
        seed = generator.next()
    elif isinstance(seed, keras.random.SeedGenerator):
        seed = seed.next()
    elif _is_int(seed):
        seed = [int(seed), 0]
    return tf.cast(tf.convert_to_tensor(seed), tf.int64)


def _split_seed(seed, num):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


def _per_sample(factor, images):
    """Reshapes a per-sample factor (`[N]` or scalar) to broadcast on images."""
    factor = tf.cast(tf.convert_to_tensor(factor), images.dtype)
    if factor.shape.rank == 0:
        return factor
    if images.shape.rank == 3:
        return tf.reshape(factor, [])
    return tf.reshape(factor, [-1, 1, 1, 1])


def _channels(images):
    return images[..., 0:1], images[..., 1:2], images[..., 2:3]


def _gray(images):
    """torchvision grey value of each pixel, keeping a channel axis of 1."""
    # Channel slices are several times faster than a reduce_sum / tensordot.
    red, green, blue = _channels(images)
    w_red, w_green, w_blue = _GRAY_WEIGHTS
    return red * w_red + green * w_green + blue * w_blue


def _clip01(images):
    return tf.clip_by_value(images, 0.0, 1.0)


def _validate_pair(name, value, high=None):
    """Checks `value` is a pair `0 < a <= b` (and `b <= high` if given)."""
    bound = f" <= {high}" if high is not None else ""
    message = (
        f"Expected `{name}` to be a pair 0 < a <= b{bound}. "
        f"Received: {name}={value}"
    )
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(message)
    low, up = value
    if not (_is_number(low) and _is_number(up)):
        raise ValueError(message)
    if not (low > 0 and low <= up) or (high is not None and up > high):
        raise ValueError(message)
    return (float(low), float(up))


def _shift_hue(red, green, blue, factor):
    """Hue shift of colour planes (any equal shapes, `factor` broadcastable).

    A hue shift keeps V = max and the chroma C = max - min, so the HSV round
    trip reduces to: hue in sextants h6 = 6 H (as torchvision's `_rgb2hsv`,
    ties resolved red, then green), `h6 ← (h6 + 6 factor) mod 6`, and the
    closed-form HSV → RGB `V - C * clip(min(k, 4 - k), 0, 1)` with
    `k = (n + h6) mod 6`, n = 5, 3, 1 for red, green, blue. It is several times
    cheaper than `tf.image.rgb_to_hsv` + `hsv_to_rgb`. Returns the three planes.
    """
    value = tf.maximum(tf.maximum(red, green), blue)
    chroma = value - tf.minimum(tf.minimum(red, green), blue)
    safe_chroma = tf.where(chroma > 0, chroma, tf.ones_like(chroma))
    numerator = tf.where(
        value == red,
        green - blue,
        tf.where(
            value == green,
            (blue - red) + 2.0 * chroma,
            (red - green) + 4.0 * chroma,
        ),
    )
    sextant = numerator / safe_chroma + 6.0 * factor
    sextant = sextant - 6.0 * tf.floor(sextant / 6.0)
    planes = []
    for offset in (5.0, 3.0, 1.0):
        k = sextant + offset
        k = tf.where(k >= 6.0, k - 6.0, k)
        weight = tf.clip_by_value(tf.minimum(k, 4.0 - k), 0.0, 1.0)
        planes.append(_clip01(value - chroma * weight))
    return planes


# ----------------------------------------------------------------------------
# Pure colour functions (torchvision semantics, per-sample factors).
# ----------------------------------------------------------------------------
def adjust_brightness(images, factor):
    """Multiplies by a per-sample brightness factor, as torchvision does.

    `out = clip(x * factor, 0, 1)`. A factor of 1 is the identity.

    Args:
        images: float images in [0, 1], `(N, H, W, 3)` or `(H, W, 3)`.
        factor: per-sample factors of shape `[N]` (or a scalar).

    Returns:
        The adjusted images, same shape and dtype.

    Example:

    >>> x = tf.fill([2, 4, 4, 3], 0.5)
    >>> adjust_brightness(x, [1.4, 0.6]).shape
    TensorShape([2, 4, 4, 3])
    """
    images = tf.convert_to_tensor(images)
    return _clip01(images * _per_sample(factor, images))


def adjust_contrast(images, factor):
    """Blends each image towards the mean of its grey image (torchvision).

    `out = clip(factor * x + (1 - factor) * m, 0, 1)` where `m` is one scalar
    per image: the mean over all pixels of `0.2989 r + 0.587 g + 0.114 b`.

    Args:
        images: float images in [0, 1], `(N, H, W, 3)` or `(H, W, 3)`.
        factor: per-sample factors of shape `[N]` (or a scalar).

    Returns:
        The adjusted images, same shape and dtype.

    Example:

    >>> x = tf.random.uniform([2, 4, 4, 3])
    >>> adjust_contrast(x, [0.6, 1.4]).shape
    TensorShape([2, 4, 4, 3])
    """
    images = tf.convert_to_tensor(images)
    factor = _per_sample(factor, images)
    mean = tf.reduce_mean(_gray(images), axis=[-3, -2, -1], keepdims=True)
    return _clip01(factor * images + (1.0 - factor) * mean)


def adjust_saturation(images, factor):
    """Blends each pixel towards its grey value (torchvision).

    `out = clip(factor * x + (1 - factor) * gray(x), 0, 1)` per pixel.

    Args:
        images: float images in [0, 1], `(N, H, W, 3)` or `(H, W, 3)`.
        factor: per-sample factors of shape `[N]` (or a scalar).

    Returns:
        The adjusted images, same shape and dtype.

    Example:

    >>> x = tf.random.uniform([2, 4, 4, 3])
    >>> adjust_saturation(x, [0.6, 1.4]).shape
    TensorShape([2, 4, 4, 3])
    """
    images = tf.convert_to_tensor(images)
    factor = _per_sample(factor, images)
    return _clip01(factor * images + (1.0 - factor) * _gray(images))


def adjust_hue(images, factor):
    """Shifts the hue of each image: RGB → HSV, `H ← (H + factor) mod 1`, back.

    Args:
        images: float images in [0, 1], `(N, H, W, 3)` or `(H, W, 3)`.
        factor: per-sample hue shifts in [-0.5, 0.5], shape `[N]` (or a scalar).

    Returns:
        The adjusted images, same shape and dtype.

    Example:

    >>> x = tf.random.uniform([2, 4, 4, 3])
    >>> adjust_hue(x, [0.1, -0.1]).shape
    TensorShape([2, 4, 4, 3])
    """
    images = tf.convert_to_tensor(images)
    factor = _per_sample(factor, images)
    return tf.concat(_shift_hue(*_channels(images), factor), axis=-1)


# ----------------------------------------------------------------------------
# Layers.
# ----------------------------------------------------------------------------
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


@keras.saving.register_keras_serializable(package="myol_keras")
class RandomResizedCrop(keras.layers.Layer):
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
        if not _is_int(size) or size < 1:
            raise ValueError(
                f"Expected `size` to be an int >= 1. Received: size={size}"
            )
        scale = _validate_pair("scale", scale, high=1)
        ratio = _validate_pair("ratio", ratio)
        _validate_seed(seed)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.size = int(size)
        self.scale = scale
        self.ratio = ratio
        self.seed = None if seed is None else int(seed)
        self.generator = keras.random.SeedGenerator(self.seed)

    def get_random_transformation(self, images, training=True, seed=None):
        """Draws one crop per image.

        Returns:
            A dict with `"boxes"`, int32 `(N, 4)` rows
            `(top, left, height, width)` in pixels, and `"fallback"`, bool
            `(N,)`, true where no candidate fitted and the centre crop was used.
            Unbatched input gives `N = 1`.
        """
        images, _ = _as_batch(images)
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
        seed_area, seed_ratio, seed_top, seed_left = _split_seed(
            _base_seed(self.generator, seed), 4
        )
        area = height * width
        candidates = [batch, _CROP_ATTEMPTS]
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
        images, was_unbatched = _as_batch(images)
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
        return _restore_rank(outputs, was_unbatched)

    def call(self, images, training=True):
        transformation = self.get_random_transformation(
            images, training=training
        )
        return self.transform_images(images, transformation)

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


@keras.saving.register_keras_serializable(package="myol_keras")
class RandomApply(keras.layers.Layer):
    """Applies a layer to each sample with probability `rate`.

    A per-sample Bernoulli mask selects the samples; the wrapped layer runs on
    those only (a batch of dynamic size, possibly empty) and they are
    scattered back into the batch. The wrapped layer must keep the shape of
    each sample. In inference mode
    (`training=False`) the input is returned unchanged.

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
        if not _is_number(rate) or not 0.0 <= rate <= 1.0:
            raise ValueError(
                "Expected `rate` to be a float in [0, 1]. "
                f"Received: rate={rate}"
            )
        _validate_seed(seed)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.layer = layer
        self.rate = float(rate)
        self.seed = None if seed is None else int(seed)
        self.generator = keras.random.SeedGenerator(self.seed)

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def get_random_transformation(self, images, training=True, seed=None):
        """Returns the per-sample bool mask `(N,)` (`N = 1` if unbatched)."""
        images, _ = _as_batch(images)
        batch = tf.shape(images)[0]
        if not training:
            return tf.zeros([batch], tf.bool)
        uniform = tf.random.stateless_uniform(
            [batch], _base_seed(self.generator, seed)
        )
        return uniform < self.rate

    def call(self, images, training=True):
        images = tf.convert_to_tensor(images)
        if not training or self.rate == 0.0:
            return images
        if self.rate == 1.0:
            return self.layer(images)
        mask = self.get_random_transformation(images)
        if images.shape.rank == 3:
            outputs = self.layer(images)
            images = tf.cast(images, outputs.dtype)
            return tf.where(tf.reshape(mask, []), outputs, images)
        # Run the wrapped layer only on the selected samples (a batch of
        # dynamic size), then scatter them back into the batch.
        selected = tf.where(mask)
        outputs = self.layer(tf.gather_nd(images, selected))
        images = tf.cast(images, outputs.dtype)
        return tf.tensor_scatter_nd_update(images, selected, outputs)

    def stateless_call(self, images, seed):
        """`call` in training mode with the mask and the wrapped layer's randomness from `seed`."""
        images = tf.convert_to_tensor(images)
        mask_seed, inner_seed = _split_seed(tf.cast(seed, tf.int64), 2)
        if self.rate == 0.0:
            return images
        if self.rate == 1.0:
            return stateless_layer_call(self.layer, images, inner_seed)
        mask = self.get_random_transformation(images, seed=mask_seed)
        if images.shape.rank == 3:
            outputs = stateless_layer_call(self.layer, images, inner_seed)
            images = tf.cast(images, outputs.dtype)
            return tf.where(tf.reshape(mask, []), outputs, images)
        selected = tf.where(mask)
        outputs = stateless_layer_call(self.layer, tf.gather_nd(images, selected), inner_seed)
        images = tf.cast(images, outputs.dtype)
        return tf.tensor_scatter_nd_update(images, selected, outputs)

    def compute_output_shape(self, input_shape):
        return input_shape

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
    w_red, w_green, w_blue = _GRAY_WEIGHTS
    for slot in range(4):
        op = order[:, slot]
        # Brightness, contrast and saturation are all torchvision blends
        # `clip(f x + (1 - f) t)` with target t = 0, the mean grey value
        # m, or the pixel's grey value g: one pass per slot covers all
        # three, `clip(f x + u g + v m)` with per-sample f, u, v. Samples
        # whose op in this slot is hue get f = 1, u = v = 0 (identity).
        is_contrast = op == _CONTRAST
        is_saturation = op == _SATURATION
        f = tf.where(
            op == _BRIGHTNESS,
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
            _clip01(f[:, tf.newaxis] * plane + offset) for plane in planes
        ]
        hue_mask = (op == _HUE) & tf.not_equal(hue, 0.0)
        if dense_hue:
            # Static shapes for XLA: shift every sample, keep it where needed
            # (a data-dependent gather would recompile for every count).
            shifted = _shift_hue(*planes, hue[:, tf.newaxis])
            planes = [
                tf.where(hue_mask[:, tf.newaxis], new_plane, plane)
                for plane, new_plane in zip(planes, shifted)
            ]
            continue
        # Hue (the expensive op) only on the samples that need it.
        needs_hue = tf.where(hue_mask)
        shifted = _shift_hue(
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
class ColorJitter(keras.layers.Layer):
    """torchvision's `ColorJitter`, per sample, with a random order of ops.

    For each image, independently (METHODS §1.6): brightness, contrast and
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
            if not _is_number(value) or value < 0:
                raise ValueError(
                    f"Expected `{name}` to be a float >= 0. "
                    f"Received: {name}={value}"
                )
        if not _is_number(hue) or not 0.0 <= hue <= 0.5:
            raise ValueError(
                f"Expected `hue` to be a float in [0, 0.5]. Received: hue={hue}"
            )
        _validate_seed(seed)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.hue = float(hue)
        self.seed = None if seed is None else int(seed)
        self.jit_compile = bool(jit_compile)
        self.generator = keras.random.SeedGenerator(self.seed)

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
        images, _ = _as_batch(images)
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
        seeds = _split_seed(_base_seed(self.generator, seed), 5)

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
        images, was_unbatched = _as_batch(images)
        images = tf.cast(images, self.compute_dtype)
        dtype = images.dtype
        brightness = tf.cast(transformation["brightness"], dtype)
        contrast = tf.cast(transformation["contrast"], dtype)
        saturation = tf.cast(transformation["saturation"], dtype)
        hue = tf.cast(transformation["hue"], dtype)
        order = tf.cast(transformation["order"], tf.int32)
        if not self.jit_compile:
            images = _jitter(images, brightness, contrast, saturation, hue, order)
            return _restore_rank(images, was_unbatched)
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
        return _restore_rank(outputs[:count], was_unbatched)

    def call(self, images, training=True):
        transformation = self.get_random_transformation(
            images, training=training
        )
        return self.transform_images(images, transformation, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

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
                or not all(_is_number(v) for v in value)
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


# ----------------------------------------------------------------------------
# Recipes.
# ----------------------------------------------------------------------------
def _validate_image_size(image_size):
    if not _is_int(image_size) or image_size < 1:
        raise ValueError(
            "Expected `image_size` to be an int >= 1. "
            f"Received: image_size={image_size}"
        )


def myol_view_recipe(image_size, mean, std, seed=None):
    """The MYOL pre-training view (METHODS §1.6) as a list of layers.

    In order: `ToFloat`, `RandomResizedCrop(image_size, (0.2, 1), (3/4, 4/3))`,
    `keras.layers.RandomFlip("horizontal")`,
    `RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8)`,
    `keras.layers.RandomGrayscale(factor=0.2)` and `Normalize(mean, std)`.
    The same recipe is used for both views (symmetric). All layers compute in
    float32 whatever the global dtype policy.

    Args:
        image_size: int, output size (32 for CIFAR, 64 for STL-10 and
            Tiny-ImageNet).
        mean: 3 floats, normalisation mean.
        std: 3 floats, normalisation std.
        seed: optional int. Each random layer gets its own seed derived from
            it (at construction, in Python). Two recipes meant to be
            independent need different seeds (or `None`); one recipe used for
            both views (`[recipe, recipe]`) is independent per call anyway.

    Returns:
        A list of `keras.layers.Layer`, for `apply_recipe` / `make_view_fn`.

    Example:

    >>> recipe = myol_view_recipe(
    ...     32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    >>> images = tf.zeros([4, 32, 32, 3], tf.uint8)
    >>> apply_recipe(recipe, images).shape
    TensorShape([4, 32, 32, 3])
    """
    _validate_image_size(image_size)

    def sub_seed(offset):
        # Well-separated seeds per layer, so that recipes with nearby seeds
        # (0, 1, ...) do not share streams between layers.
        if seed is None:
            return None
        state = np.random.SeedSequence([int(seed), offset]).generate_state(1)
        return int(state[0]) % (2**31 - 1)

    return [
        ToFloat(),
        RandomResizedCrop(
            image_size, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), seed=sub_seed(0)
        ),
        keras.layers.RandomFlip(
            "horizontal", seed=sub_seed(1), dtype="float32"
        ),
        RandomApply(
            ColorJitter(0.4, 0.4, 0.4, 0.1, seed=sub_seed(2)),
            rate=0.8,
            seed=sub_seed(3),
        ),
        keras.layers.RandomGrayscale(
            factor=0.2, seed=sub_seed(4), dtype="float32"
        ),
        Normalize(mean, std),
    ]


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


def eval_recipe(image_size, mean, std):
    """The evaluation transform as a recipe: `[EvaluationTransform(image_size, mean, std)]`.

    The same transform as the export's endpoints and every evaluation
    (`myol_keras.preprocessing`): centre square crop, bilinear resize with
    antialiasing (as PIL's, used by the reference's `Resize`; exactly the
    identity when the image already has size `(image_size, image_size)`),
    normalisation.

    Args:
        image_size: int, output height and width.
        mean: 3 floats, normalisation mean.
        std: 3 floats, normalisation std.

    Returns:
        A list of `keras.layers.Layer`.

    Example:

    >>> recipe = eval_recipe(64, (0.4467, 0.4398, 0.4066),
    ...                      (0.2603, 0.2565, 0.2712))
    >>> apply_recipe(recipe, tf.zeros([2, 96, 96, 3], tf.uint8)).shape
    TensorShape([2, 64, 64, 3])
    """
    return [EvaluationTransform(image_size, mean, std)]


def apply_recipe(layers, images, seed=None):
    """Applies `layers` to `images` in order.

    Args:
        layers: a list of Keras-compatible layers (keras-cv layers work too).
        images: `(N, H, W, 3)` or `(H, W, 3)` images.
        seed: optional stateless seed (`[2]` int tensor). None: every random
            layer draws from its own `SeedGenerator` (fresh randomness per
            call). Given: the randomness is a pure function of `seed` (layer
            `j` uses `fold_in(seed, j)`, see `stateless_layer_call`), which is
            what a resumable, deterministic pipeline needs (Keras does not
            checkpoint `SeedGenerator` state).

    Returns:
        The output of the last layer.

    Example:

    >>> recipe = eval_recipe(8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    >>> apply_recipe(recipe, tf.zeros([8, 8, 3], tf.uint8)).shape
    TensorShape([8, 8, 3])
    """
    if not isinstance(layers, (list, tuple)) or not all(
        callable(layer) for layer in layers
    ):
        raise ValueError(
            "Expected `layers` to be a list of Keras layers. "
            f"Received: layers={layers!r}"
        )
    if seed is None:
        for layer in layers:
            images = layer(images)
        return images
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    for j, layer in enumerate(layers):
        images = stateless_layer_call(
            layer, images, tf.random.experimental.stateless_fold_in(seed, j)
        )
    return images


def stateless_layer_call(layer, images, seed):
    """`layer(images)` in training mode with its randomness drawn from `seed`.

    Supports this module's random layers (`RandomResizedCrop`, `RandomApply`,
    `ColorJitter`) and Keras core `RandomFlip` and `RandomGrayscale` (their
    transformation is drawn here with stateless ops of the same law and
    applied with the layer's own `transform_images`). Deterministic layers are
    simply called. Any other random layer (e.g. keras-cv) is called as is and
    keeps drawing from its own generator: not reproducible across a resume.

    Args:
        layer: a Keras layer.
        images: a batch `(N, H, W, C)` (or one image).
        seed: `[2]` int stateless seed.
    """
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if isinstance(layer, RandomApply):
        return layer.stateless_call(images, seed)
    if isinstance(layer, (RandomResizedCrop, ColorJitter)):
        transformation = layer.get_random_transformation(images, training=True, seed=seed)
        return layer.transform_images(images, transformation, training=True)
    if isinstance(layer, keras.layers.RandomFlip):
        images = tf.convert_to_tensor(images)
        shape = tf.shape(images)
        batch = shape[0] if images.shape.rank == 4 else 1
        flips_shape = [batch, 1, 1, 1] if images.shape.rank == 4 else [1, 1, 1]
        flips = tf.random.stateless_uniform(flips_shape, seed) <= 0.5
        return layer.transform_images(images, {"flips": flips, "input_shape": shape}, training=True)
    if isinstance(layer, keras.layers.RandomGrayscale):
        images = tf.convert_to_tensor(images)
        batch = tf.shape(images)[0] if images.shape.rank == 4 else 1
        should_apply = tf.random.stateless_uniform([batch], seed) < layer.factor
        should_apply = tf.reshape(should_apply, [-1, 1, 1, 1])
        if images.shape.rank == 3:
            should_apply = should_apply[0]
        return layer.transform_images(images, should_apply, training=True)
    return layer(images)


def make_view_fn(recipes):
    """Returns `images -> tuple(views)`, one view per recipe, for `ds.map`.

    Args:
        recipes: a non-empty list of recipes (lists of layers), one per view.
            Passing the same recipe twice (`[recipe, recipe]`) draws the two
            views independently, because every call draws fresh randomness.

    Returns:
        A function `(images, seed=None)` from a batch of (uint8) images to a
        tuple of views, to use as `ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)`.
        With a stateless `seed` (`[2]` int tensor) the views are a pure
        function of it (view `i` uses `fold_in(seed, i)`); see
        `myol_keras.data.epoch_pipeline`.

    Example:

    >>> recipe = myol_view_recipe(32, (0.5,) * 3, (0.25,) * 3)
    >>> ds = tf.data.Dataset.from_tensor_slices(
    ...     tf.zeros([8, 32, 32, 3], tf.uint8)).batch(4)
    >>> ds = ds.map(make_view_fn([recipe, recipe]),
    ...             num_parallel_calls=tf.data.AUTOTUNE)
    >>> [v.shape for v in next(iter(ds))]
    [TensorShape([4, 32, 32, 3]), TensorShape([4, 32, 32, 3])]
    """
    if (
        not isinstance(recipes, (list, tuple))
        or not recipes
        or not all(isinstance(recipe, (list, tuple)) for recipe in recipes)
    ):
        raise ValueError(
            "Expected `recipes` to be a non-empty list of recipes (lists of "
            f"layers), one per view. Received: recipes={recipes!r}"
        )
    recipes = [list(recipe) for recipe in recipes]

    def view_fn(images, seed=None):
        if seed is None:
            return tuple(apply_recipe(recipe, images) for recipe in recipes)
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        return tuple(
            apply_recipe(recipe, images, tf.random.experimental.stateless_fold_in(seed, i))
            for i, recipe in enumerate(recipes)
        )

    return view_fn
