"""Tests for myol_keras.data: every registry route offline, on tiny data made here (or tfds mock data)."""

import os
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from myol_keras import augment, data
from myol_keras.data import digits as digits_source
from myol_keras.data import tfds as tfds_source
from myol_keras.data import types as data_types
from myol_keras.data import pipeline as data_pipeline


def as_arrays(ds):
    """All elements of a dataset as NumPy: an image stack, or (images, labels)."""
    elements = list(ds.as_numpy_iterator())
    if isinstance(elements[0], tuple):
        return np.stack([e[0] for e in elements]), np.array([e[1] for e in elements])
    return np.stack(elements)


def assert_one_line(error, *fragments):
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


# --------------------------------------------------------------------------------------------------
# Registry, normalisation, batch sizes
# --------------------------------------------------------------------------------------------------


def test_registry_lists_every_route():
    for name in ("cifar10", "cifar100", "stl10", "fashion_mnist", "mnist", "svhn_cropped",
                 "tiny_imagenet", "stl10_binary", "folder", "npz", "digits"):
        assert name in data.DATASETS
    for name in ("cifar10", "cifar100", "stl10", "tiny_imagenet", "imagenet"):
        mean, std = data.NORMALIZATIONS[name]
        assert len(mean) == len(std) == 3
    assert data.NORMALIZATIONS["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert issubclass(data.DataUnavailableError, FileNotFoundError)


def test_unknown_dataset_name_lists_choices():
    with pytest.raises(ValueError) as error:
        data.load_pretrain_images("cifar11")
    assert_one_line(error, "cifar11", "cifar10", "stl10_binary", "digits", "npz", "folder")
    with pytest.raises(ValueError):
        data.load_labelled("imagenet2012", "train")


def test_bad_split_is_rejected():
    with pytest.raises(ValueError) as error:
        data.load_labelled("digits", "validation")
    assert_one_line(error, "validation", "train", "test")


@pytest.mark.parametrize("name", ["npz", "folder", "stl10_binary", "tiny_imagenet"])
def test_local_datasets_need_data_dir(name):
    with pytest.raises(ValueError) as error:
        data.load_pretrain_images(name)
    assert_one_line(error, "--data_dir", name)


@pytest.mark.parametrize("name", ["npz", "folder", "stl10_binary", "tiny_imagenet"])
def test_nonexistent_data_dir_is_unavailable(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(data.DataUnavailableError) as error:
        data.load_pretrain_images(name, str(missing))
    assert_one_line(error, str(missing), name)


def test_resolve_normalization():
    info = data.DatasetInfo("x", 10, 32, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), 100)
    assert data.resolve_normalization("auto", info) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert data.resolve_normalization("imagenet", info) == data.NORMALIZATIONS["imagenet"]
    assert data.resolve_normalization(([0.5] * 3, [0.25] * 3), info) == ((0.5,) * 3, (0.25,) * 3)
    with pytest.raises(ValueError) as error:
        data.resolve_normalization("imagenette", info)
    assert_one_line(error, "auto", "cifar10", "imagenette")
    with pytest.raises(ValueError):
        data.resolve_normalization(((0.5,) * 3, (0.0, 1.0, 1.0)), info)


@pytest.mark.parametrize(
    "batch_size, num_images, drop_remainder, fragment",
    [
        (1, 100, True, ">= 2"),
        (0, 100, False, ">= 2"),
        (True, 100, True, ">= 2"),
        (2.0, 100, True, ">= 2"),
        (8, 5, True, "drop_remainder"),
        (4, 9, False, "one image"),
    ],
)
def test_validate_batch_size_errors(batch_size, num_images, drop_remainder, fragment):
    with pytest.raises(ValueError) as error:
        data.validate_batch_size(batch_size, num_images, drop_remainder)
    assert_one_line(error, fragment)


def test_validate_batch_size_accepts():
    data.validate_batch_size(2, 2, True)
    data.validate_batch_size(4, 10, False)  # last batch of two
    data.validate_batch_size(256, None, True)  # unknown size: only the batch size is checked
    data.validate_batch_size(np.int64(8), 8, True)


# --------------------------------------------------------------------------------------------------
# pretrain_pipeline
# --------------------------------------------------------------------------------------------------


def _indexed_images(n, size=4):
    """Images whose every pixel holds the image index, so order can be read back."""
    return tf.data.Dataset.from_tensor_slices(
        np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, size, size, 3)).copy()
    )


