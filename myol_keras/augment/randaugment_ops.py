"""RandAugment's 14 image operations, computed exactly as PIL computes them.

CLSA's strong view (docs/METHODS.md §2.10) runs FixMatch's RandAugment pool, which
the CLSA code (`data_processing/RandAugment.py`) applies with PIL's
`ImageOps` / `ImageEnhance` / `Image.transform` to uint8 images. These pure
functions reproduce PIL's integer arithmetic on TensorFlow tensors so that the
`RandAugment` layer (`myol_keras.augment.rand_augment`) gives the pixels PIL
gives (tested against Pillow in `tests/test_augment_randaugment_ops.py`).

Every function takes `images`, a batch `[N, H, W, C]` of float32 values that
are integers in [0, 255] (a uint8 image held in float), and one parameter per
sample (`[N]`), and returns a batch of the same kind:

- `autocontrast`, `equalize`: PIL's per-channel lookup tables, built from
  per-sample histograms (Keras core `AutoContrast` and `Equalization` differ:
  no truncation to integers, and a cdf formula instead of PIL's `step`);
- `posterize`, `solarize`: the transforms of Keras core `RandomPosterization`
  and `Solarization` (identical to PIL's lookup tables), fed per-sample values;
- `brightness`, `color`, `contrast`, `sharpness`: `ImageEnhance`, i.e.
  `Image.blend(degenerate, image, factor)`, which PIL computes in float32 as
  `d + factor * (x - d)` and truncates; the degenerate images use PIL's
  fixed-point luma `(19595 R + 38470 G + 7471 B + 32768) >> 16` and its 3x3
  `SMOOTH` filter (float32, rounded, border pixels copied). Keras core
  `RandomSharpness` pads with zeros and does not truncate, so it is not used;
- `rotate`, `shear_x`, `shear_y`: PIL's nearest-neighbour affine transform in
  16.16 fixed point (`affine_fixed` in Pillow's `Geometry.c`), black outside
  the image. Keras core `RandomRotation` / `RandomShear` rotate about
  `(w - 1) / 2` in float32 and pick other pixels (up to 10 grey levels off
  at 12 degrees on a smooth image), so they are not used;
- `translate_x`, `translate_y`: whole-pixel shifts, for which the transform
  of Keras core `RandomTranslation` (nearest, black fill) equals Pillow's.
"""

import functools
import math

import keras
import tensorflow as tf

_SMOOTH_CENTRE = 5.0  # PIL ImageFilter.SMOOTH: 3x3 ones with 5 in the middle, / 13
_SMOOTH_SCALE = 13.0


def _channels_lut(images, lut):
    """`out[n, h, w, c] = lut[n, c, images[n, h, w, c]]` for a `[N, C, 256]` table."""
    shape = tf.shape(images)
    values = tf.cast(images, tf.int32)
    sample = tf.reshape(tf.range(shape[0]), [-1, 1, 1, 1])
    channel = tf.reshape(tf.range(shape[3]), [1, 1, 1, -1])
    index = (sample * shape[3] + channel) * 256 + values
    return tf.cast(tf.gather(tf.reshape(lut, [-1]), index), tf.float32)


def _histograms(images):
    """Per-sample, per-channel 256-bin histograms, int64 `[N, C, 256]`."""
    shape = tf.shape(images)
    values = tf.cast(images, tf.int32)
    sample = tf.reshape(tf.range(shape[0]), [-1, 1, 1, 1])
    channel = tf.reshape(tf.range(shape[3]), [1, 1, 1, -1])
    index = tf.reshape((sample * shape[3] + channel) * 256 + values, [-1])
    size = shape[0] * shape[3] * 256
    counts = tf.math.bincount(index, minlength=size, maxlength=size, dtype=tf.int64)
    return tf.reshape(counts, [shape[0], shape[3], 256])


