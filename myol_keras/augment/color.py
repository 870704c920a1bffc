"""torchvision's colour adjustments as pure functions (docs/METHODS.md §1.6).

Every function takes `images`, float images in [0, 1] of shape
`(N, H, W, 3)` or `(H, W, 3)`, and `factor`, per-sample factors of shape
`[N]` (or one scalar for all), and returns the adjusted images with the same
shape and dtype, clipped to [0, 1]. The grey value of a pixel is torchvision's
`0.2989 r + 0.587 g + 0.114 b` (ITU-R 601-2 luma).

`ColorJitter` fuses the same arithmetic into one pass per operation slot
(`myol_keras.augment.color_jitter`); these functions are its reference, and
the building blocks (`gray`, `shift_hue`, ...) of other colour operations.
"""

import tensorflow as tf

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
]

# torchvision's `rgb_to_grayscale` weights (ITU-R 601-2 luma).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def per_sample(factor, images):
    """Reshapes a per-sample factor (`[N]` or scalar) to broadcast on images."""
    factor = tf.cast(tf.convert_to_tensor(factor), images.dtype)
    if factor.shape.rank == 0:
        return factor
    if images.shape.rank == 3:
        return tf.reshape(factor, [])
    return tf.reshape(factor, [-1, 1, 1, 1])


def channels(images):
    """The red, green and blue planes, each keeping a channel axis of 1."""
    return images[..., 0:1], images[..., 1:2], images[..., 2:3]


def gray(images):
    """torchvision grey value of each pixel, keeping a channel axis of 1."""
    # Channel slices are several times faster than a reduce_sum / tensordot.
    red, green, blue = channels(images)
    w_red, w_green, w_blue = GRAY_WEIGHTS
    return red * w_red + green * w_green + blue * w_blue


def clip01(images):
    """Clips to [0, 1], as torchvision does after every colour operation."""
    return tf.clip_by_value(images, 0.0, 1.0)


def shift_hue(red, green, blue, factor):
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
        planes.append(clip01(value - chroma * weight))
    return planes


def adjust_brightness(images, factor):
    """Scales each image by its factor: `clip(factor * x, 0, 1)` (torchvision).

    A factor of 1 is the identity, 0 gives black. Arguments and result: see
    the module docstring.

    Example:

    >>> pixel = tf.constant([[[0.2, 0.5, 0.8]]])
    >>> adjust_brightness(pixel, 1.4).numpy().round(2)
    array([[[0.28, 0.7 , 1.  ]]], dtype=float32)
    """
    images = tf.convert_to_tensor(images)
    return clip01(images * per_sample(factor, images))


def adjust_contrast(images, factor):
    """Blends each image towards the mean of its grey image (torchvision).

    `clip(factor * x + (1 - factor) * m, 0, 1)`, where `m` is one scalar per
    image: the mean grey value over all its pixels. Arguments and result: see
    the module docstring.

    Example (one image of two pixels, grey values 0.4445 and 0.9999: m = 0.7222):

    >>> image = tf.constant([[[0.2, 0.5, 0.8], [1.0, 1.0, 1.0]]])
    >>> adjust_contrast(image, 0.6).numpy().round(3)
    array([[[0.409, 0.589, 0.769],
            [0.889, 0.889, 0.889]]], dtype=float32)
    """
    images = tf.convert_to_tensor(images)
    factor = per_sample(factor, images)
    mean = tf.reduce_mean(gray(images), axis=[-3, -2, -1], keepdims=True)
    return clip01(factor * images + (1.0 - factor) * mean)


def adjust_saturation(images, factor):
    """Blends each pixel towards its own grey value (torchvision).

    `clip(factor * x + (1 - factor) * gray(x), 0, 1)`: 0 gives the grey image,
    1 the identity. Arguments and result: see the module docstring.

    Example (grey value 0.4445):

    >>> adjust_saturation(tf.constant([[[0.2, 0.5, 0.8]]]), 0.6).numpy().round(3)
    array([[[0.298, 0.478, 0.658]]], dtype=float32)
    """
    images = tf.convert_to_tensor(images)
    factor = per_sample(factor, images)
    return clip01(factor * images + (1.0 - factor) * gray(images))


def adjust_hue(images, factor):
    """Rotates the hue: RGB → HSV, `H ← (H + factor) mod 1`, back (torchvision).

    `factor` is a hue shift in [-0.5, 0.5] per image; value and saturation
    are kept. Arguments and result: see the module docstring.

    Example (hue 7/12 + 0.1, a blue turned violet):

    >>> adjust_hue(tf.constant([[[0.2, 0.5, 0.8]]]), 0.1).numpy().round(3)
    array([[[0.26, 0.2 , 0.8 ]]], dtype=float32)
    """
    images = tf.convert_to_tensor(images)
    factor = per_sample(factor, images)
    return tf.concat(shift_hue(*channels(images), factor), axis=-1)
