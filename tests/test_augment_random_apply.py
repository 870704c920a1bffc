"""Tests for `myol_keras.augment.random_apply.RandomApply`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from augment_cases import assert_config_round_trip
from myol_keras import augment


def _doubler():
    return augment.Normalize((0.0, 0.0, 0.0), (0.5, 0.5, 0.5))


def test_random_apply_rate_zero_and_one():
    images = tf.random.uniform([16, 4, 4, 3], seed=10)
    np.testing.assert_array_equal(
        augment.RandomApply(_doubler(), rate=0.0)(images), images
    )
    np.testing.assert_allclose(
        augment.RandomApply(_doubler(), rate=1.0)(images), images * 2.0
    )


def test_random_apply_fraction_is_rate_per_sample():
    images = tf.ones([1000, 2, 2, 3])
    out = augment.RandomApply(_doubler(), rate=0.8, seed=0)(images).numpy()
    applied = out[:, 0, 0, 0] == 2.0
    assert np.isin(out[:, 0, 0, 0], [1.0, 2.0]).all()
    assert abs(applied.mean() - 0.8) < 0.05


def test_random_apply_with_no_sample_selected_is_identity():
    images = tf.random.uniform([4, 8, 8, 3], seed=16)
    layer = augment.RandomApply(augment.ColorJitter(), rate=1e-9, seed=0)
    np.testing.assert_array_equal(layer(images), images)
    np.testing.assert_array_equal(layer(images, training=False), images)


def test_random_apply_unbatched_is_all_or_nothing():
    image = tf.ones([2, 2, 3])
    layer = augment.RandomApply(_doubler(), rate=0.5, seed=0)
    values = {float(layer(image).numpy().mean()) for _ in range(20)}
    assert values == {1.0, 2.0}


def test_random_apply_calls_differ():
    layer = augment.RandomApply(_doubler(), rate=0.5, seed=0)
    images = tf.ones([64, 1, 1, 3])
    assert not np.array_equal(layer(images), layer(images))


def test_transform_images_applies_the_layer_where_the_mask_holds():
    layer = augment.RandomApply(_doubler(), rate=0.5)
    images = tf.ones([4, 1, 1, 3])
    mask = tf.constant([True, False, False, True])
    out = layer.transform_images(images, mask).numpy()[:, 0, 0, 0]
    np.testing.assert_array_equal(out, [2.0, 1.0, 1.0, 2.0])
    np.testing.assert_array_equal(layer.transform_images(images, mask, training=False), images)


@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_seeded_call_mask_and_inner_layer_follow_the_seed(rate):
    layer = augment.RandomApply(augment.ColorJitter(seed=1), rate=rate, seed=2)
    images = tf.random.uniform([32, 4, 4, 3], seed=20)
    seed = tf.constant([3, 9], tf.int64)
    first = layer.seeded_call(images, seed).numpy()
    np.testing.assert_array_equal(layer.seeded_call(images, seed), first)
    changed = np.abs(first - images.numpy()).max(axis=(1, 2, 3)) > 0
    assert changed.mean() == pytest.approx(rate, abs=0.25)
    if rate == 0.5:
        other = layer.seeded_call(images, tf.constant([3, 10], tf.int64))
        assert not np.allclose(other, first)


def test_seeded_call_does_not_shadow_keras_stateless_call():
    # Keras' Layer.stateless_call(trainable_variables, non_trainable_variables, ...)
    # is another API; the seeded call has its own name.
    assert augment.RandomApply.stateless_call is keras.layers.Layer.stateless_call


def test_config_round_trip_restores_inner_layer():
    layer = augment.RandomApply(
        augment.ColorJitter(0.1, 0.2, 0.3, 0.05, seed=1), 0.3, seed=2
    )
    revived = assert_config_round_trip(layer, tf.random.uniform([2, 8, 8, 3]))
    restored = augment.RandomApply.from_config(layer.get_config())
    for copy in (revived, restored):
        assert isinstance(copy.layer, augment.ColorJitter)
        assert copy.layer.saturation == 0.3 and copy.layer.seed == 1
        assert (copy.rate, copy.seed) == (0.3, 2)


@pytest.mark.parametrize("kwargs,message", [
    ({"layer": "not a layer"}, r"Expected `layer` to be a `keras.layers.Layer`"),
    ({"layer": augment.ToFloat(), "rate": 1.5},
     r"Expected `rate` to be a float in \[0, 1\]. Received: rate=1.5"),
    ({"layer": augment.ToFloat(), "seed": 0.5},
     r"Expected `seed` to be None or an int. Received: seed=0.5"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        augment.RandomApply(**kwargs)
