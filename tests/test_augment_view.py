"""Tests for `myol_keras.augment.view`: applying recipes, seeded or not, in `tf.data`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from augment_cases import CIFAR_MEAN, CIFAR_STD, uint8_images
from myol_keras import augment


def _two_view_dataset(images, batch_size=None, seed=None):
    recipe = augment.myol_view_recipe(16, CIFAR_MEAN, CIFAR_STD, seed=seed)
    ds = tf.data.Dataset.from_tensor_slices(images)
    if batch_size:
        ds = ds.batch(batch_size)
    return ds.map(
        augment.make_view_fn([recipe, recipe]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


@pytest.mark.parametrize("batch_size", [8, None])
def test_two_view_recipe_in_tf_data_over_epochs(batch_size):
    images = uint8_images(16, size=24)
    ds = _two_view_dataset(images, batch_size=batch_size, seed=0)
    epochs = []
    for _ in range(2):
        views = [np.stack(v) for v in zip(*[tuple(e) for e in ds])]
        if batch_size:
            views = [v.reshape(-1, 16, 16, 3) for v in views]
        for view in views:
            assert view.shape == (16, 16, 16, 3) and view.dtype == np.float32
        assert not np.allclose(views[0], views[1])
        epochs.append(views[0])
    assert not np.allclose(epochs[0], epochs[1])
    element = next(iter(ds))
    assert all(view.dtype == tf.float32 for view in element)


def test_seeded_views_are_a_pure_function_of_the_seed():
    recipe = augment.myol_view_recipe(8, CIFAR_MEAN, CIFAR_STD, seed=1)
    view_fn = augment.make_view_fn([recipe, recipe])
    images = uint8_images(4, size=12)
    first = view_fn(images, tf.constant([5, 0], tf.int64))
    again = view_fn(images, tf.constant([5, 0], tf.int64))
    other = view_fn(images, tf.constant([6, 0], tf.int64))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], first[1])  # view i uses fold_in(seed, i)
    assert not np.allclose(first[0], other[0])


def test_stateless_core_flip_and_grayscale_follow_the_seed_per_sample():
    images = tf.random.uniform([64, 4, 4, 3], seed=21)
    seed = tf.constant([2, 3], tf.int64)
    flip = keras.layers.RandomFlip("horizontal", dtype="float32")
    flipped = augment.stateless_layer_call(flip, images, seed).numpy()
    np.testing.assert_array_equal(augment.stateless_layer_call(flip, images, seed), flipped)
    is_flipped = np.all(np.isclose(flipped, images.numpy()[:, :, ::-1]), axis=(1, 2, 3))
    assert 0.25 < is_flipped.mean() < 0.75
    gray = keras.layers.RandomGrayscale(factor=0.5, dtype="float32")
    out = augment.stateless_layer_call(gray, images, seed).numpy()
    np.testing.assert_array_equal(augment.stateless_layer_call(gray, images, seed), out)
    is_gray = np.all(out[..., :1] == out, axis=(1, 2, 3))
    assert 0.25 < is_gray.mean() < 0.75
    assert augment.stateless_layer_call(gray, images[0], seed).shape == (4, 4, 3)


def test_stateless_layer_call_runs_deterministic_layers_as_they_are():
    images = tf.random.uniform([2, 4, 4, 3], seed=22)
    layer = augment.Normalize((0.5,) * 3, (0.25,) * 3)
    np.testing.assert_array_equal(
        augment.stateless_layer_call(layer, images, [1, 2]), layer(images)
    )


@pytest.mark.parametrize("factory,kwargs,message", [
    (augment.make_view_fn, {"recipes": []}, r"Expected `recipes` to be a non-empty list"),
    (augment.make_view_fn, {"recipes": [augment.ToFloat()]},
     r"Expected `recipes` to be a non-empty list"),
    (augment.apply_recipe, {"layers": "x", "images": tf.zeros([1, 2, 2, 3])},
     r"Expected `layers` to be a list of Keras layers"),
])
def test_bad_arguments_raise_value_error(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)
