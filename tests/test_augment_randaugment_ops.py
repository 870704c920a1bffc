"""Tests for `myol_keras.augment.randaugment_ops`: each op equals Pillow's, pixel for pixel.

CLSA's RandAugment (docs/METHODS.md §2.10) calls PIL's `ImageOps` / `ImageEnhance` /
`Image.transform` on uint8 images. Our ops reproduce Pillow's integer
arithmetic (float32 blends truncated, fixed-point luma, the float32 SMOOTH
filter, 16.16 fixed-point affine sampling), so the tolerance is 0 grey levels
for every op at every level the CLSA code uses.
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from myol_keras.augment import randaugment_ops as ops


def _images():
    rng = np.random.default_rng(27)
    noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    odd = rng.integers(40, 200, (17, 23, 3)).astype(np.uint8)  # not square, narrow range
    ramp = np.clip(np.cumsum(rng.integers(0, 3, (32, 32, 3)), axis=1) + 50, 0, 255).astype(np.uint8)
    flat = np.full((8, 8, 3), 77, np.uint8)  # one value per channel
    return [noise, odd, ramp, flat]


IMAGES = _images()
LEVELS = range(1, 10)
ENHANCE = [v * 0.9 / 10 + 0.05 for v in LEVELS]  # the code's factors 0.14 .. 0.86


def _assert_matches_pil(ours, pil):
    for image in IMAGES:
        out = ours(tf.constant(image[None], tf.float32)).numpy()[0]
        expected = np.asarray(pil(Image.fromarray(image)), np.float32)
        np.testing.assert_array_equal(out, expected)


def test_autocontrast_matches_pil():
    _assert_matches_pil(ops.autocontrast, ImageOps.autocontrast)


def test_equalize_matches_pil():
    _assert_matches_pil(ops.equalize, ImageOps.equalize)


@pytest.mark.parametrize("factor", ENHANCE)
@pytest.mark.parametrize(
    "name,enhancer",
    [
        ("brightness", ImageEnhance.Brightness),
        ("color", ImageEnhance.Color),
        ("contrast", ImageEnhance.Contrast),
        ("sharpness", ImageEnhance.Sharpness),
    ],
)
def test_enhance_matches_pil(name, enhancer, factor):
    _assert_matches_pil(
        lambda x: getattr(ops, name)(x, [factor]), lambda im: enhancer(im).enhance(factor)
    )


@pytest.mark.parametrize("bits", [1, 4, 5, 6, 7, 8])
def test_posterize_matches_pil(bits):
    _assert_matches_pil(lambda x: ops.posterize(x, [bits]), lambda im: ImageOps.posterize(im, bits))


@pytest.mark.parametrize("threshold", [256 - int(v * 256 / 10) for v in LEVELS] + [0, 256])
def test_solarize_matches_pil(threshold):
    _assert_matches_pil(
        lambda x: ops.solarize(x, [threshold]), lambda im: ImageOps.solarize(im, threshold)
    )


@pytest.mark.parametrize("degrees", [s * 3 * v for v in LEVELS for s in (1, -1)] + [0, 1, 30, -30, 45])
def test_rotate_matches_pil(degrees):
    _assert_matches_pil(lambda x: ops.rotate(x, [degrees]), lambda im: im.rotate(degrees))


@pytest.mark.parametrize("shear", [s * v * 0.3 / 10 for v in LEVELS for s in (1, -1)])
def test_shear_matches_pil(shear):
    _assert_matches_pil(
        lambda x: ops.shear_x(x, [shear]),
        lambda im: im.transform(im.size, Image.AFFINE, (1, shear, 0, 0, 1, 0)),
    )
    _assert_matches_pil(
        lambda x: ops.shear_y(x, [shear]),
        lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, shear, 1, 0)),
    )


@pytest.mark.parametrize("pixels", [-9, -3, -1, 0, 1, 4, 8, 40])
def test_translate_matches_pil(pixels):
    _assert_matches_pil(
        lambda x: ops.translate_x(x, [pixels]),
        lambda im: im.transform(im.size, Image.AFFINE, (1, 0, pixels, 0, 1, 0)),
    )
    _assert_matches_pil(
        lambda x: ops.translate_y(x, [pixels]),
        lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, pixels)),
    )


def test_parameters_are_per_sample():
    image = tf.constant(np.stack([IMAGES[0]] * 3), tf.float32)
    out = ops.rotate(image, [0, 10, -10]).numpy()
    np.testing.assert_array_equal(out[0], IMAGES[0])
    for i, degrees in ((1, 10), (2, -10)):
        np.testing.assert_array_equal(out[i], np.asarray(Image.fromarray(IMAGES[0]).rotate(degrees)))
    out = ops.brightness(image, [1.0, 0.5, 0.0]).numpy()
    np.testing.assert_array_equal(out[0], IMAGES[0])
    assert out[2].max() == 0.0


def test_histogram_ops_are_per_sample_and_per_channel():
    batch = tf.constant(np.stack([IMAGES[0], IMAGES[2]]), tf.float32)
    for op, pil in ((ops.autocontrast, ImageOps.autocontrast), (ops.equalize, ImageOps.equalize)):
        out = op(batch).numpy()
        for i, image in enumerate((IMAGES[0], IMAGES[2])):
            np.testing.assert_array_equal(out[i], np.asarray(pil(Image.fromarray(image))))


def test_sharpness_leaves_images_smaller_than_the_kernel():
    tiny = tf.constant(IMAGES[0][None, :2, :2], tf.float32)
    np.testing.assert_array_equal(ops.sharpness(tiny, [0.2]), tiny)


def test_empty_batch_is_fine():
    empty = tf.zeros([0, 8, 8, 3])
    for op in (ops.autocontrast, ops.equalize):
        assert op(empty).shape == (0, 8, 8, 3)
    assert ops.rotate(empty, tf.zeros([0], tf.int32)).shape == (0, 8, 8, 3)
    assert ops.contrast(empty, tf.zeros([0])).shape == (0, 8, 8, 3)