def _two_views(batch):
    x = tf.cast(batch, tf.float32)
    return x, x / 255.0


def test_pretrain_pipeline_batches_views():
    ds = data.pretrain_pipeline(_indexed_images(10), _two_views, 4, seed=0)
    batches = list(ds)
    assert len(batches) == 2  # 10 // 4, remainder dropped
    for view_a, view_b in batches:
        assert view_a.shape == view_b.shape == (4, 4, 4, 3)
        assert view_a.dtype == tf.float32
        np.testing.assert_allclose(view_b.numpy(), view_a.numpy() / 255.0)

    kept = list(data.pretrain_pipeline(_indexed_images(10), _two_views, 4, drop_remainder=False, seed=0))
    assert [int(a.shape[0]) for a, _ in kept] == [4, 4, 2]
    seen = np.concatenate([a.numpy()[:, 0, 0, 0] for a, _ in kept])
    assert sorted(seen.astype(int)) == list(range(10))


def test_pretrain_pipeline_reshuffles_every_epoch():
    ds = data.pretrain_pipeline(_indexed_images(64), _two_views, 8, seed=3)
    orders = [np.concatenate([a.numpy()[:, 0, 0, 0] for a, _ in ds]) for _ in range(2)]
    assert sorted(orders[0]) == sorted(orders[1])
    assert not np.array_equal(orders[0], orders[1])
    same_seed = data.pretrain_pipeline(_indexed_images(64), _two_views, 8, seed=3)
    np.testing.assert_array_equal(np.concatenate([a.numpy()[:, 0, 0, 0] for a, _ in same_seed]), orders[0])


def test_pretrain_pipeline_validates_batch_size():
    with pytest.raises(ValueError, match="drop_remainder"):
        data.pretrain_pipeline(_indexed_images(3), _two_views, 4)
    with pytest.raises(ValueError, match=">= 2"):
        data.pretrain_pipeline(_indexed_images(3), _two_views, 1)


def test_pretrain_pipeline_takes_arrays_and_the_previous_shuffle_buffer():
    array = _indexed_images(10).batch(10).get_single_element().numpy()
    seen = np.concatenate([a.numpy()[:, 0, 0, 0] for a, _ in
                           data.pretrain_pipeline(array, _two_views, 5, drop_remainder=False, seed=0)])
    assert sorted(seen.astype(int)) == list(range(10))
    in_order = data.pretrain_pipeline(array, _two_views, 5, shuffle_buffer=1)  # 1: source order
    np.testing.assert_array_equal(np.concatenate([a.numpy()[:, 0, 0, 0] for a, _ in in_order]), np.arange(10))


# --------------------------------------------------------------------------------------------------
# epoch_pipeline: a full permutation per epoch, gathered by index
# --------------------------------------------------------------------------------------------------


def _labelled_images(num_classes, per_class, size=4):
    """Class-sorted images (as a folder lists them): pixel (0, 0, 0) holds the class, (0, 1, :2) the index."""
    n = num_classes * per_class
    x = np.zeros((n, size, size, 3), np.uint8)
    x[:, 0, 0, 0] = np.repeat(np.arange(num_classes), per_class)
    x[:, 0, 1, 0], x[:, 0, 1, 1] = np.arange(n) // 256, np.arange(n) % 256
    return x


def _indices(batch):
    batch = batch.numpy() if hasattr(batch, "numpy") else batch
    return batch[:, 0, 1, 0].astype(int) * 256 + batch[:, 0, 1, 1]


def _raw_batches(images, batch_size, count, **kwargs):
    """`count` raw batches of `epoch_pipeline` (no views: `{"images", "seed"}` elements)."""
    return [element["images"] for element in data.epoch_pipeline(images, None, batch_size, **kwargs).take(count)]


