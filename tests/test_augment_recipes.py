"""Tests for `myol_keras.augment.recipes`: the view recipes (docs/METHODS.md §1.6)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from augment_cases import CIFAR_MEAN, CIFAR_STD, uint8_images
from myol_keras import augment
from myol_keras.augment import recipes


def test_view_recipe_layers_and_core_layer_behaviour():
    recipe = augment.myol_view_recipe(32, CIFAR_MEAN, CIFAR_STD, seed=0)
    types = [type(layer) for layer in recipe]
    assert types == [
        augment.ToFloat,
        augment.RandomResizedCrop,
        keras.layers.RandomFlip,
        augment.RandomApply,
        keras.layers.RandomGrayscale,
        augment.Normalize,
    ]
    assert recipe[1].scale == (0.2, 1.0) and recipe[3].rate == 0.8
    assert isinstance(recipe[3].layer, augment.ColorJitter)
    # Core RandomGrayscale keeps 3 channels and is per sample.
    images = tf.random.uniform([200, 4, 4, 3], seed=12)
    gray = recipe[4](images).numpy()
    assert gray.shape == (200, 4, 4, 3)
    is_gray = np.all(gray[..., :1] == gray, axis=(1, 2, 3))
    assert 0.1 < is_gray.mean() < 0.3
    # Core RandomFlip is per sample.
    flipped = recipe[2](images).numpy()
    is_flipped = np.all(
        np.isclose(flipped, images.numpy()[:, :, ::-1]), axis=(1, 2, 3)
    )
    assert 0.3 < is_flipped.mean() < 0.7


def test_view_recipe_seed_reproduces_and_distinguishes():
    images = uint8_images(4, size=16)

    def view(seed):
        recipe = augment.myol_view_recipe(8, CIFAR_MEAN, CIFAR_STD, seed=seed)
        return augment.apply_recipe(recipe, images).numpy()

    np.testing.assert_array_equal(view(5), view(5))
    assert not np.allclose(view(5), view(6))


def test_layer_seeds_are_distinct_and_in_int32_range():
    seeds = [recipes.layer_seed(seed, offset) for seed in range(3) for offset in range(5)]
    assert len(set(seeds)) == 15 and all(0 <= s < 2**31 - 1 for s in seeds)
    assert recipes.layer_seed(None, 3) is None
    assert recipes.layer_seed(np.int64(2), 1) == recipes.layer_seed(2, 1)
    recipe = augment.myol_view_recipe(8, CIFAR_MEAN, CIFAR_STD, seed=7)
    assert recipe[1].seed == recipes.layer_seed(7, 0)
    assert recipe[3].layer.seed == recipes.layer_seed(7, 2)


def test_eval_recipe_resizes_only_when_needed():
    images = uint8_images(2, size=32)
    same = augment.apply_recipe(augment.eval_recipe(32, (0,) * 3, (1,) * 3), images)
    np.testing.assert_allclose(same, images / 255.0, atol=1e-6)
    resized = augment.apply_recipe(
        augment.eval_recipe(24, CIFAR_MEAN, CIFAR_STD), images
    )
    assert resized.shape == (2, 24, 24, 3) and resized.dtype == tf.float32


def test_recipe_stays_float32_under_mixed_precision():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        recipe = augment.myol_view_recipe(8, CIFAR_MEAN, CIFAR_STD)
        out = augment.apply_recipe(recipe, uint8_images(2, size=8))
    finally:
        keras.config.set_dtype_policy(policy)
    assert out.dtype == tf.float32


@pytest.mark.parametrize("factory,kwargs,message", [
    (augment.myol_view_recipe,
     {"image_size": 0, "mean": CIFAR_MEAN, "std": CIFAR_STD},
     r"Expected `image_size` to be an int >= 1. Received: image_size=0"),
    (augment.eval_recipe, {"image_size": 32, "mean": CIFAR_MEAN, "std": (1, 1)},
     r"Received: std=\(1, 1\)"),
])
def test_bad_arguments_raise_value_error(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)
