"""Tests for `myol_keras.augment.color_jitter.ColorJitter` (docs/METHODS.md §1.6, docs/DECISIONS.md §4.4)."""

import numpy as np
import pytest
import tensorflow as tf

from augment_cases import (
    PIXEL_A,
    PURE_FUNCTIONS,
    TORCHVISION_CASES,
    WHITE,
    assert_config_round_trip,
    pixel_image,
)
from myol_keras import augment

IDENTITY = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}


def _fixed_transformation(batch=1, order=(0, 1, 2, 3), **factors):
    values = dict(IDENTITY, **factors)
    transformation = {
        name: tf.fill([batch], float(value)) for name, value in values.items()
    }
    transformation["order"] = tf.tile(
        tf.constant([order], tf.int32), [batch, 1]
    )
    return transformation


@pytest.mark.parametrize("op,factor,pixels,expected", TORCHVISION_CASES)
@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (2, 0, 3, 1)])
def test_transform_images_single_op_matches_torchvision(
    op, factor, pixels, expected, order
):
    jitter = augment.ColorJitter()
    transformation = _fixed_transformation(order=order, **{op: factor})
    out = jitter.transform_images(pixel_image(*pixels), transformation)
    np.testing.assert_allclose(out[0, 0, 0], expected, atol=1e-5)


def test_transform_images_identity_factors_leave_images_unchanged():
    images = tf.random.uniform([4, 8, 8, 3], seed=1)
    out = augment.ColorJitter().transform_images(
        images, _fixed_transformation(batch=4)
    )
    np.testing.assert_array_equal(out, images)


def test_order_is_honoured_per_sample():
    image = pixel_image(PIXEL_A, WHITE)
    images = tf.concat([image, image], axis=0)
    factors = {"brightness": 1.4, "contrast": 0.6}
    transformation = _fixed_transformation(batch=2, **factors)
    transformation["order"] = tf.constant([[0, 1, 2, 3], [1, 0, 2, 3]])
    out = augment.ColorJitter().transform_images(images, transformation)
    brightness_first = augment.adjust_contrast(
        augment.adjust_brightness(image, [1.4]), [0.6]
    )
    contrast_first = augment.adjust_brightness(
        augment.adjust_contrast(image, [0.6]), [1.4]
    )
    np.testing.assert_allclose(out[0], brightness_first[0], atol=1e-6)
    np.testing.assert_allclose(out[1], contrast_first[0], atol=1e-6)
    assert np.abs(out[0] - out[1]).max() > 0.05


def test_all_four_ops_in_order_match_composed_pure_functions():
    images = tf.random.uniform([3, 6, 6, 3], seed=2)
    factors = {"brightness": 1.3, "contrast": 0.7, "saturation": 1.2, "hue": 0.08}
    orders = [(3, 1, 0, 2), (0, 1, 2, 3), (2, 3, 1, 0)]
    transformation = _fixed_transformation(batch=3, **factors)
    transformation["order"] = tf.constant(orders, tf.int32)
    out = augment.ColorJitter().transform_images(images, transformation)
    names = ["brightness", "contrast", "saturation", "hue"]
    for i, order in enumerate(orders):
        expected = images[i : i + 1]
        for op in order:
            expected = PURE_FUNCTIONS[names[op]](expected, [factors[names[op]]])
        np.testing.assert_allclose(out[i], expected[0], atol=1e-5)


def test_random_order_is_a_per_sample_permutation_that_varies():
    jitter = augment.ColorJitter(seed=0)
    images = tf.zeros([64, 4, 4, 3])
    order = jitter.get_random_transformation(images)["order"].numpy()
    assert order.shape == (64, 4)
    np.testing.assert_array_equal(np.sort(order, axis=1), [[0, 1, 2, 3]] * 64)
    assert len({tuple(row) for row in order}) > 10
    again = jitter.get_random_transformation(images)["order"].numpy()
    assert not np.array_equal(order, again)


def test_random_factors_are_per_sample_and_in_range():
    jitter = augment.ColorJitter(0.4, 0.4, 0.4, 0.1, seed=0)
    transformation = jitter.get_random_transformation(tf.zeros([256, 2, 2, 3]))
    for name in ("brightness", "contrast", "saturation"):
        values = transformation[name].numpy()
        assert values.min() >= 0.6 and values.max() <= 1.4
        assert values.std() > 0.1
    hue = transformation["hue"].numpy()
    assert hue.min() >= -0.1 and hue.max() <= 0.1 and hue.std() > 0.02


