"""The one evaluation transform (`myol_keras.preprocessing`): PIL parity through an exported encoder, the crop rule."""

import numpy as np
import pytest
import tensorflow as tf

from myol_keras import preprocessing

GREY_LEVELS = 2 / 255  # the bound of the issue: two grey levels per pixel


@pytest.fixture(scope="module")
def stl_like_image():
    """A real image at STL-10's 96 px: a CIFAR-10 test image upsampled with PIL's bicubic filter."""
    from PIL import Image

    from conftest import CIFAR_SUBSET

    if not CIFAR_SUBSET.exists():
        pytest.skip(f"shared CIFAR-10 subset not found at {CIFAR_SUBSET}")
    small = np.load(CIFAR_SUBSET)["x_test"][0]
    return np.asarray(Image.fromarray(small).resize((96, 96), Image.BICUBIC))


def _pil_bilinear(image, size):
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR)).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def pixel_export(tmp_path_factory):
    """An export whose 'encoder' flattens its input, so the embedding is the preprocessed pixels (mean 0, std 1)."""
    import keras

    from myol_keras.export import export_encoder

    inputs = keras.Input((64, 64, 3))
    backbone = keras.Model(inputs, keras.layers.Flatten()(inputs))
    path = export_encoder(backbone, str(tmp_path_factory.mktemp("saved_models") / "pixels"), image_size=64,
                          mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return tf.saved_model.load(path)


def test_exported_encoder_resizes_96_to_64_like_pil_bilinear(stl_like_image, pixel_export):
    served = pixel_export.signatures["serving_default"](images=tf.constant(stl_like_image[None]))["embedding"]
    pixels = served.numpy().reshape(64, 64, 3)
    difference = np.abs(pixels - _pil_bilinear(stl_like_image, 64)).max()
    assert difference <= GREY_LEVELS, f"{difference * 255:.2f} grey levels"


def test_the_old_resize_without_antialiasing_misses_pil_by_more_than_two_grey_levels(stl_like_image):
    # What export.py and semisup.py did before: two-tap bilinear, no antialiasing. On this
    # image it is 4.4 grey levels off (3.0 to 5.9 on the first 20 test images of the subset),
    # while the antialiased resize stays below one (at most 0.94 on those 20).
    old = tf.image.resize(stl_like_image[None] / 255.0, (64, 64), method="bilinear")[0].numpy()
    assert np.abs(old - _pil_bilinear(stl_like_image, 64)).max() > GREY_LEVELS
    new = preprocessing.resize_pixels(stl_like_image, 64).numpy()
    assert np.abs(new - _pil_bilinear(stl_like_image, 64)).max() < 1 / 255


def test_non_square_images_are_centre_cropped_not_stretched(pixel_export):
    # 64 x 96: the centre 64 x 64 square (columns 16..79) comes out unchanged; a stretch would mix in the borders.
    rng = np.random.default_rng(0)
    image = np.zeros((64, 96, 3), np.uint8)
    image[:, 16:80] = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    image[:, :16] = 255
    image[:, 80:] = 255
    served = pixel_export.signatures["serving_default"](images=tf.constant(image[None]))["embedding"]
    np.testing.assert_allclose(served.numpy().reshape(64, 64, 3), image[:, 16:80] / 255.0, atol=1e-6)
    tall = np.transpose(image, (1, 0, 2))  # 96 x 64: rows 16..79
    np.testing.assert_allclose(preprocessing.resize_pixels(tall, 64).numpy(), tall[16:80] / 255.0, atol=1e-6)


@pytest.mark.parametrize("height, width, side, top, left", [(96, 120, 96, 0, 12), (121, 96, 96, 12, 0), (7, 4, 4, 1, 0)])
def test_center_square_crop_offsets(height, width, side, top, left):
    images = tf.reshape(tf.range(height * width * 3), (1, height, width, 3))
    crop = preprocessing.center_square_crop(images).numpy()
    np.testing.assert_array_equal(crop, images.numpy()[:, top:top + side, left:left + side])
    np.testing.assert_array_equal(preprocessing.center_square_crop(images[0]).numpy(), crop[0])  # unbatched


def test_same_size_is_the_identity_and_normalisation_is_per_channel():
    images = np.random.default_rng(1).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.5)
    out = preprocessing.evaluation_transform(images, 16, mean, std).numpy()
    np.testing.assert_allclose(out, (images / 255.0 - np.array(mean)) / np.array(std), atol=1e-5)
    floats = preprocessing.evaluation_transform(images / 255.0, 16, mean, std).numpy()  # [0, 1] floats alike
    np.testing.assert_allclose(floats, out, atol=1e-5)