def expected_distinct_classes(num_classes, per_class, batch_size):
    """E[distinct classes in a batch] under a uniform random permutation (drawing without replacement)."""
    n = num_classes * per_class
    absent = np.prod([(n - per_class - j) / (n - j) for j in range(batch_size)])
    return num_classes * (1.0 - absent)


def test_batches_of_class_sorted_data_are_as_diverse_as_a_random_permutation():
    # Issue 20: with a 10k-image shuffle buffer, class-sorted folders gave class-clustered batches.
    classes, per_class, batch = 100, 20, 64
    images = _labelled_images(classes, per_class)
    steps = len(images) // batch  # 31 batches per epoch
    batches = _raw_batches(images, batch, 3 * steps, seed=0)
    distinct = [len(np.unique(b.numpy()[:, 0, 0, 0])) for b in batches]
    expected = expected_distinct_classes(classes, per_class, batch)  # ≈ 47.5
    simulated = [len(np.unique(np.random.default_rng(s).permutation(np.repeat(np.arange(classes), per_class))[:batch]))
                 for s in range(2000)]
    assert abs(np.median(simulated) - expected) < 1.0  # the closed form, checked by simulation
    assert abs(np.median(distinct) - expected) <= 0.1 * expected, (np.median(distinct), expected)
    # The previous pipeline's shuffle buffer (here 200 images, 10 % of the data as 10k is of
    # Tiny-ImageNet) keeps batches within neighbouring classes: about half as many (25 here).
    local = _raw_batches(tf.data.Dataset.from_tensor_slices(images), batch, steps, seed=0, shuffle_buffer=200)
    assert np.median([len(np.unique(b.numpy()[:, 0, 0, 0])) for b in local]) < 0.6 * expected


def test_each_epoch_is_a_permutation_of_every_image_drawn_from_seed_and_epoch():
    images = _labelled_images(5, 10)  # 50 images
    epochs = [[_indices(b) for b in _raw_batches(images, 8, 7, seed=3, start_epoch=e, drop_remainder=False)]
              for e in (0, 1)]
    for batches in epochs:
        assert [len(b) for b in batches] == [8] * 6 + [2]
        assert sorted(np.concatenate(batches)) == list(range(50))
    assert not np.array_equal(np.concatenate(epochs[0]), np.concatenate(epochs[1]))
    two = [_indices(b) for b in _raw_batches(images, 8, 14, seed=3, drop_remainder=False)]
    np.testing.assert_array_equal(np.concatenate(two), np.concatenate(epochs[0] + epochs[1]))  # resume = straight
    np.testing.assert_array_equal(np.concatenate(epochs[0]), data.epoch_order(3, 0, 50).numpy())
    other = np.concatenate([_indices(b) for b in _raw_batches(images, 8, 7, seed=4, drop_remainder=False)])
    assert not np.array_equal(other, np.concatenate(epochs[0]))
    capped = [_indices(b) for b in _raw_batches(images, 8, 4, seed=3, steps_per_epoch=2)]
    np.testing.assert_array_equal(np.concatenate(capped[:2]), np.concatenate(epochs[0])[:16])  # first batches
    np.testing.assert_array_equal(np.concatenate(capped[2:]), np.concatenate(epochs[1])[:16])


def test_counterparts_are_an_independent_permutation():
    images = _labelled_images(4, 8)  # 32 images
    elements = list(data.epoch_pipeline(images, None, 8, seed=0, counterparts=True).take(4))
    x = np.concatenate([_indices(e["images"][0]) for e in elements])
    r = np.concatenate([_indices(e["images"][1]) for e in elements])
    assert sorted(x) == sorted(r) == list(range(32))
    assert not np.array_equal(x, r)
    np.testing.assert_array_equal(r, data.epoch_order(0, 0, 32, stream=1).numpy())


def test_memory_mapped_dataset_and_in_memory_inputs_give_the_same_stream(tmp_path):
    images = _labelled_images(3, 7)
    path = tmp_path / "images.u8"
    images.tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=images.shape)
    recipe = augment.myol_view_recipe(4, (0.5,) * 3, (0.25,) * 3, seed=1)
    view_fn = augment.make_view_fn([recipe, recipe])
    streams = [list(data.epoch_pipeline(source, view_fn, 4, seed=1).take(6))
               for source in (images, mapped, tf.data.Dataset.from_tensor_slices(images))]
    for other in streams[1:]:
        for a, b in zip(streams[0], other):
            np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
            np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert streams[0][0][0].shape == (4, 4, 4, 3)


