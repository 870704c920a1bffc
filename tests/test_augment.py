"""Tests for `myol_keras.augment` (METHODS §1.6, DESIGN §4.4)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from myol_keras import augment

PIXEL_A = (0.2, 0.5, 0.8)
WHITE = (1.0, 1.0, 1.0)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IDENTITY = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}


def _pixel_image(*pixels):
    """A batch of one image, one row of the given pixels: (1, 1, P, 3)."""
    return tf.constant([[list(pixels)]], dtype=tf.float32)


def _fixed_transformation(batch=1, order=(0, 1, 2, 3), **factors):
    values = dict(IDENTITY, **factors)
    transformation = {
        name: tf.fill([batch], float(value)) for name, value in values.items()
    }
    transformation["order"] = tf.tile(
        tf.constant([order], tf.int32), [batch, 1]
    )
    return transformation


def _uint8_images(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


# Hand-made torchvision checks from METHODS §1.6: (op, factor, input, expected).
TORCHVISION_CASES = [
    ("brightness", 1.4, [PIXEL_A], (0.28, 0.70, 1.0)),
    ("saturation", 0.6, [PIXEL_A], (0.297792, 0.477792, 0.657792)),
    ("contrast", 0.6, [PIXEL_A, WHITE], (0.408876, 0.588876, 0.768876)),
    ("hue", 0.1, [PIXEL_A], (0.26, 0.2, 0.8)),
    ("hue", -0.1, [PIXEL_A], (0.2, 0.8, 0.74)),
]
PURE_FUNCTIONS = {
    "brightness": augment.adjust_brightness,
    "contrast": augment.adjust_contrast,
    "saturation": augment.adjust_saturation,
    "hue": augment.adjust_hue,
}


# ----------------------------------------------------------------------------
# ColorJitter.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("op,factor,pixels,expected", TORCHVISION_CASES)
def test_pure_function_matches_torchvision(op, factor, pixels, expected):
    out = PURE_FUNCTIONS[op](_pixel_image(*pixels), [factor])
    np.testing.assert_allclose(out[0, 0, 0], expected, atol=1e-5)


@pytest.mark.parametrize("op,factor,pixels,expected", TORCHVISION_CASES)
def test_pure_function_unbatched_scalar_factor(op, factor, pixels, expected):
    out = PURE_FUNCTIONS[op](_pixel_image(*pixels)[0], factor)
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-5)


@pytest.mark.parametrize("delta", [-0.5, -0.1, -0.03, 0.0, 0.07, 0.1, 0.45])
def test_adjust_hue_matches_hsv_round_trip(delta):
    images = tf.random.uniform([4, 8, 8, 3], seed=15)
    # Grey pixels and ties between channels too.
    images = tf.concat(
        [images, tf.constant([[[[0.5, 0.5, 0.5], [0.7, 0.7, 0.2]] * 4] * 8])],
        axis=0,
    )
    hsv = tf.image.rgb_to_hsv(images)
    hue = tf.math.floormod(hsv[..., :1] + delta, 1.0)
    expected = tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1))
    out = augment.adjust_hue(images, tf.fill([5], delta))
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("op,factor,pixels,expected", TORCHVISION_CASES)
@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (2, 0, 3, 1)])
def test_transform_images_single_op_matches_torchvision(
    op, factor, pixels, expected, order
):
    jitter = augment.ColorJitter()
    transformation = _fixed_transformation(order=order, **{op: factor})
    out = jitter.transform_images(_pixel_image(*pixels), transformation)
    np.testing.assert_allclose(out[0, 0, 0], expected, atol=1e-5)


def test_transform_images_identity_factors_leave_images_unchanged():
    images = tf.random.uniform([4, 8, 8, 3], seed=1)
    out = augment.ColorJitter().transform_images(
        images, _fixed_transformation(batch=4)
    )
    np.testing.assert_array_equal(out, images)


def test_order_is_honoured_per_sample():
    image = _pixel_image(PIXEL_A, WHITE)
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


# ----------------------------------------------------------------------------
# RandomResizedCrop.
# ----------------------------------------------------------------------------
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


def test_random_resized_crop_inference_resizes_whole_image():
    images = tf.random.uniform([2, 16, 16, 3], seed=17)
    out = augment.RandomResizedCrop(8)(images, training=False)
    np.testing.assert_allclose(
        out, tf.image.resize(images, (8, 8), method="bilinear"), atol=1e-5
    )


# ----------------------------------------------------------------------------
# RandomApply.
# ----------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------
# ToFloat, Normalize, recipes.
# ----------------------------------------------------------------------------
def test_to_float_scales_uint8_and_passes_floats():
    images = tf.constant([[[[0, 51, 255]]]], dtype=tf.uint8)
    out = augment.ToFloat()(images)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 0.2, 1.0], atol=1e-7)
    floats = tf.random.uniform([2, 3, 3, 3], seed=11)
    np.testing.assert_array_equal(augment.ToFloat()(floats), floats)


def test_normalize_per_channel():
    out = augment.Normalize(CIFAR_MEAN, CIFAR_STD)(tf.ones([1, 1, 1, 3]))
    expected = (1.0 - np.array(CIFAR_MEAN)) / np.array(CIFAR_STD)
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-6)


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
    images = _uint8_images(4, size=16)

    def view(seed):
        recipe = augment.myol_view_recipe(8, CIFAR_MEAN, CIFAR_STD, seed=seed)
        return augment.apply_recipe(recipe, images).numpy()

    np.testing.assert_array_equal(view(5), view(5))
    assert not np.allclose(view(5), view(6))


def test_docstring_examples_run():
    import doctest

    globs = {name: getattr(augment, name) for name in augment.__all__}
    globs["tf"] = tf
    result = doctest.testmod(
        augment,
        extraglobs=globs,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert result.failed == 0 and result.attempted > 20


def test_eval_recipe_resizes_only_when_needed():
    images = _uint8_images(2, size=32)
    same = augment.apply_recipe(augment.eval_recipe(32, (0,) * 3, (1,) * 3), images)
    np.testing.assert_allclose(same, images / 255.0, atol=1e-6)
    resized = augment.apply_recipe(
        augment.eval_recipe(24, CIFAR_MEAN, CIFAR_STD), images
    )
    assert resized.shape == (2, 24, 24, 3) and resized.dtype == tf.float32


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
    images = _uint8_images(16, size=24)
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


def test_color_jitter_alone_in_tf_data_differs_between_epochs():
    images = tf.random.uniform([8, 8, 8, 3], seed=13)
    ds = tf.data.Dataset.from_tensors(images).map(augment.ColorJitter())
    first, second = next(iter(ds)), next(iter(ds))
    assert not np.allclose(first, second)


def test_recipe_stays_float32_under_mixed_precision():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        recipe = augment.myol_view_recipe(8, CIFAR_MEAN, CIFAR_STD)
        out = augment.apply_recipe(recipe, _uint8_images(2, size=8))
    finally:
        keras.config.set_dtype_policy(policy)
    assert out.dtype == tf.float32


# ----------------------------------------------------------------------------
# Serialization and validation.
# ----------------------------------------------------------------------------
SERIALIZABLE_LAYERS = [
    lambda: augment.ToFloat(),
    lambda: augment.RandomResizedCrop(
        24, scale=(0.3, 0.9), ratio=(0.5, 2.0), seed=4
    ),
    lambda: augment.RandomApply(
        augment.ColorJitter(0.1, 0.2, 0.3, 0.05, seed=1), 0.3, seed=2
    ),
    lambda: augment.ColorJitter(0.1, 0.2, 0.3, 0.05, seed=1),
    lambda: augment.Normalize(CIFAR_MEAN, CIFAR_STD),
]


@pytest.mark.parametrize("make_layer", SERIALIZABLE_LAYERS)
def test_config_round_trip(make_layer):
    layer = make_layer()
    config = layer.get_config()
    restored = type(layer).from_config(config)
    assert restored.get_config() == config
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(revived) is type(layer)
    assert revived.get_config() == config
    images = tf.random.uniform([2, 24, 24, 3], seed=14)
    assert revived(images).shape == layer(images).shape


def test_random_apply_round_trip_restores_inner_layer():
    layer = SERIALIZABLE_LAYERS[2]()
    restored = augment.RandomApply.from_config(layer.get_config())
    assert isinstance(restored.layer, augment.ColorJitter)
    assert restored.layer.saturation == 0.3 and restored.layer.seed == 1


BAD_ARGUMENTS = [
    # (factory, kwargs, message regex)
    (augment.RandomResizedCrop, {"size": 0},
     r"Expected `size` to be an int >= 1. Received: size=0"),
    (augment.RandomResizedCrop, {"size": 8.0}, r"Received: size=8.0"),
    (augment.RandomResizedCrop, {"size": 8, "scale": (0.5, 0.2)},
     r"Expected `scale` to be a pair 0 < a <= b <= 1. "
     r"Received: scale=\(0.5, 0.2\)"),
    (augment.RandomResizedCrop, {"size": 8, "scale": (0.0, 1.0)},
     r"`scale`.*Received: scale=\(0.0, 1.0\)"),
    (augment.RandomResizedCrop, {"size": 8, "scale": (0.2, 1.5)},
     r"`scale`.*Received: scale=\(0.2, 1.5\)"),
    (augment.RandomResizedCrop, {"size": 8, "scale": 0.5},
     r"`scale`.*Received: scale=0.5"),
    (augment.RandomResizedCrop, {"size": 8, "ratio": (2.0, 1.0)},
     r"Expected `ratio` to be a pair 0 < a <= b. Received: ratio="),
    (augment.RandomResizedCrop, {"size": 8, "seed": "a"},
     r"Expected `seed` to be None or an int. Received: seed=a"),
    (augment.ColorJitter, {"seed": 1.5},
     r"Expected `seed` to be None or an int. Received: seed=1.5"),
    (augment.RandomApply, {"layer": "not a layer"},
     r"Expected `layer` to be a `keras.layers.Layer`"),
    (augment.RandomApply, {"layer": augment.ToFloat(), "rate": 1.5},
     r"Expected `rate` to be a float in \[0, 1\]. Received: rate=1.5"),
    (augment.ColorJitter, {"brightness": -0.1},
     r"Expected `brightness` to be a float >= 0. Received: brightness=-0.1"),
    (augment.ColorJitter, {"saturation": "x"}, r"Received: saturation=x"),
    (augment.ColorJitter, {"hue": 0.6},
     r"Expected `hue` to be a float in \[0, 0.5\]. Received: hue=0.6"),
    (augment.Normalize, {"mean": (0.5, 0.5), "std": (1, 1, 1)},
     r"Expected `mean` to be 3 numbers.*Received: mean=\(0.5, 0.5\)"),
    (augment.Normalize, {"mean": (0.5,) * 3, "std": (1, 0, 1)},
     r"Expected every value of `std` to be > 0. Received: std=\(1, 0, 1\)"),
    (augment.myol_view_recipe,
     {"image_size": 0, "mean": CIFAR_MEAN, "std": CIFAR_STD},
     r"Expected `image_size` to be an int >= 1. Received: image_size=0"),
    (augment.eval_recipe, {"image_size": 32, "mean": CIFAR_MEAN, "std": (1, 1)},
     r"Received: std=\(1, 1\)"),
    (augment.make_view_fn, {"recipes": []},
     r"Expected `recipes` to be a non-empty list"),
    (augment.apply_recipe, {"layers": "x", "images": tf.zeros([1, 2, 2, 3])},
     r"Expected `layers` to be a list of Keras layers"),
]


@pytest.mark.parametrize("factory,kwargs,message", BAD_ARGUMENTS)
def test_bad_arguments_raise_value_error(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


def test_bad_image_rank_raises_value_error():
    with pytest.raises(ValueError, match=r"Expected images of rank 3.*Received"):
        augment.ColorJitter().get_random_transformation(tf.zeros([2, 2]))


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