def test_dynamic_sizes_in_a_tf_function_and_tf_data():
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def transform(images):
        return preprocessing.evaluation_transform(images, 8, (0.5,) * 3, (0.25,) * 3)

    for shape in ((2, 12, 20, 3), (1, 30, 9, 3)):
        assert transform(tf.zeros(shape, tf.uint8)).shape == (shape[0], 8, 8, 3)
    ds = tf.data.Dataset.from_tensor_slices(tf.zeros([4, 24, 32, 3], tf.uint8)).map(
        lambda x: preprocessing.evaluation_transform(x, 8, (0.5,) * 3, (0.25,) * 3))
    assert [tuple(x.shape) for x in ds] == [(8, 8, 3)] * 4


def test_the_augment_recipe_and_layer_are_the_same_transform():
    from myol_keras import augment

    images = np.random.default_rng(2).integers(0, 256, size=(2, 40, 30, 3), dtype=np.uint8)
    expected = preprocessing.evaluation_transform(images, 16, (0.5,) * 3, (0.25,) * 3).numpy()
    recipe = augment.eval_recipe(16, (0.5,) * 3, (0.25,) * 3)
    np.testing.assert_allclose(augment.apply_recipe(recipe, images).numpy(), expected, atol=1e-6)
    layer = augment.EvaluationTransform.from_config(recipe[0].get_config())
    np.testing.assert_allclose(layer(images).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("height, width, size", [(32, 32, 32), (96, 96, 64), (40, 48, 32), (20, 17, 32), (64, 96, 24)])
def test_the_fixed_size_transform_is_the_evaluation_transform(height, width, size):
    # Shrinking, enlarging, the same size and non-square inputs: what the ONNX / LiteRT exports compute.
    images = np.random.default_rng(3).integers(0, 256, size=(3, height, width, 3), dtype=np.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
    expected = preprocessing.evaluation_transform(images, size, mean, std).numpy()
    fixed = tf.function(lambda x: preprocessing.fixed_size_transform(x, size, mean, std),
                        input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8)])
    np.testing.assert_allclose(fixed(images).numpy(), expected, atol=1e-5)
    assert fixed(images[:1]).shape == (1, size, size, 3)  # the batch stays dynamic
    assert preprocessing.resize_matrix(size, size) == pytest.approx(np.eye(size), abs=1e-6)


def test_the_fixed_size_transform_needs_a_static_size():
    fixed = tf.function(lambda x: preprocessing.fixed_size_transform(x, 8, (0.5,) * 3, (0.25,) * 3),
                        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    with pytest.raises(ValueError, match=r"static H and W. Received: shape=\(None, None, None, 3\)"):
        fixed.get_concrete_function()


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 0}, r"Expected `image_size` to be an int >= 1. Received: image_size=0"),
    ({"image_size": 8.0}, r"Received: image_size=8.0"),
    ({"mean": (0.5, 0.5)}, r"Expected `mean` to be 3 numbers.*Received: mean=\(0.5, 0.5\)"),
    ({"std": (1, 0, 1)}, r"Expected every value of `std` to be > 0. Received: std=\(1, 0, 1\)"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    arguments = {"images": tf.zeros([1, 8, 8, 3], tf.uint8), "image_size": 8, "mean": (0.5,) * 3, "std": (0.25,) * 3}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        preprocessing.evaluation_transform(**arguments)