# --------------------------------------------------------------------------------------------------
# tfds (mocked; the real offline failure)
# --------------------------------------------------------------------------------------------------


def test_tfds_cifar10_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        images, info = data.load_pretrain_images("cifar10", data_dir=str(tmp_path))
        test, test_info = data.load_labelled("cifar10", "test", data_dir=str(tmp_path))
        x = as_arrays(images)
        x_test, y_test = as_arrays(test)
    assert x.shape == (6, 32, 32, 3) and x.dtype == np.uint8
    assert x_test.shape == (6, 32, 32, 3) and y_test.dtype == np.int64
    assert set(y_test) <= set(range(10))
    assert info == test_info
    assert (info.name, info.num_classes, info.image_size) == ("cifar10", 10, 32)
    assert (info.mean, info.std) == data.NORMALIZATIONS["cifar10"]
    assert info.num_pretrain_images == 50_000


def test_tfds_stl10_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    calls = []
    with tfds.testing.mock_data(num_examples=5):
        mocked = tfds.core.DatasetBuilder.as_dataset  # what mock_data patched in

        def spy(self, *args, **kwargs):
            calls.append(kwargs.get("split"))
            return mocked(self, *args, **kwargs)

        with mock.patch.object(tfds.core.DatasetBuilder, "as_dataset", spy):
            images, info = data.load_pretrain_images("stl10", data_dir=str(tmp_path))
            train, _ = data.load_labelled("stl10", "train", data_dir=str(tmp_path))
            x = as_arrays(images)
            x_train, y_train = as_arrays(train)
    assert calls == ["unlabelled+train", "train"]
    assert x.shape == (5, 96, 96, 3) and x.dtype == np.uint8
    assert x_train.shape == (5, 96, 96, 3) and set(y_train) <= set(range(10))
    assert (info.num_classes, info.image_size, info.num_pretrain_images) == (10, 64, 105_000)
    assert (info.mean, info.std) == data.NORMALIZATIONS["stl10"]