def autocontrast(images):
    """`ImageOps.autocontrast(image)`: each channel stretched to [0, 255].

    The table is `int(i * scale + offset)` with `scale = 255 / (hi - lo)` and
    `offset = -lo * scale` in float64, clipped to [0, 255]; a constant channel
    is left as is.
    """
    present = _histograms(images) > 0
    lo = tf.argmax(tf.cast(present, tf.int32), axis=-1)
    hi = 255 - tf.argmax(tf.cast(tf.reverse(present, [-1]), tf.int32), axis=-1)
    flat = hi <= lo
    scale = 255.0 / tf.cast(tf.where(flat, tf.ones_like(hi), hi - lo), tf.float64)
    offset = -tf.cast(lo, tf.float64) * scale
    levels = tf.range(256, dtype=tf.float64)
    lut = levels * scale[..., None] + offset[..., None]
    lut = tf.clip_by_value(tf.cast(lut, tf.int64), 0, 255)
    lut = tf.where(flat[..., None], tf.cast(levels, tf.int64), lut)
    return _channels_lut(images, lut)


def equalize(images):
    """`ImageOps.equalize(image)`: PIL's per-channel histogram equalisation.

    `step = (count - h[last non-empty bin]) // 255`, then
    `lut[i] = (step // 2 + sum_{k < i} h[k]) // step` (clipped to 255, as
    PIL's `point` does); a channel with one value or `step = 0` is unchanged.
    """
    histogram = _histograms(images)
    nonzero = histogram > 0
    last = 255 - tf.argmax(tf.cast(tf.reverse(nonzero, [-1]), tf.int32), axis=-1)
    last_count = tf.gather(histogram, last, batch_dims=2)
    step = (tf.reduce_sum(histogram, axis=-1) - last_count) // 255
    identity = (tf.reduce_sum(tf.cast(nonzero, tf.int32), axis=-1) <= 1) | (step == 0)
    safe_step = tf.where(identity, tf.ones_like(step), step)
    cumulative = tf.cumsum(histogram, axis=-1, exclusive=True)
    lut = tf.minimum((safe_step[..., None] // 2 + cumulative) // safe_step[..., None], 255)
    lut = tf.where(identity[..., None], tf.range(256, dtype=tf.int64), lut)
    return _channels_lut(images, lut)


@functools.cache
def _keras_op(name):
    """The Keras core layer whose `transform_images` computes op `name`, made on first use (not at import)."""
    if name == "posterize":
        return keras.layers.RandomPosterization(factor=(1, 8), value_range=(0, 255), dtype="float32")
    if name == "solarize":
        return keras.layers.Solarization(value_range=(0, 255), dtype="float32")
    return keras.layers.RandomTranslation(0.0, 0.0, fill_mode="constant", interpolation="nearest", fill_value=0.0,
                                          dtype="float32")


def posterize(images, bits):
    """`ImageOps.posterize(image, bits)`: keeps the `bits` high bits (1..8) of each value.

    Keras core `RandomPosterization.transform_images` with a per-sample shift
    `8 - bits`, the same as PIL's table `i & ~(2 ** (8 - bits) - 1)`.
    """
    shift = 8 - tf.cast(bits, tf.uint8)
    return _keras_op("posterize").transform_images(images, {"shift_factor": shift}, training=True)


def solarize(images, threshold):
    """`ImageOps.solarize(image, threshold)`: values `>= threshold` become `255 - value`.

    Keras core `Solarization.transform_images` (`where(x < t, x, 255 - x)`)
    with a per-sample threshold and no addition: PIL's table.

    Example:

    >>> solarize(tf.constant([[[[10.0, 200.0, 128.0]]]]), [128]).numpy()[0, 0, 0]
    array([ 10.,  55., 127.], dtype=float32)
    """
    threshold = tf.reshape(tf.cast(threshold, tf.float32), [-1, 1, 1, 1])
    transformation = {"thresholds": threshold, "additions": tf.zeros_like(threshold)}
    return _keras_op("solarize").transform_images(images, transformation, training=True)


def blend(degenerate, images, factor):
    """`Image.blend(degenerate, images, factor)` for `factor` in [0, 1] (`[N]`).

    PIL: `(UINT8)(d + factor * (x - d))` in float32, i.e. truncated.
    """
    factor = tf.reshape(tf.cast(factor, tf.float32), [-1, 1, 1, 1])
    mixed = degenerate + factor * (images - degenerate)
    return tf.clip_by_value(tf.floor(mixed), 0.0, 255.0)


def luma(images):
    """PIL's `convert("L")`: `(19595 R + 38470 G + 7471 B + 0x8000) >> 16`, `[N, H, W, 1]`."""
    rgb = tf.cast(images, tf.int32)
    weighted = rgb[..., :1] * 19595 + rgb[..., 1:2] * 38470 + rgb[..., 2:3] * 7471
    return tf.cast(tf.bitwise.right_shift(weighted + 0x8000, 16), tf.float32)


def brightness(images, factor):
    """`ImageEnhance.Brightness(image).enhance(factor)`: a blend with black."""
    return blend(tf.zeros_like(images), images, factor)


def color(images, factor):
    """`ImageEnhance.Color(image).enhance(factor)`: a blend with the grey image."""
    grey = tf.broadcast_to(luma(images), tf.shape(images))
    return blend(grey, images, factor)


def contrast(images, factor):
    """`ImageEnhance.Contrast(image).enhance(factor)`: a blend with the mean grey level.

    The mean is `int(mean(L) + 0.5)` over the grey image, one per sample.
    """
    grey = luma(images)
    count = tf.cast(tf.reduce_prod(tf.shape(grey)[1:3]), tf.float64)
    mean = tf.reduce_sum(tf.cast(grey, tf.float64), axis=[1, 2, 3]) / count
    mean = tf.cast(tf.floor(mean + 0.5), tf.float32)
    degenerate = tf.ones_like(images) * tf.reshape(mean, [-1, 1, 1, 1])
    return blend(degenerate, images, factor)


def smooth(images):
    """PIL's `image.filter(ImageFilter.SMOOTH)`, in its float32 order of operations.

    Interior pixels: `0.5 + row(y+1) + row(y) + row(y-1)` with
    `row = (x[-1] * k0 + x[0] * k1) + x[+1] * k2` and `k = (1, 1, 1) / 13`
    (`(1, 5, 1) / 13` in the middle row), truncated; the one-pixel border is
    copied. Images smaller than 3x3 are returned unchanged, as PIL does.
    """
    side = tf.constant(1.0, tf.float32) / _SMOOTH_SCALE
    centre = tf.constant(_SMOOTH_CENTRE, tf.float32) / _SMOOTH_SCALE

    def row(rows, middle):
        left, mid, right = rows[:, :, :-2], rows[:, :, 1:-1], rows[:, :, 2:]
        return (left * side + mid * (centre if middle else side)) + right * side

    total = 0.5 + row(images[:, 2:], False)
    total = total + row(images[:, 1:-1], True)
    total = total + row(images[:, :-2], False)
    interior = tf.clip_by_value(tf.floor(total), 0.0, 255.0)
    shape = tf.shape(images)
    inside = tf.pad(
        tf.ones_like(interior, tf.bool), [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=False
    )
    padded = tf.pad(interior, [[0, 0], [1, 1], [1, 1], [0, 0]])
    filtered = tf.where(inside, padded, images)
    too_small = (shape[1] < 3) | (shape[2] < 3)
    return tf.cond(too_small, lambda: images, lambda: filtered)


def sharpness(images, factor):
    """`ImageEnhance.Sharpness(image).enhance(factor)`: a blend with `smooth(images)`."""
    return blend(smooth(images), images, factor)


def _fix(value):
    """Pillow's 16.16 fixed point `FLOOR(v * 65536.0 + 0.5)`, from float64."""
    return tf.cast(tf.floor(value * 65536.0 + 0.5), tf.int64)


def affine(images, matrix):
    """`Image.transform(size, AFFINE, matrix)`, nearest neighbour, black outside.

    `matrix` is `[N, 6]` float64 `(a, b, c, d, e, f)`: output pixel `(x, y)`
    reads input `(a x + b y + c, d x + e y + f)` at pixel centres, which
    Pillow evaluates in 16.16 fixed point (`affine_fixed`, used whenever the
    coordinates stay below 32768): `xin = (FIX(c + a/2 + b/2) + y FIX(b) +
    x FIX(a)) >> 16`. A pure translation by whole pixels takes Pillow's
    `ImagingScaleAffine` path instead, which gives the same integer shift.
    """
    matrix = tf.cast(matrix, tf.float64)
    a, b, c, d, e, f = tf.unstack(matrix, axis=1)
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    ys = tf.reshape(tf.range(height, dtype=tf.int64), [1, -1, 1])
    xs = tf.reshape(tf.range(width, dtype=tf.int64), [1, 1, -1])

    def source(p, q, r):
        start = tf.reshape(_fix(r + p * 0.5 + q * 0.5), [-1, 1, 1])
        return (start + ys * tf.reshape(_fix(q), [-1, 1, 1])
                + xs * tf.reshape(_fix(p), [-1, 1, 1])) // 65536

    x_in, y_in = source(a, b, c), source(d, e, f)
    valid = (x_in >= 0) & (x_in < tf.cast(width, tf.int64)) & (y_in >= 0) & (y_in < tf.cast(height, tf.int64))
    x_in = tf.clip_by_value(x_in, 0, tf.cast(width, tf.int64) - 1)
    y_in = tf.clip_by_value(y_in, 0, tf.cast(height, tf.int64) - 1)
    sample = tf.broadcast_to(tf.reshape(tf.range(shape[0], dtype=tf.int64), [-1, 1, 1]), tf.shape(x_in))
    gathered = tf.gather_nd(images, tf.stack([sample, y_in, x_in], axis=-1))
    return tf.where(valid[..., None], gathered, tf.zeros_like(gathered))


def _rotation_table():
    """`(cos, sin)` of `-radians(angle)` rounded to 15 digits, as `Image.rotate`, for angle 0..359."""
    rows = []
    for angle in range(360):
        radians = -math.radians(angle)
        rows.append((round(math.cos(radians), 15), round(math.sin(radians), 15)))
    return tf.constant(rows, tf.float64)


_ROTATION = _rotation_table()


def rotate(images, degrees):
    """`image.rotate(degrees)` for integer `degrees` (`[N]`): counter-clockwise about the centre.

    Pillow's matrix (`cos`, `sin` rounded to 15 digits, centre `(w/2, h/2)`),
    then `affine`. For 90, 180 and 270 degrees Pillow transposes the image
    instead, which this function does not reproduce (RandAugment rotates by
    at most 30 degrees); 0 degrees is the identity in both.
    """
    angle = tf.math.floormod(tf.cast(degrees, tf.int32), 360)
    cos, sin = tf.unstack(tf.gather(_ROTATION, angle), axis=1)
    shape = tf.shape(images)
    cx = tf.cast(shape[2], tf.float64) / 2.0
    cy = tf.cast(shape[1], tf.float64) / 2.0
    c = (cos * -cx + sin * -cy + 0.0) + cx
    f = (-sin * -cx + cos * -cy + 0.0) + cy
    return affine(images, tf.stack([cos, sin, c, -sin, cos, f], axis=1))


def shear_x(images, shear):
    """`image.transform(size, AFFINE, (1, shear, 0, 0, 1, 0))` (`shear` `[N]`, float)."""
    shear = tf.cast(shear, tf.float64)
    one, zero = tf.ones_like(shear), tf.zeros_like(shear)
    return affine(images, tf.stack([one, shear, zero, zero, one, zero], axis=1))


def shear_y(images, shear):
    """`image.transform(size, AFFINE, (1, 0, 0, shear, 1, 0))` (`shear` `[N]`, float)."""
    shear = tf.cast(shear, tf.float64)
    one, zero = tf.ones_like(shear), tf.zeros_like(shear)
    return affine(images, tf.stack([one, zero, zero, shear, one, zero], axis=1))


def _translate(images, dx, dy):
    """Keras core `RandomTranslation.transform_images`: content moves by `(dx, dy)` whole pixels."""
    translations = tf.stack([tf.cast(dx, tf.float32), tf.cast(dy, tf.float32)], axis=1)
    transformation = {"translations": translations, "input_shape": tf.shape(images)}
    return _keras_op("translate").transform_images(images, transformation, training=True)


def translate_x(images, pixels):
    """`image.transform(size, AFFINE, (1, 0, pixels, 0, 1, 0))`: content moves left by `pixels` (ints).

    Keras core `RandomTranslation` (nearest, black fill) shifting by `-pixels`:
    for whole pixels it samples exactly the pixels Pillow does.
    """
    pixels = tf.cast(pixels, tf.float32)
    return _translate(images, -pixels, tf.zeros_like(pixels))


def translate_y(images, pixels):
    """`image.transform(size, AFFINE, (1, 0, 0, 0, 1, pixels))`: content moves up by `pixels` (ints).

    Keras core `RandomTranslation`, as `translate_x`.
    """
    pixels = tf.cast(pixels, tf.float32)
    return _translate(images, tf.zeros_like(pixels), -pixels)
