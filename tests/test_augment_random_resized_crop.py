"""Tests for `myol_keras.augment.random_resized_crop.RandomResizedCrop` (torchvision semantics)."""

import numpy as np
import pytest
import tensorflow as tf

from augment_cases import assert_config_round_trip
from myol_keras import augment


def test_random_resized_crop_shapes():
    crop = augment.RandomResizedCrop(16, seed=0)
    assert crop(tf.random.uniform([5, 40, 30, 3])).shape == (5, 16, 16, 3)
    assert crop(tf.random.uniform([40, 30, 3])).shape == (16, 16, 3)
    assert crop.compute_output_shape((None, 40, 30, 3)) == (None, 16, 16, 3)


@pytest.mark.parametrize("size,tolerance", [(224, 1e-2), (32, None)])
def test_random_resized_crop_boxes_respect_scale_and_ratio(size, tolerance):
    crop = augment.RandomResizedCrop(8, scale=(0.2, 1.0), seed=0)
    transformation = crop.get_random_transformation(
        tf.zeros([2000, size, size, 3])
    )
    boxes = transformation["boxes"].numpy().astype(np.float64)
    fallback = transformation["fallback"].numpy()
    top, left, h, w = boxes[~fallback].T
    assert len(top) > 1900
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= size).all() and (left + w <= size).all()
    if tolerance is not None:
        area, aspect = h * w / size**2, w / h
        assert area.min() >= 0.2 - tolerance and area.max() <= 1.0
        assert aspect.min() >= 0.75 - tolerance
        assert aspect.max() <= 4 / 3 + tolerance
    else:
        # Small images: w and h are rounded, so allow half a pixel each.
        assert ((h + 0.5) * (w + 0.5) >= 0.2 * size**2).all()
        assert ((w - 0.5) / (h + 0.5) <= 4 / 3).all()
        assert ((w + 0.5) / (h - 0.5) >= 3 / 4).all()
    # Per-sample: many different boxes in one batch.
    assert len({tuple(b) for b in boxes}) > 500


def test_random_resized_crop_falls_back_to_centre_crop_clamped_to_ratio():
    crop = augment.RandomResizedCrop(4, scale=(0.9, 1.0), seed=0)
    transformation = crop.get_random_transformation(tf.zeros([3, 10, 100, 3]))
    assert transformation["fallback"].numpy().all()
    # in_ratio = 10 > 4/3: h = 10, w = round(10 * 4/3) = 13, centred.
    np.testing.assert_array_equal(transformation["boxes"], [[0, 43, 10, 13]] * 3)


def test_random_resized_crop_full_box_is_identity():
    images = tf.random.uniform([3, 12, 12, 3], seed=6)
    crop = augment.RandomResizedCrop(12, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(crop(images), images, atol=1e-6)


def test_random_resized_crop_resizes_with_half_pixel_bilinear():
    images = tf.random.uniform([1, 20, 20, 3], seed=7)
    crop = augment.RandomResizedCrop(5)
    transformation = {"boxes": tf.constant([[2, 4, 10, 15]]), "fallback": None}
    out = crop.transform_images(images, transformation)
    expected = tf.image.resize(images[:, 2:12, 4:19], (5, 5), method="bilinear")
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_random_resized_crop_differs_per_sample_and_per_call():
    crop = augment.RandomResizedCrop(8, seed=1)
    image = tf.random.uniform([1, 32, 32, 3], seed=8)
    images = tf.tile(image, [16, 1, 1, 1])
    first = crop(images).numpy()
    assert len({first[i].tobytes() for i in range(16)}) == 16
    assert not np.allclose(first, crop(images))


def test_same_seed_reproduces_first_draw():
    images = tf.random.uniform([4, 16, 16, 3], seed=9)
    a = augment.RandomResizedCrop(8, seed=3)(images)
    b = augment.RandomResizedCrop(8, seed=np.int64(3))(images)
    np.testing.assert_array_equal(a, b)


def test_seeded_call_draws_its_boxes_from_the_seed():
    images = tf.random.uniform([4, 16, 16, 3], seed=19)
    crop = augment.RandomResizedCrop(8, seed=0)
    seed = tf.constant([4, 5], tf.int64)
    expected = crop.transform_images(
        images, crop.get_random_transformation(images, seed=seed)
    )
    np.testing.assert_array_equal(crop.seeded_call(images, seed), expected)
    np.testing.assert_array_equal(crop.seeded_call(images, seed), expected)


def test_random_resized_crop_inference_resizes_whole_image():
    images = tf.random.uniform([2, 16, 16, 3], seed=17)
    out = augment.RandomResizedCrop(8)(images, training=False)
    np.testing.assert_allclose(
        out, tf.image.resize(images, (8, 8), method="bilinear"), atol=1e-5
    )


def test_config_round_trip():
    layer = augment.RandomResizedCrop(24, scale=(0.3, 0.9), ratio=(0.5, 2.0), seed=4)
    revived = assert_config_round_trip(layer, tf.random.uniform([2, 24, 24, 3]))
    assert (revived.scale, revived.ratio, revived.seed) == ((0.3, 0.9), (0.5, 2.0), 4)


@pytest.mark.parametrize("kwargs,message", [
    ({"size": 0}, r"Expected `size` to be an int >= 1. Received: size=0"),
    ({"size": 8.0}, r"Received: size=8.0"),
    ({"size": 8, "scale": (0.5, 0.2)},
     r"Expected `scale` to be a pair 0 < a <= b <= 1. Received: scale=\(0.5, 0.2\)"),
    ({"size": 8, "scale": (0.0, 1.0)}, r"`scale`.*Received: scale=\(0.0, 1.0\)"),
    ({"size": 8, "scale": (0.2, 1.5)}, r"`scale`.*Received: scale=\(0.2, 1.5\)"),
    ({"size": 8, "scale": 0.5}, r"`scale`.*Received: scale=0.5"),
    ({"size": 8, "ratio": (2.0, 1.0)},
     r"Expected `ratio` to be a pair 0 < a <= b. Received: ratio="),
    ({"size": 8, "seed": "a"}, r"Expected `seed` to be None or an int. Received: seed=a"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        augment.RandomResizedCrop(**kwargs)