def test_tfds_greyscale_is_repeated_to_rgb(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=3):
        images, info = data.load_pretrain_images("fashion_mnist", data_dir=str(tmp_path))
        x = as_arrays(images)
    assert x.shape == (3, 28, 28, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    assert info.image_size == 28


def test_tfds_offline_failure_is_fast_and_actionable(tmp_path):
    if tfds_source._download_possible("stl10"):
        pytest.skip("this machine can reach the STL-10 host; the offline path cannot be exercised")
    start = time.monotonic()
    with pytest.raises(data.DataUnavailableError) as error:
        data.load_pretrain_images("stl10", data_dir=str(tmp_path))
    assert time.monotonic() - start < 10
    assert_one_line(error, "'stl10'", str(tmp_path), "--dataset=stl10_binary", "--dataset=digits")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_tfds_download_off_does_not_probe_network(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds_source, "_download_possible", lambda name: pytest.fail("network probed"))
    with pytest.raises(data.DataUnavailableError) as error:
        data.load_labelled("cifar10", "test", data_dir=str(tmp_path), download=False)
    assert_one_line(error, "'cifar10'", str(tmp_path), "--dataset=npz")
    assert "stl10_binary" not in str(error.value)


def test_tfds_data_dir_defaults_to_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env_tfds"))
    assert tfds_source._tfds_dir(None) == str(tmp_path / "env_tfds")
    assert tfds_source._tfds_dir(str(tmp_path)) == str(tmp_path)


# --------------------------------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------------------------------


def test_npz_shared_cifar_subset(cifar_subset_path):
    images, info = data.load_pretrain_images("npz", cifar_subset_path)
    assert images.element_spec.shape == (32, 32, 3) and images.element_spec.dtype == tf.uint8
    assert (info.num_classes, info.image_size, info.num_pretrain_images) == (10, 32, 4660)
    np.testing.assert_allclose(info.mean, (0.4914, 0.4822, 0.4465), atol=0.01)
    test, _ = data.load_labelled("npz", "test", cifar_subset_path)
    assert int(test.cardinality()) == 932
    with np.load(cifar_subset_path) as raw:
        x_test, y_test = raw["x_test"][:5], raw["y_test"][:5]
    got = list(test.take(5).as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([g[0] for g in got]), x_test)
    np.testing.assert_array_equal([g[1] for g in got], y_test)


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_greyscale_and_float_images(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(6, 12, 12), dtype=np.uint8)
    path = _write_npz(tmp_path / "grey.npz", x_train=grey, y_train=np.arange(6) % 3,
                      x_test=grey[:2], y_test=np.array([0, 4]))
    images, info = data.load_pretrain_images("npz", path)
    x = as_arrays(images)
    assert x.shape == (6, 12, 12, 3)
    np.testing.assert_array_equal(x[..., 1], grey)
    assert (info.num_classes, info.image_size) == (5, 12)  # max label over train and test, plus one

    floats = rng.random(size=(4, 8, 8, 3)).astype(np.float32)
    path = _write_npz(tmp_path / "float.npz", x_train=floats, y_train=np.zeros(4, int),
                      x_test=floats, y_test=np.ones(4, int))
    test, _ = data.load_labelled("npz", "test", path)
    x, y = as_arrays(test)
    assert x.dtype == np.uint8
    np.testing.assert_array_equal(x, np.round(floats * 255).astype(np.uint8))
    np.testing.assert_array_equal(y, np.ones(4))


def test_npz_large_arrays_stream_in_chunks(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(10, 6, 6, 3), dtype=np.uint8)
    path = _write_npz(tmp_path / "a.npz", x_train=x, y_train=np.arange(10), x_test=x, y_test=np.arange(10))
    monkeypatch.setattr(data_pipeline, "_IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(data_types, "CHUNK", 3)
    ds, _ = data.load_labelled("npz", "train", path)
    assert int(ds.cardinality()) == 10
    got_x, got_y = as_arrays(ds)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, np.arange(10))


def test_npz_corrupt_and_truncated_files(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive at all" * 10)
    with pytest.raises(ValueError) as error:
        data.load_pretrain_images("npz", str(junk))
    assert_one_line(error, str(junk), "not a valid .npz")

    good = tmp_path / "good.npz"
    x = np.random.default_rng(0).integers(0, 256, (50, 16, 16, 3), dtype=np.uint8)
    np.savez_compressed(good, x_train=x, y_train=np.zeros(50, int), x_test=x[:2], y_test=np.zeros(2, int))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError) as error:
        data.load_pretrain_images("npz", str(truncated))
    assert_one_line(error, str(truncated))

    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError) as error:
        data.load_pretrain_images("npz", str(npy))
    assert_one_line(error, str(npy))


def test_npz_missing_keys_lists_found_keys(tmp_path):
    path = _write_npz(tmp_path / "keys.npz", images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.zeros(2))
    with pytest.raises(ValueError) as error:
        data.load_pretrain_images("npz", path)
    assert_one_line(error, "x_train", "images", "labels")
    only_train = _write_npz(tmp_path / "train_only.npz", x_train=np.zeros((2, 4, 4, 3), np.uint8))
    images, info = data.load_pretrain_images("npz", only_train)  # unlabelled pre-training is fine
    assert info.num_classes is None and int(images.cardinality()) == 2
    with pytest.raises(ValueError) as error:
        data.load_labelled("npz", "test", only_train)
    assert_one_line(error, "y_train", "x_test", "found: x_train")