def test_zero_strength_disables_op():
    jitter = augment.ColorJitter(brightness=0.0, contrast=0.9, hue=0.0, seed=0)
    transformation = jitter.get_random_transformation(tf.zeros([32, 2, 2, 3]))
    np.testing.assert_array_equal(transformation["brightness"], np.ones(32))
    np.testing.assert_array_equal(transformation["hue"], np.zeros(32))
    # Lower bound clipped at 0 for strengths above 1.
    assert transformation["contrast"].numpy().min() >= 0.1
    images = tf.random.uniform([4, 8, 8, 3], seed=3)
    disabled = augment.ColorJitter(0.0, 0.0, 0.0, 0.0)
    np.testing.assert_array_equal(disabled(images), images)


def test_color_jitter_calls_differ_and_unbatched_works():
    jitter = augment.ColorJitter(seed=1)
    images = tf.random.uniform([8, 8, 8, 3], seed=4)
    first, second = jitter(images), jitter(images)
    assert first.shape == images.shape
    assert not np.allclose(first, second)
    per_sample = [np.abs(first[i] - images[i]).mean() for i in range(8)]
    assert len(set(np.round(per_sample, 6))) == 8
    single = jitter(images[0])
    assert single.shape == (8, 8, 3)
    assert single.numpy().min() >= 0.0 and single.numpy().max() <= 1.0


def test_color_jitter_training_false_is_identity():
    images = tf.random.uniform([2, 4, 4, 3], seed=5)
    np.testing.assert_array_equal(
        augment.ColorJitter()(images, training=False), images
    )


def test_seeded_call_is_a_pure_function_of_the_seed():
    jitter = augment.ColorJitter(seed=0)
    images = tf.random.uniform([6, 8, 8, 3], seed=18)
    a = jitter.seeded_call(images, tf.constant([1, 2], tf.int64))
    b = jitter.seeded_call(images, tf.constant([1, 2], tf.int64))
    c = jitter.seeded_call(images, tf.constant([1, 3], tf.int64))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_color_jitter_alone_in_tf_data_differs_between_epochs():
    images = tf.random.uniform([8, 8, 8, 3], seed=13)
    ds = tf.data.Dataset.from_tensors(images).map(augment.ColorJitter())
    first, second = next(iter(ds)), next(iter(ds))
    assert not np.allclose(first, second)


@pytest.mark.parametrize("batch", [1, 13, 16])
def test_color_jitter_xla_path_matches_plain_graph_ops(batch):
    # The XLA path pads the batch to a power of two (identity on the padding).
    images = tf.random.stateless_uniform([batch, 8, 8, 3], seed=[3, 4])
    fast = augment.ColorJitter(0.4, 0.4, 0.4, 0.1, seed=1)
    plain = augment.ColorJitter(0.4, 0.4, 0.4, 0.1, seed=1, jit_compile=False)
    params = fast.get_random_transformation(images)
    np.testing.assert_allclose(
        fast.transform_images(images, params).numpy(),
        plain.transform_images(images, params).numpy(),
        atol=1e-5,
    )
    assert fast.get_config()["jit_compile"] is True
    assert augment.ColorJitter.from_config(plain.get_config()).jit_compile is False


def test_config_round_trip():
    layer = augment.ColorJitter(0.1, 0.2, 0.3, 0.05, seed=1)
    revived = assert_config_round_trip(layer, tf.random.uniform([2, 8, 8, 3]))
    assert (revived.contrast, revived.seed) == (0.2, 1)


@pytest.mark.parametrize("kwargs,message", [
    ({"seed": 1.5}, r"Expected `seed` to be None or an int. Received: seed=1.5"),
    ({"brightness": -0.1},
     r"Expected `brightness` to be a float >= 0. Received: brightness=-0.1"),
    ({"saturation": "x"}, r"Received: saturation=x"),
    ({"hue": 0.6}, r"Expected `hue` to be a float in \[0, 0.5\]. Received: hue=0.6"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        augment.ColorJitter(**kwargs)


def test_bad_image_rank_raises_value_error():
    with pytest.raises(ValueError, match=r"Expected images of rank 3.*Received"):
        augment.ColorJitter().get_random_transformation(tf.zeros([2, 2]))
