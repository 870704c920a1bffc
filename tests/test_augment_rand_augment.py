"""Tests for `myol_keras.augment.rand_augment.RandAugment` and `clsa_strong_recipe` (docs/METHODS.md §2.10)."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from myol_keras import augment
from myol_keras.augment import RandAugment, apply_recipe, clsa_strong_recipe
from myol_keras.augment.rand_augment import OP_NAMES
from myol_keras.augment.view import stateless_layer_call


def _pil_op(image, name, v, sign):
    """The CLSA code's op `name` at level `v` with the given random sign, on a PIL image."""
    enhance = v * 0.9 / 10 + 0.05
    shear = sign * (v * 0.3 / 10)
    if name == "AutoContrast":
        return ImageOps.autocontrast(image)
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        return getattr(ImageEnhance, name)(image).enhance(enhance)
    if name == "Equalize":
        return ImageOps.equalize(image)
    if name == "Identity":
        return image
    if name == "Posterize":
        return ImageOps.posterize(image, int(v * 4 / 10) + 4)
    if name == "Rotate":
        return image.rotate(sign * int(v * 30 / 10))
    if name == "ShearX":
        return image.transform(image.size, Image.AFFINE, (1, shear, 0, 0, 1, 0))
    if name == "ShearY":
        return image.transform(image.size, Image.AFFINE, (1, 0, 0, shear, 1, 0))
    if name == "Solarize":
        return ImageOps.solarize(image, 256 - int(v * 256 / 10))
    if name == "TranslateX":
        return image.transform(image.size, Image.AFFINE, (1, 0, int(shear * image.size[0]), 0, 1, 0))
    if name == "TranslateY":
        return image.transform(image.size, Image.AFFINE, (1, 0, 0, 0, 1, int(shear * image.size[1])))
    raise AssertionError(name)


def _uint8_batch(n=24, size=32, seed=3):
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(rng.integers(0, 4, (n, size, size, 3)), axis=2)
    return np.clip(smooth + rng.integers(0, 120, (n, 1, 1, 3)), 0, 255).astype(np.uint8)


def test_pool_is_fixmatch_fourteen_ops():
    assert OP_NAMES == (
        "AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Identity", "Posterize",
        "Rotate", "Sharpness", "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY",
    )


def test_layer_equals_pil_replay_of_its_draws():
    images = _uint8_batch()
    layer = RandAugment(num_ops=5, magnitude=10, value_range=(0, 255), seed=11)
    floats = tf.constant(images, tf.float32)
    draws = layer.get_random_transformation(floats, seed=[5, 6])
    out = layer.transform_images(floats, draws).numpy()
    ops, levels = draws["ops"].numpy(), draws["levels"].numpy()
    apply, signs = draws["apply"].numpy(), draws["signs"].numpy()
    for i, image in enumerate(images):
        pil = Image.fromarray(image)
        for slot in range(5):
            if apply[i, slot]:
                pil = _pil_op(pil, OP_NAMES[ops[i, slot]], int(levels[i, slot]), int(signs[i, slot]))
        np.testing.assert_array_equal(out[i], np.asarray(pil, np.float32), err_msg=f"sample {i}")


def test_draws_follow_the_code_law():
    layer = RandAugment(num_ops=5, magnitude=10, seed=0)
    draws = layer.get_random_transformation(tf.zeros([4000, 2, 2, 3]), seed=[1, 2])
    levels, ops = draws["levels"].numpy(), draws["ops"].numpy()
    assert levels.min() == 1 and levels.max() == 9  # numpy randint(1, 10)
    assert set(np.unique(ops)) == set(range(14))  # with replacement, all 14
    assert np.all(np.abs(np.bincount(ops.ravel()) / ops.size - 1 / 14) < 0.01)
    assert abs(draws["apply"].numpy().mean() - 0.5) < 0.01
    assert abs((draws["signs"].numpy() > 0).mean() - 0.5) < 0.01
    # per sample: the rows differ
    assert len({tuple(row) for row in ops[:50]}) == 50


def test_no_op_draws_only_quantize():
    x = tf.random.uniform([3, 8, 8, 3], seed=1)
    expected = tf.round(x * 255.0) / 255.0
    np.testing.assert_allclose(RandAugment(num_ops=0)(x), expected, atol=1e-7)
    np.testing.assert_allclose(RandAugment(rate=0.0)(x), expected, atol=1e-7)
    np.testing.assert_array_equal(RandAugment()(x, training=False), x)


def test_seeded_calls_reproduce_and_seeds_differ():
    layer = RandAugment(seed=4)
    x = tf.constant(_uint8_batch(8), tf.float32) / 255.0
    first = stateless_layer_call(layer, x, [7, 8])
    np.testing.assert_array_equal(first, stateless_layer_call(layer, x, [7, 8]))
    assert not np.array_equal(first, stateless_layer_call(layer, x, [7, 9]))
    a = RandAugment(seed=4)(x)
    np.testing.assert_array_equal(a, RandAugment(seed=4)(x))


def test_per_sample_randomness_in_one_batch():
    x = tf.constant(np.repeat(_uint8_batch(1), 16, axis=0), tf.float32) / 255.0
    out = RandAugment(seed=2)(x).numpy()
    assert len({o.tobytes() for o in out}) > 8


def test_unbatched_value_range_and_tf_data():
    image = tf.constant(_uint8_batch(1)[0], tf.float32)
    out = RandAugment(value_range=(0, 255), seed=1)(image)
    assert out.shape == (32, 32, 3)
    assert np.array_equal(out, np.round(out)) and out.numpy().max() <= 255
    ds = tf.data.Dataset.from_tensor_slices(_uint8_batch(8)).batch(4)
    layer = RandAugment(seed=3)
    ds = ds.map(lambda im: layer(tf.cast(im, tf.float32) / 255.0), num_parallel_calls=2)
    shapes = [batch.shape for batch in ds]
    assert shapes == [(4, 32, 32, 3)] * 2


def test_config_round_trip():
    layer = RandAugment(num_ops=3, magnitude=7, rate=0.25, value_range=(0, 255), seed=9)
    clone = RandAugment.from_config(layer.get_config())
    assert (clone.num_ops, clone.magnitude, clone.rate, clone.value_range, clone.seed) == (
        3, 7, 0.25, (0, 255), 9,
    )


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"num_ops": -1}, "num_ops"),
        ({"magnitude": 1}, "magnitude"),
        ({"magnitude": 11}, "magnitude"),
        ({"rate": 1.5}, "rate"),
        ({"value_range": (0, 2)}, "value_range"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_bad_arguments_raise(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        RandAugment(**kwargs)


def test_clsa_strong_recipe():
    recipe = clsa_strong_recipe(32, (0.5,) * 3, (0.25,) * 3, scale=(0.086, 0.429), seed=0)
    assert [type(layer).__name__ for layer in recipe] == [
        "ToFloat", "RandomResizedCrop", "RandomFlip", "RandomApply", "RandomGrayscale",
        "RandAugment", "Normalize",
    ]
    assert recipe[1].scale == (0.086, 0.429)
    images = tf.constant(_uint8_batch(4))
    out = apply_recipe(recipe, images, seed=[1, 2])
    assert out.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(out, apply_recipe(recipe, images, seed=[1, 2]))
    assert augment.clsa_strong_recipe is clsa_strong_recipe