def test_npz_bad_labels_and_shapes(tmp_path):
    x = np.zeros((4, 4, 4, 3), np.uint8)
    negative = _write_npz(tmp_path / "neg.npz", x_train=x, y_train=np.array([0, 1, -1, 2]),
                          x_test=x, y_test=np.zeros(4))
    with pytest.raises(ValueError) as error:
        data.load_labelled("npz", "train", negative)
    assert_one_line(error, "out of range", "y_train")
    short = _write_npz(tmp_path / "short.npz", x_train=x, y_train=np.zeros(3), x_test=x, y_test=np.zeros(4))
    with pytest.raises(ValueError) as error:
        data.load_labelled("npz", "train", short)
    assert_one_line(error, "y_train", "4 labels")
    fractional = _write_npz(tmp_path / "frac.npz", x_train=x, y_train=np.full(4, 0.5),
                            x_test=x, y_test=np.zeros(4))
    with pytest.raises(ValueError, match="integer"):
        data.load_labelled("npz", "train", fractional)
    bad_shape = _write_npz(tmp_path / "shape.npz", x_train=np.zeros((4, 4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="shaped"):
        data.load_pretrain_images("npz", bad_shape)
    out_of_scale = _write_npz(tmp_path / "scale.npz", x_train=np.full((2, 4, 4, 3), 300.0))
    with pytest.raises(ValueError, match="0..255"):
        data.load_pretrain_images("npz", out_of_scale)



@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_npz_non_finite_pixels_are_refused_naming_file_key_and_count(tmp_path, bad):
    # Issue 29: a NaN went through the uint8 conversion and trained without a word.
    x = np.random.default_rng(0).random((6, 4, 4, 3)).astype(np.float32)
    x[1, 0, 0, 0] = x[4, 2, 1, :2] = bad  # three values
    path = _write_npz(tmp_path / "nan.npz", x_train=x, y_train=np.arange(6) % 2, x_test=x[:2].clip(0, 1),
                      y_test=np.zeros(2, int))
    cache = tmp_path / "cache"
    with pytest.raises(ValueError) as error:
        data.load_pretrain_array("npz", path, cache_dir=str(cache))
    assert_one_line(error, path, "x_train", "3 non-finite values")
    with pytest.raises(ValueError, match="x_train holds 3 non-finite"):
        data.load_labelled_array("npz", "test", path, cache_dir=str(cache))  # the test split needs x_train too
    assert not cache.exists()  # refused before the cache is touched


def test_npz_non_finite_pixels_are_one_line_and_exit_2_on_the_command_line(tmp_path, capsys, monkeypatch):
    from conftest import run_main_in_process

    x = np.full((8, 16, 16, 3), 0.5, np.float64)
    x[3, 5, 5, 1] = np.nan
    path = _write_npz(tmp_path / "nan.npz", x_train=x, y_train=np.arange(8) % 2)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    status, out, err = run_main_in_process(["--dataset=npz", f"--data_dir={path}", "--width=4", "--epochs=1",
                                            "--batch_size=4", f"--cache_dir={tmp_path}/cache"], capsys)
    assert status == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("myol_keras.main: error: "), err
    assert path in lines[0] and "x_train holds 1 non-finite value" in lines[0], lines[0]
    assert os.listdir(cwd) == [] and not (tmp_path / "cache").exists()  # no run directory, no cache entry


# --------------------------------------------------------------------------------------------------
# Image folders and Tiny-ImageNet
# --------------------------------------------------------------------------------------------------


def _save_image(path, size=(20, 20), mode="RGB", value=128, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    array = np.full((size[1], size[0], channels), value, np.uint8).squeeze()
    Image.fromarray(array, mode=mode).save(path, format=fmt)
    return path


def _save_truncated_png(path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:120])


def test_flat_folder_mixed_modes_and_truncated_image(tmp_path):
    for i in range(3):
        _save_image(tmp_path / f"rgb{i}.png", value=10 * i)
    _save_image(tmp_path / "grey.JPG", size=(24, 24), mode="L", value=200)
    _save_image(tmp_path / "alpha.png", size=(30, 20), mode="RGBA", value=90)
    _save_truncated_png(tmp_path / "broken.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable .*broken\.png"):
        images, info = data.load_pretrain_images("folder", str(tmp_path))
    x = as_arrays(images)
    assert x.shape == (5, 20, 20, 3) and x.dtype == np.uint8
    assert info.image_size == 20 and info.num_classes is None and info.num_pretrain_images == 5
    assert (x.reshape(5, -1, 3).std(axis=1) < 2).all()  # uniform images stay uniform
    assert sorted(int(v) for v in x[:, 0, 0, 0]) == sorted([0, 10, 20, 90, 200])
    with pytest.raises(ValueError) as error:
        data.load_labelled("folder", "train", str(tmp_path))
    assert_one_line(error, "no labels", "sub-folder per class")


def test_folder_image_size_override(tmp_path):
    _save_image(tmp_path / "a.png", size=(40, 30))
    images, info = data.load_pretrain_images("folder", str(tmp_path), image_size=16)
    assert info.image_size == 16 and images.element_spec.shape == (16, 16, 3)
    with pytest.raises(ValueError, match="image_size"):
        data.load_pretrain_images("digits", image_size=16)


def test_class_folders_split_deterministically(tmp_path):
    for label, name in enumerate(["ant", "bee", "cat"]):
        for i in range(5):
            _save_image(tmp_path / name / f"{i}.jpeg", size=(32, 32), value=50 * label)
    train, info = data.load_labelled("folder", "train", str(tmp_path))
    test, _ = data.load_labelled("folder", "test", str(tmp_path))
    pretrain, _ = data.load_pretrain_images("folder", str(tmp_path))
    x_train, y_train = as_arrays(train)
    x_test, y_test = as_arrays(test)
    assert info.num_classes == 3 and info.image_size == 32 and info.num_pretrain_images == 12
    assert sorted(y_test) == [0, 1, 2] and len(y_train) == 12
    assert int(pretrain.cardinality()) == 12
    np.testing.assert_array_equal(x_test[:, 0, 0, 0], 50 * y_test)  # labels follow sorted folder names
    again, _ = data.load_labelled("folder", "test", str(tmp_path))
    np.testing.assert_array_equal(as_arrays(again)[1], y_test)


def test_train_test_folders(tmp_path):
    for split, count in (("train", 3), ("test", 2)):
        for label, name in enumerate(["dog", "cat"]):
            for i in range(count):
                _save_image(tmp_path / split / name / f"{i}.bmp", size=(16, 16), mode="L", value=100 * label)
    x_train, y_train = as_arrays(data.load_labelled("folder", "train", str(tmp_path))[0])
    x_test, y_test = as_arrays(data.load_labelled("folder", "test", str(tmp_path))[0])
    assert x_train.shape == (6, 16, 16, 3) and x_test.shape == (4, 16, 16, 3)
    # sorted class names: cat = 0 (value 100), dog = 1 (value 0)
    np.testing.assert_array_equal(x_test[:, 0, 0, 0], np.where(y_test == 0, 100, 0))


def test_empty_and_unreadable_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.DataUnavailableError) as error:
        data.load_pretrain_images("folder", str(empty))
    assert_one_line(error, str(empty), "no images")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"garbage")
    with pytest.raises(ValueError) as error:
        data.load_pretrain_images("folder", str(broken))
    assert_one_line(error, str(broken), "No readable image")


def test_tiny_imagenet_official_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01"]
    for k, wnid in enumerate(wnids):
        for i in range(2):
            _save_image(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", size=(64, 64), value=60 * k)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    for i, wnid in enumerate(["n01", "n02", "n01"]):
        _save_image(root / "val" / "images" / f"val_{i}.JPEG", size=(64, 64), value=60 * wnids.index(wnid))
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    images, info = data.load_pretrain_images("tiny_imagenet", str(tmp_path))
    assert as_arrays(images).shape == (4, 64, 64, 3)
    assert (info.num_classes, info.image_size, info.num_pretrain_images) == (2, 64, 4)
    assert (info.mean, info.std) == data.NORMALIZATIONS["tiny_imagenet"]
    x_val, y_val = as_arrays(data.load_labelled("tiny_imagenet", "test", str(root))[0])
    np.testing.assert_array_equal(y_val, [0, 1, 0])  # n01 = 0, n02 = 1 (sorted wnids)
    np.testing.assert_array_equal(x_val[:, 0, 0, 0], [60, 0, 60])


# --------------------------------------------------------------------------------------------------
# STL-10 binary archive
# --------------------------------------------------------------------------------------------------


def _stl10_known_images(n, offset):
    h, w, c = np.meshgrid(np.arange(96), np.arange(96), np.arange(3), indexing="ij")
    return np.stack([((h * 3 + w * 7 + c * 50 + i + offset) % 256).astype(np.uint8) for i in range(n)])


def _write_stl10(directory, parts):
    directory.mkdir(parents=True, exist_ok=True)
    for filename, images in parts.items():
        # The archive stores each image as 3×96×96 in column-major order: element (c, w, h).
        (directory / filename).write_bytes(np.ascontiguousarray(np.transpose(images, (0, 3, 2, 1))).tobytes())


def test_stl10_binary_layout_and_labels(tmp_path):
    unlabeled, train, test = (_stl10_known_images(n, o) for n, o in ((3, 0), (2, 100), (2, 200)))
    _write_stl10(tmp_path / "stl10_binary",
                 {"unlabeled_X.bin": unlabeled, "train_X.bin": train, "test_X.bin": test})
    (tmp_path / "stl10_binary" / "train_y.bin").write_bytes(bytes([1, 10]))
    (tmp_path / "stl10_binary" / "test_y.bin").write_bytes(bytes([3, 4]))

    images, info = data.load_pretrain_images("stl10_binary", str(tmp_path))
    np.testing.assert_array_equal(as_arrays(images), np.concatenate([unlabeled, train]))
    assert (info.num_classes, info.image_size, info.num_pretrain_images) == (10, 64, 5)
    assert (info.mean, info.std) == data.NORMALIZATIONS["stl10"]

    x, y = as_arrays(data.load_labelled("stl10_binary", "train", str(tmp_path / "stl10_binary"))[0])
    np.testing.assert_array_equal(x, train)
    np.testing.assert_array_equal(y, [0, 9])
    assert y.dtype == np.int64
    _, y = as_arrays(data.load_labelled("stl10_binary", "test", str(tmp_path))[0])
    np.testing.assert_array_equal(y, [2, 3])


def test_stl10_binary_missing_and_bad_files(tmp_path):
    _write_stl10(tmp_path, {"train_X.bin": _stl10_known_images(1, 0)})
    with pytest.raises(data.DataUnavailableError) as error:
        data.load_pretrain_images("stl10_binary", str(tmp_path))
    assert_one_line(error, "unlabeled_X.bin", str(tmp_path))
    with pytest.raises(data.DataUnavailableError) as error:
        data.load_labelled("stl10_binary", "train", str(tmp_path))
    assert_one_line(error, "train_y.bin")
    (tmp_path / "train_y.bin").write_bytes(bytes([11]))
    with pytest.raises(ValueError, match="1..10"):
        data.load_labelled("stl10_binary", "train", str(tmp_path))
    (tmp_path / "test_X.bin").write_bytes(b"\0" * 1000)
    (tmp_path / "test_y.bin").write_bytes(bytes([1]))
    with pytest.raises(ValueError, match="truncated"):
        data.load_labelled("stl10_binary", "test", str(tmp_path))


# --------------------------------------------------------------------------------------------------
# digits (embedded)
# --------------------------------------------------------------------------------------------------


def test_digits_embedded_dataset():
    images, info = data.load_pretrain_images("digits")
    train, _ = data.load_labelled("digits", "train")
    test, _ = data.load_labelled("digits", "test")
    x_train, y_train = as_arrays(train)
    x_test, y_test = as_arrays(test)
    assert (info.num_classes, info.image_size, info.num_pretrain_images) == (10, 32, 1437)
    assert x_train.shape == (1437, 32, 32, 3) and x_test.shape == (360, 32, 32, 3)
    assert x_train.dtype == np.uint8 and x_train.max() > 200
    assert set(y_train) == set(y_test) == set(range(10))
    assert np.bincount(y_test).min() >= 35  # stratified
    np.testing.assert_array_equal(as_arrays(images), x_train)
    np.testing.assert_array_equal(x_train[..., 0], x_train[..., 2])
    assert 0.1 < info.mean[0] < 0.5 and info.std[0] > 0.1

    digits_source._DIGITS_CACHE.clear()  # rebuilt from scratch: identical
    x_again, y_again = as_arrays(data.load_labelled("digits", "test")[0])
    np.testing.assert_array_equal(x_again, x_test)
    np.testing.assert_array_equal(y_again, y_test)
