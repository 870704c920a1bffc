"""Dataset registry and loaders: tfds names, image folders, `.npz` arrays, the STL-10 binary archive,
Tiny-ImageNet and the embedded scikit-learn digits (DESIGN §4.10, METHODS §1.6).

Every loader returns decoded `uint8` images `(H, W, 3)` (pre-training) or `(image, int64 label)` pairs
(labelled splits), together with a `DatasetInfo`: `load_pretrain_images` / `load_labelled` as an
un-batched `tf.data.Dataset`, `load_pretrain_array` / `load_labelled_array` as indexable arrays. Greyscale
sources are repeated to three channels and alpha channels are dropped. Augmentation and normalisation
happen later (`myol_keras.augment`, the method and the export), so the images stay `uint8` here.

File-based sources (image folders, Tiny-ImageNet, the STL-10 binary archive, `.npz` files) are decoded
once into an on-disk cache and memory-mapped after that (`myol_keras.image_cache`): a warm start decodes
nothing, and private memory does not grow with the number of images.

`epoch_pipeline` (the CLI's) and `pretrain_pipeline` shuffle indices, not images: every epoch is a full
permutation of the data set (for `epoch_pipeline` a pure function of (seed, epoch), so a resumed run
sees the batches it would have seen), and each batch is gathered from the array by index.

When a dataset cannot be found or fetched, a `DataUnavailableError` says, on one line, which dataset,
where it looked and which offline routes exist. tfds itself, offline, retries a download for minutes
before failing; `load_*` checks reachability of the download host first (at most 3 s) instead.

Example:
    images, info = load_pretrain_array("digits")
    ds = pretrain_pipeline(images, lambda batch: (batch, batch), batch_size=64)
"""

from __future__ import annotations

import array as array_lib
import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import os
import socket
import threading
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from myol_keras import image_cache

__all__ = [
    "DATASETS",
    "NORMALIZATIONS",
    "DataUnavailableError",
    "DatasetInfo",
    "epoch_order",
    "epoch_pipeline",
    "load_labelled",
    "load_labelled_array",
    "load_pretrain_array",
    "load_pretrain_images",
    "pretrain_pipeline",
    "resolve_normalization",
    "validate_batch_size",
]


class DataUnavailableError(FileNotFoundError):
    """A dataset is not on this machine and cannot be fetched; the message names the offline routes."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the library needs to know about a dataset.

    Args:
        name: registry name (an entry of `DATASETS`).
        num_classes: number of classes, or `None` for unlabelled data.
        image_size: default training size (the RandomResizedCrop output and the evaluation resize);
            it may differ from the stored size (STL-10 is stored at 96 px and trained at 64).
        mean: per-channel mean of the [0, 1] pixels, used for normalisation.
        std: per-channel standard deviation of the [0, 1] pixels.
        num_pretrain_images: number of pre-training images, or `None` when unknown.
    """

    name: str
    num_classes: int | None
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_pretrain_images: int | None


# METHODS §1.6 (CIFAR-10/100, STL-10, Tiny-ImageNet) and the usual ImageNet statistics; the MNIST,
# Fashion-MNIST and SVHN rows are the commonly used values for those datasets.
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2565, 0.2712)),
    "tiny_imagenet": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "mnist": ((0.1307, 0.1307, 0.1307), (0.3081, 0.3081, 0.3081)),
    "fashion_mnist": ((0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530)),
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


@dataclasses.dataclass(frozen=True)
class _TfdsSpec:
    image_size: int
    pretrain_split: str
    num_pretrain_images: int
    download_url: str


_TFDS = {
    "cifar10": _TfdsSpec(32, "train", 50_000, "https://www.cs.toronto.edu/~kriz/"),
    "cifar100": _TfdsSpec(32, "train", 50_000, "https://www.cs.toronto.edu/~kriz/"),
    "stl10": _TfdsSpec(64, "unlabelled+train", 105_000, "http://ai.stanford.edu/~acoates/stl10/"),
    "fashion_mnist": _TfdsSpec(
        28, "train", 60_000, "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    ),
    "mnist": _TfdsSpec(28, "train", 60_000, "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    "svhn_cropped": _TfdsSpec(32, "train", 73_257, "http://ufldl.stanford.edu/housenumbers/"),
}
_LOCAL = ("tiny_imagenet", "stl10_binary", "folder", "npz", "digits")

DATASETS: tuple[str, ...] = tuple(_TFDS) + _LOCAL

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLITS = ("train", "test")

_STL10_SHAPE = (3, 96, 96)
_STL10_FILES = {
    "unlabeled": ("unlabeled_X.bin", None),
    "train": ("train_X.bin", "train_y.bin"),
    "test": ("test_X.bin", "test_y.bin"),
}
_CHUNK = 1024  # images per chunk: streaming arrays into tf.data, decoding into the cache
_IN_MEMORY_BYTES = 256 * 2**20  # arrays above this are streamed in chunks instead of copied into a tensor
_MAX_STATS_IMAGES = 10_000
_NETWORK_TIMEOUT = 3.0
_TEST_FRACTION = 0.2


# ---------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------


def load_pretrain_array(name, data_dir=None, *, download=True, image_size=None, cache_dir=None):
    """Unlabelled pre-training images of a registered dataset, as one indexable array.

    File-based sources (`folder`, `tiny_imagenet`, `stl10_binary`, `npz`) are decoded once into the
    on-disk cache (`myol_keras.image_cache`, built with a progress line) and memory-mapped from it, so
    private memory does not grow with the number of images and later runs start without decoding.
    tfds datasets and `digits` are held in memory.

    Args:
        name, data_dir, download, image_size: as in `load_pretrain_images`.
        cache_dir: the decoded-image cache directory (default: `image_cache.default_cache_dir()`).

    Returns:
        `(images, info)`: `uint8 [N, H, W, 3]` (an `np.memmap` for file-based sources) and a `DatasetInfo`.

    Raises:
        image_cache.ImageCacheError: the cache cannot be written (read-only, full disk) or the source
            changed while its cache was being built.

    Example:
        images, info = load_pretrain_array("folder", "/data/my_images")  # memory-mapped
        ds = epoch_pipeline(images, view_fn, 256, seed=0)
    """
    name = _check_name(name)
    _check_image_size_arg(name, image_size)
    if name in _TFDS:
        ds, info = load_pretrain_images(name, data_dir, download=download)
        return _materialise(ds), info
    if name == "digits":
        (x_train, _), _, info = _digits()
        return x_train, info
    if name == "npz":
        path = _require_data_dir(name, data_dir, "the .npz file")
        entry = _npz_entry(path, "train", cache_dir)
        return entry.images, _npz_info(entry)
    if name == "stl10_binary":
        root = _stl10_root(_require_data_dir(name, data_dir, "the STL-10 binary archive directory"))
        _stl10_require(root, ("unlabeled", "train"), labels=False)
        entry = _stl10_entry(root, ("unlabeled", "train"), cache_dir)
        return entry.images, _stl10_binary_info(len(entry.images))
    source = _image_source(name, data_dir, image_size)
    entry = source.cached("train", cache_dir)
    return entry.images, source.info(entry)


def load_pretrain_images(name, data_dir=None, *, download=True, image_size=None, cache_dir=None):
    """Unlabelled pre-training images of a registered dataset.

    Args:
        name: a name from `DATASETS`.
        data_dir: tfds data directory (tfds names; default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`),
            the `.npz` file (`npz`), or the directory (`folder`, `stl10_binary`, `tiny_imagenet`).
        download: allow tfds to download and prepare a missing dataset.
        image_size: training size for `folder` / `tiny_imagenet` (default: median short side capped to
            [16, 96] for folders, 64 for Tiny-ImageNet); images are centre-cropped and resized to it.
        cache_dir: the decoded-image cache of file-based sources (see `load_pretrain_array`).

    Returns:
        `(dataset, info)`: un-batched `uint8` images `(H, W, 3)` and a `DatasetInfo`. File-based
        sources stream from the memory-mapped cache.

    Example:
        images, info = load_pretrain_images("stl10_binary", "/data/stl10")  # 105k images, 96 px
    """
    name = _check_name(name)
    _check_image_size_arg(name, image_size)
    if name in _TFDS:
        spec = _TFDS[name]
        ds, info = _load_tfds(name, spec.pretrain_split, data_dir, download)
        return ds.map(lambda image, label: _to_rgb(image), num_parallel_calls=tf.data.AUTOTUNE), info
    images, info = load_pretrain_array(name, data_dir, download=download, image_size=image_size, cache_dir=cache_dir)
    return _dataset_from_arrays(images), info


def load_labelled_array(name, split, data_dir=None, *, download=True, image_size=None, cache_dir=None):
    """Labelled images of a registered dataset as arrays: `(images, labels, info)`.

    The images of file-based sources come from the same memory-mapped cache as pre-training
    (`load_pretrain_array`); tfds and `digits` splits are held in memory.

    Args:
        name, split, data_dir, download, image_size: as in `load_labelled`.
        cache_dir: the decoded-image cache directory (default: `image_cache.default_cache_dir()`).

    Returns:
        `uint8 [N, H, W, 3]` images, `int64 [N]` labels and a `DatasetInfo`.

    Example:
        x_test, y_test, info = load_labelled_array("tiny_imagenet", "test", "/data/tiny-imagenet-200")
    """
    name = _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    _check_image_size_arg(name, image_size)
    if name in _TFDS:
        ds, info = load_labelled(name, split, data_dir, download=download)
        images, labels = _materialise(ds)
        return images, labels, info
    if name == "digits":
        train, test, info = _digits()
        x, y = train if split == "train" else test
        return x, y, info
    if name == "npz":
        path = _require_data_dir(name, data_dir, "the .npz file")
        arrays = _read_npz(path, ("x_train", "y_train", f"x_{split}", f"y_{split}"), load=(f"y_{split}",))
        train = _npz_entry(path, "train", cache_dir)
        entry = train if split == "train" else _npz_entry(path, split, cache_dir)
        return entry.images, _npz_labels(arrays[f"y_{split}"], len(entry.images), split, path), _npz_info(train)
    if name == "stl10_binary":
        root = _stl10_root(_require_data_dir(name, data_dir, "the STL-10 binary archive directory"))
        _stl10_require(root, (split,), labels=True)
        entry = _stl10_entry(root, (split,), cache_dir)
        labels = _stl10_labels(root, split, len(entry.images))
        num_pretrain = _stl10_count(root, "unlabeled") + _stl10_count(root, "train")
        return entry.images, labels, _stl10_binary_info(num_pretrain or None)
    source = _image_source(name, data_dir, image_size)
    source.labelled_files(split)  # no labels / no such split: an error before anything is decoded
    entry = source.cached(split, cache_dir)
    train = entry if split == "train" else source.find("train", cache_dir)
    return entry.images, entry.labels, source.info(train)


def load_labelled(name, split, data_dir=None, *, download=True, image_size=None, cache_dir=None):
    """Labelled images of a registered dataset.

    Args:
        name: a name from `DATASETS`.
        split: `"train"` or `"test"` (Tiny-ImageNet's `val` is its test split; a class-folder layout
            without `train/` and `test/` is split 80/20 per class, deterministically).
        data_dir, download, image_size, cache_dir: as in `load_pretrain_images`.

    Returns:
        `(dataset, info)`: un-batched `(uint8 image (H, W, 3), int64 label)` pairs and a `DatasetInfo`.

    Example:
        test, info = load_labelled("npz", "test", "../shared/data/cifar10_subset.npz")
    """
    name = _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    _check_image_size_arg(name, image_size)
    if name in _TFDS:
        ds, info = _load_tfds(name, split, data_dir, download)
        return (
            ds.map(lambda image, label: (_to_rgb(image), tf.cast(label, tf.int64)),
                   num_parallel_calls=tf.data.AUTOTUNE),
            info,
        )
    images, labels, info = load_labelled_array(name, split, data_dir, download=download, image_size=image_size,
                                               cache_dir=cache_dir)
    return _dataset_from_arrays(images, labels), info


def pretrain_pipeline(
    images, view_fn, batch_size, *, drop_remainder=True, shuffle_buffer=0, seed=None, cache=True
):
    """shuffle → batch → map(view_fn) → prefetch, reshuffled every epoch; for `model.fit(ds, epochs=...)`.

    Every epoch is a full random permutation of the images (indices are shuffled, then each batch is
    gathered from the array). Not resumable: `epoch_pipeline` is the deterministic stream the CLI uses.

    Args:
        images: `uint8 [N, H, W, 3]` images (an array, e.g. from `load_pretrain_array`, or a
            `tf.data.Dataset` of un-batched images, read into memory once).
        view_fn: maps a `uint8` batch `(B, H, W, 3)` to a tuple of views; runs with AUTOTUNE parallelism.
        batch_size: images per batch (at least 2: BatchNorm needs two samples).
        drop_remainder: drop the last partial batch (the default; a batch of one breaks BatchNorm).
        shuffle_buffer: 0 (default): a full permutation every epoch. N > 1: instead, the previous
            pipeline's `tf.data` shuffle buffer of N images over a dataset in source order (local,
            class-clustered on class-sorted folders; `cache` keeps the images in memory). 1: no shuffle.
        seed: shuffle seed; the order still differs between epochs.
        cache: with `shuffle_buffer > 0`, cache the decoded images in memory after the first epoch.

    Example:
        ds = pretrain_pipeline(images, recipe.two_views, batch_size=256, seed=0)
    """
    if shuffle_buffer:
        ds = images if isinstance(images, tf.data.Dataset) else _dataset_from_arrays(_as_image_array(images))
        num_images = int(ds.cardinality())
        validate_batch_size(batch_size, num_images if num_images >= 0 else None, drop_remainder)
        ds = ds.cache() if cache else ds
        if shuffle_buffer > 1:
            ds = ds.shuffle(int(shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
        ds = ds.map(view_fn, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)
    array = _as_image_array(images)
    validate_batch_size(batch_size, len(array), drop_remainder)
    gather = _gather_images(array)
    ds = tf.data.Dataset.range(len(array)).shuffle(len(array), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    ds = ds.map(lambda indices: view_fn(gather(indices)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def epoch_seed(seed, epoch):
    """The stateless `[2]` int64 seed of one epoch: a pure function of (seed, epoch)."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.constant(0x5EED, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))


def batch_seed(seed, epoch, index):
    """The stateless augmentation seed of batch `index` of `epoch`."""
    return tf.random.experimental.stateless_fold_in(epoch_seed(seed, epoch), tf.cast(index, tf.int64))


def epoch_order(seed, epoch, num_images, stream=0):
    """The permutation of `range(num_images)` that epoch `epoch` visits: a pure function of its arguments.

    Args:
        seed: the run's integer seed.
        epoch: the epoch.
        num_images: the size of the data set.
        stream: 0 for the order of the images, 1 for their representation-mixing counterparts
            (an independent permutation).

    Returns:
        An `int64 [num_images]` tensor.
    """
    key = tf.random.experimental.stateless_fold_in(epoch_seed(seed, epoch), tf.cast(stream, tf.int64))
    return tf.random.experimental.stateless_shuffle(tf.range(num_images, dtype=tf.int64), seed=key)


def epoch_pipeline(
    images,
    view_fn,
    batch_size,
    *,
    seed=0,
    start_epoch=0,
    steps_per_epoch=None,
    drop_remainder=True,
    shuffle_buffer=0,
    counterparts=False,
):
    """A resumable, deterministic pre-training stream: epochs `start_epoch, start_epoch + 1, ...`.

    Every epoch is a full permutation of the data set (`epoch_order`), drawn
    statelessly from `(seed, epoch)` instead of from stateful generators, which
    Keras does not checkpoint. The permutation shuffles indices, not images
    (8 MB for a million images): it is cut into batches of indices, each batch
    is gathered from the image array (reading a memory-mapped cache in sorted
    order, returned in permutation order), and batch `i` of epoch `e` is
    augmented with `view_fn(batch, seed=batch_seed(seed, e, i))`. A run resumed
    at epoch `e` therefore sees exactly the batches an uninterrupted run would
    have seen. The stream is infinite; give `fit` a `steps_per_epoch`.

    Args:
        images: `uint8 [N, H, W, 3]` images: an array (`load_pretrain_array`; an
            `np.memmap` is read batch by batch) or a `tf.data.Dataset` of
            un-batched images (read into memory once).
        view_fn: `(batch, seed) -> tuple of views` (`augment.make_view_fn`);
            with `counterparts=True`, `(x, r, seed)`. None: no augmentation
            here; each element is `{"images": batch (or (x, r)), "seed":
            [batch, 2]}` (the batch seed on every row, so a distributed
            dataset can split it) for a model that augments on the device
            (`BootstrapMethod.set_device_augmentation`).
        batch_size: images per batch.
        seed: the run's integer seed.
        start_epoch: the first epoch of the stream (the resumed epoch).
        steps_per_epoch: batches per epoch (default: one pass, `len // batch_size`
            with `drop_remainder`, else rounded up); a smaller cap takes the
            first batches of each epoch's permutation.
        drop_remainder: drop the last partial batch of each epoch.
        shuffle_buffer: 0 (default): the global permutation above. N > 1: the
            previous pipeline instead, a `tf.data` shuffle buffer of N images
            over the images in source order, seeded from `(seed, epoch)` (local:
            class-clustered batches on class-sorted folders, and every image
            held in memory); kept to resume runs started with it. 1: source order.
        counterparts: pair every image with a counterpart from an independent
            permutation of the data set (representation mixing, METHODS §2.6).

    Example:
        ds = epoch_pipeline(images, augment.make_view_fn([r, r]), 256, seed=0, start_epoch=12)
    """
    if shuffle_buffer:
        batches, load = _buffered_epochs(images, batch_size, seed, start_epoch, steps_per_epoch, drop_remainder,
                                         shuffle_buffer, counterparts)
    else:
        batches, load = _permuted_epochs(images, batch_size, seed, start_epoch, steps_per_epoch, drop_remainder,
                                         counterparts)

    def views(epoch, index, batch):
        batch = load(batch)
        batch_key = batch_seed(seed, epoch, index)
        if view_fn is None:
            rows = tf.shape(tf.nest.flatten(batch)[0])[0]
            return {"images": batch, "seed": tf.tile(batch_key[None], [rows, 1])}
        if isinstance(batch, tuple):
            return view_fn(*batch, seed=batch_key)
        return view_fn(batch, seed=batch_key)

    ds = batches.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _permuted_epochs(images, batch_size, seed, start_epoch, steps_per_epoch, drop_remainder, counterparts):
    """`(epoch, index, batch of indices)` elements, each epoch a full permutation, and the gather."""
    array = _as_image_array(images)
    num_images = len(array)
    steps = steps_in_epoch(num_images, batch_size, drop_remainder, steps_per_epoch)
    gather = _gather_images(array)

    def one_epoch(epoch):
        ds = tf.data.Dataset.from_tensor_slices(epoch_order(seed, epoch, num_images))
        if counterparts:
            others = tf.data.Dataset.from_tensor_slices(epoch_order(seed, epoch, num_images, stream=1))
            ds = tf.data.Dataset.zip((ds, others))
        ds = ds.batch(int(batch_size), drop_remainder=drop_remainder).take(steps)
        return ds.enumerate().map(lambda index, batch: (epoch, index, batch))

    def load(indices):
        if counterparts:
            return gather(indices[0]), gather(indices[1])
        return gather(indices)

    return tf.data.Dataset.range(int(start_epoch), 2**62).flat_map(one_epoch), load


def _buffered_epochs(images, batch_size, seed, start_epoch, steps_per_epoch, drop_remainder, shuffle_buffer,
                     counterparts):
    """`(epoch, index, batch of images)` elements of the previous pipeline (a shuffle buffer of images per
    epoch), and the identity."""
    source = images if isinstance(images, tf.data.Dataset) else _dataset_from_arrays(_as_image_array(images))
    num_images = int(source.cardinality())
    if num_images < 0:
        num_images = sum(1 for _ in source)
    steps = steps_in_epoch(num_images, batch_size, drop_remainder, steps_per_epoch)
    source = source.cache()
    shuffle = shuffle_buffer > 1

    def shuffled(op_seed):
        if not shuffle:
            return source
        return source.shuffle(int(shuffle_buffer), seed=op_seed, reshuffle_each_iteration=False)

    def one_epoch(epoch):
        # The shuffle seeds are tensors derived from (seed, epoch). Give this
        # function graph its own fixed non-zero graph seed, so the op seeds do
        # not combine with (and, for a global seed of 0, trip over) whatever
        # global seed the caller set: the order depends on (seed, epoch) only.
        tf.compat.v1.get_default_graph().seed = 0x5EED
        order_seed, counterpart_seed = tf.unstack(epoch_seed(seed, epoch))
        ds = shuffled(order_seed)
        if counterparts:
            others = source.shuffle(
                max(int(shuffle_buffer), 2), seed=counterpart_seed, reshuffle_each_iteration=False
            ).repeat()
            ds = tf.data.Dataset.zip((ds, others))
        ds = ds.batch(int(batch_size), drop_remainder=drop_remainder).take(steps)
        return ds.enumerate().map(lambda index, batch: (epoch, index, batch))

    return tf.data.Dataset.range(int(start_epoch), 2**62).flat_map(one_epoch), lambda batch: batch


def resolve_normalization(name_or_stats, info):
    """Normalisation statistics: `"auto"` (the dataset's own), a `NORMALIZATIONS` key, or `(mean, std)`.

    Returns:
        `(mean, std)`, each a tuple of three floats.

    Example:
        mean, std = resolve_normalization("imagenet", info)
    """
    if isinstance(name_or_stats, str):
        key = name_or_stats.strip().lower()
        if key == "auto":
            return tuple(map(float, info.mean)), tuple(map(float, info.std))
        if key in NORMALIZATIONS:
            mean, std = NORMALIZATIONS[key]
            return tuple(mean), tuple(std)
        choices = ", ".join(("auto",) + tuple(NORMALIZATIONS))
        raise ValueError(f"Unknown normalisation; choose one of: {choices}. Received: {name_or_stats!r}")
    try:
        mean, std = name_or_stats
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        mean = std = ()
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(
            "Normalisation must be 'auto', a name from NORMALIZATIONS or ((m, m, m), (s, s, s)) with s > 0. "
            f"Received: {name_or_stats!r}"
        )
    return mean, std


def validate_batch_size(batch_size, num_images, drop_remainder):
    """Raise `ValueError` for a batch size that BatchNorm training cannot use.

    Args:
        batch_size: images per batch; must be an integer ≥ 2.
        num_images: images per epoch, or `None` when unknown (then only `batch_size` is checked).
        drop_remainder: whether the last partial batch is dropped.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 2:
        raise ValueError(
            f"batch_size must be an integer >= 2 (BatchNorm needs at least two images per batch). "
            f"Received: batch_size={batch_size!r}"
        )
    if num_images is None:
        return
    if drop_remainder and num_images < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the dataset ({num_images} images), so with "
            f"drop_remainder every batch is dropped; use --batch_size <= {num_images} or --nodrop_remainder."
        )
    if not drop_remainder and num_images % batch_size == 1:
        raise ValueError(
            f"With {num_images} images and batch_size={batch_size} the last batch holds one image, "
            "which breaks BatchNorm; use --drop_remainder or another batch size."
        )


def steps_in_epoch(num_images, batch_size, drop_remainder=True, cap=None):
    """Optimizer steps in one epoch: one pass over `num_images`, or `cap` if it is smaller.

    Validates the batch size first (`validate_batch_size`); the one place the
    number of steps per epoch is decided (the pipeline and the schedules agree).

    Args:
        num_images: images per epoch.
        batch_size: images per batch.
        drop_remainder: whether the last partial batch is dropped.
        cap: at most this many steps (None or 0: a full pass).

    Example:
    >>> steps_in_epoch(4660, 128), steps_in_epoch(4660, 128, drop_remainder=False), steps_in_epoch(4660, 128, cap=10)
    (36, 37, 10)
    """
    validate_batch_size(batch_size, num_images, drop_remainder)
    full = num_images // batch_size if drop_remainder else -(-num_images // batch_size)
    if cap is not None and cap < 0:
        raise ValueError(f"steps_per_epoch={cap} must be 0 (a full pass) or a positive cap.")
    return min(full, int(cap)) if cap else full


# ---------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------


def _check_name(name):
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset; choose one of: {', '.join(DATASETS)}. Received: {name!r}")
    return name


def _check_image_size_arg(name, image_size):
    if image_size is None:
        return
    if name not in ("folder", "tiny_imagenet"):
        raise ValueError(
            f"image_size can only be set for 'folder' and 'tiny_imagenet'. Received: image_size="
            f"{image_size!r} for dataset {name!r}"
        )
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8. Received: image_size={image_size!r}")


def _require_data_dir(name, data_dir, what):
    if data_dir is None or str(data_dir) == "":
        raise ValueError(f"Dataset {name!r} reads {what}: set --data_dir (data_dir=...) to it.")
    path = Path(os.path.expanduser(str(data_dir)))
    if not path.exists():
        raise DataUnavailableError(
            f"Dataset {name!r}: {path} does not exist; point --data_dir at {what}."
        )
    return path


def _to_rgb(image):
    """Repeat a greyscale image to 3 channels and drop an alpha channel (static channel count)."""
    channels = image.shape[-1]
    if channels == 1:
        return tf.repeat(image, 3, axis=-1)
    if channels == 4:
        return image[..., :3]
    return image


def _dataset_from_arrays(images, labels=None):
    """A tf.data.Dataset over `images` (and int64 `labels`), streamed in chunks when large.

    Small in-memory arrays become one tensor; memory-mapped or large arrays are read `_CHUNK` images
    at a time, so they are never copied whole.
    """
    n = len(images)
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
    if not (isinstance(images, np.memmap) or images.nbytes > _IN_MEMORY_BYTES):
        return tf.data.Dataset.from_tensor_slices(images if labels is None else (images, labels))

    def chunks():
        for start in range(0, n, _CHUNK):
            x = np.ascontiguousarray(images[start : start + _CHUNK], dtype=np.uint8)
            yield x if labels is None else (x, labels[start : start + _CHUNK])

    image_spec = tf.TensorSpec((None, *images.shape[1:]), tf.uint8)
    spec = image_spec if labels is None else (image_spec, tf.TensorSpec((None,), tf.int64))
    ds = tf.data.Dataset.from_generator(chunks, output_signature=spec).unbatch()
    return ds.apply(tf.data.experimental.assert_cardinality(n))


def _image_stats(images):
    """Per-channel mean/std of uint8 images in [0, 1] units, from at most 10k evenly spaced images.

    Read `_CHUNK` images at a time (a memory-mapped cache is never copied whole); two passes, so the
    standard deviation is taken around the mean as `np.std` does.
    """
    step = max(1, len(images) // _MAX_STATS_IMAGES)
    index = np.arange(0, len(images), step)[:_MAX_STATS_IMAGES]
    chunks = [index[i : i + _CHUNK] for i in range(0, len(index), _CHUNK)]
    pixels = len(index) * int(np.prod(images.shape[1:-1]))
    total = sum(np.asarray(images[c], dtype=np.float64).sum(axis=(0, 1, 2)) for c in chunks)
    mean = total / 255.0 / pixels
    squares = sum((((np.asarray(images[c], dtype=np.float64) / 255.0) - mean) ** 2).sum(axis=(0, 1, 2))
                  for c in chunks)
    std = np.sqrt(squares / pixels)
    std = np.where(std > 0, std, 1.0)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def _as_image_array(images):
    """An indexable array of un-batched images: arrays as given (a memmap stays mapped), a Dataset read once."""
    if isinstance(images, tf.data.Dataset):
        images = _materialise(images)
    elif tf.is_tensor(images):
        images = images.numpy()
    elif not isinstance(images, np.ndarray):
        images = np.asarray(images)
    if images.ndim < 2 or len(images) == 0:
        raise ValueError(f"images must be a non-empty array of images [N, H, W, C]. Received shape {images.shape}")
    return images


def _materialise(ds):
    """All elements of a finite dataset of images (or of tuples) as NumPy arrays, read `_CHUNK` at a time.

    With a known cardinality the arrays are allocated once and filled (no second copy at the end).
    """
    count = int(ds.cardinality())
    batches = ds.batch(_CHUNK).as_numpy_iterator()
    first = next(batches, None)
    if first is None:
        raise ValueError("the dataset holds no images")
    single = not isinstance(first, tuple)
    first = (first,) if single else first
    if count > 0:
        out = tuple(np.empty((count, *part.shape[1:]), part.dtype) for part in first)
        start = 0
        for batch in itertools.chain([first], ((b,) if single else b for b in batches)):
            for array, part in zip(out, batch):
                array[start : start + len(part)] = part
            start += len(batch[0])
        out = tuple(array[:start] for array in out)
    else:
        parts = [first] + [(b,) if single else b for b in batches]
        out = tuple(np.concatenate([p[i] for p in parts]) for i in range(len(first)))
    return out[0] if single else out


def _gather_images(array):
    """`indices [B] -> images [B, ...]` in tf.data: a NumPy gather from `array` (in memory or memory-mapped).

    The rows are read in sorted index order (sequential reads from a memory-mapped cache) and returned in
    the order of `indices`.
    """
    shape = tuple(array.shape[1:])

    def take(indices):
        order = np.argsort(indices, kind="stable")
        rows = np.asarray(array[indices[order]])  # sorted reads
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return rows[inverse]  # a gather: several times faster than scattering into a new array

    def gather(indices):
        batch = tf.numpy_function(take, [indices], tf.as_dtype(array.dtype), stateful=False)
        batch.set_shape(indices.shape.concatenate(shape))
        return batch

    return gather


def _stratified_split(labels, test_fraction=_TEST_FRACTION, seed=0):
    """Deterministic per-class split: boolean mask of test items (every class keeps ≥ 1 train item)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        rng.shuffle(index)
        count = min(int(round(len(index) * test_fraction)), len(index) - 1)
        is_test[index[:count]] = True
    return is_test


# ---------------------------------------------------------------------------------------------------
# tfds
# ---------------------------------------------------------------------------------------------------


def _tfds_dir(data_dir):
    return str(
        Path(os.path.expanduser(str(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")))
    )


def _offline_routes(name):
    routes = []
    if name == "stl10":
        routes.append(
            "--dataset=stl10_binary --data_dir=DIR with the STL-10 binary archive (stl10_binary/*.bin)"
        )
    routes += [
        "--dataset=folder --data_dir=DIR",
        "--dataset=npz --data_dir=FILE.npz",
        "--dataset=digits (embedded, no download)",
    ]
    return "Offline routes: " + ", ".join(routes[:-1]) + ", or " + routes[-1] + "."


def _download_possible(name, timeout=_NETWORK_TIMEOUT):
    """Whether the download host of a tfds dataset (or the proxy for it) answers within `timeout` s."""
    url = urllib.parse.urlsplit(_TFDS[name].download_url)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname):
        target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = target.hostname, target.port or 80
    else:
        host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    result = []

    def probe():  # in a thread: name resolution ignores socket timeouts
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _load_tfds(name, split, data_dir, download):
    """`builder.as_dataset(split, as_supervised=True)`, preparing the data first only when possible.

    `as_dataset` is tried before anything else, so `tfds.testing.mock_data` (which patches it) works.
    """
    import tensorflow_datasets as tfds

    directory = _tfds_dir(data_dir)
    builder = tfds.builder(name, data_dir=directory)
    spec = _TFDS[name]
    if not builder.is_prepared():
        try:
            ds = builder.as_dataset(split=split, as_supervised=True)
        except AssertionError:  # tfds: "could not find data in ..."
            ds = None
        if ds is None:
            if not download:
                raise DataUnavailableError(
                    f"Dataset {name!r} is not prepared in {directory} (tfds) and downloading is off. "
                    + _offline_routes(name)
                )
            if not _download_possible(name):
                raise DataUnavailableError(
                    f"Dataset {name!r} is not available offline: looked in {directory} (tfds) and nothing "
                    "is prepared there, and downloads are not possible from this machine. "
                    + _offline_routes(name)
                )
            try:
                builder.download_and_prepare()
            except ModuleNotFoundError as error:
                raise ModuleNotFoundError(
                    f"tfds could not prepare {name!r}: {error}; install it with pip "
                    f"(tensorflow-datasets 4.9.x needs importlib_resources)."
                ) from error
            ds = builder.as_dataset(split=split, as_supervised=True)
    else:
        ds = builder.as_dataset(split=split, as_supervised=True)
    num_pretrain = spec.num_pretrain_images
    try:
        splits = builder.info.splits
        if splits:
            num_pretrain = sum(splits[s].num_examples for s in spec.pretrain_split.split("+"))
    except (KeyError, ValueError, TypeError):
        pass
    mean, std = NORMALIZATIONS[name]
    info = DatasetInfo(
        name=name,
        num_classes=int(builder.info.features["label"].num_classes),
        image_size=spec.image_size,
        mean=mean,
        std=std,
        num_pretrain_images=num_pretrain,
    )
    return ds, info


# ---------------------------------------------------------------------------------------------------
# digits (embedded)
# ---------------------------------------------------------------------------------------------------

_DIGITS_CACHE = {}


def _digits():
    """scikit-learn's 8×8 digits at 32 px RGB uint8, split 80/20 (stratified, seed 0)."""
    if "data" not in _DIGITS_CACHE:
        from PIL import Image
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        small = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        big = np.stack(
            [np.asarray(Image.fromarray(im, mode="L").resize((32, 32), Image.BILINEAR)) for im in small]
        )
        images = np.repeat(big[..., None], 3, axis=-1)
        labels = digits.target.astype(np.int64)
        x_train, x_test, y_train, y_test = train_test_split(
            images, labels, test_size=_TEST_FRACTION, random_state=0, stratify=labels
        )
        for array in (x_train, x_test, y_train, y_test):
            array.setflags(write=False)
        mean, std = _image_stats(x_train)
        info = DatasetInfo("digits", 10, 32, mean, std, len(x_train))
        _DIGITS_CACHE["data"] = ((x_train, y_train), (x_test, y_test), info)
    return _DIGITS_CACHE["data"]


# ---------------------------------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------------------------------


def _read_npz(path, required, load=("x_train", "y_train", "x_test", "y_test")):
    """The arrays `load` of an .npz file (those present), after checking `required` ones exist.

    One-line ValueErrors for a bad file or missing keys. Only the arrays in `load` are read.
    """
    if path.is_dir():
        raise ValueError(f"Dataset 'npz' expects a .npz file for --data_dir, but {path} is a directory.")
    keys = []
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array (.npy), not an archive of named arrays")
        with npz:
            keys = list(npz.files)
            missing = [k for k in dict.fromkeys(required) if k not in keys]
            if missing:
                raise KeyError(missing)
            arrays = {k: npz[k] for k in load if k in keys}
    except KeyError as error:
        raise ValueError(
            f"{path} lacks the arrays {', '.join(error.args[0])}; found: {', '.join(keys) or 'none'} "
            "(expected x_train, y_train, x_test, y_test)."
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as error:
        detail = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(f"{path} is not a valid .npz file (corrupt or truncated?): {detail}") from None
    return arrays


def _uint8_converter(x, path, key):
    """Check `x` once, whole; return `chunk -> uint8 NHWC RGB` for its chunks.

    Accepts NHWC (C in 1, 3, 4) or NHW images, uint8 or [0, 1] floats or 0..255 integers. Whether
    floats are scaled by 255 is decided from the whole array, not per chunk.
    """
    shape = x.shape + (1,) if x.ndim == 3 else x.shape
    if len(shape) != 4 or shape[-1] not in (1, 3, 4) or shape[0] == 0:
        raise ValueError(
            f"{path}: {key} must be non-empty images shaped (N, H, W), (N, H, W, 1), (N, H, W, 3) or "
            f"(N, H, W, 4). Received shape {x.shape}."
        )
    scale = None
    if x.dtype != np.uint8:
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise ValueError(f"{path}: {key} must hold numbers; received dtype {x.dtype}.")
        low, high = float(x.min()), float(x.max())
        if np.issubdtype(x.dtype, np.floating) and low >= 0.0 and high <= 1.0:
            scale = 255.0
        elif low < 0 or high > 255:
            raise ValueError(
                f"{path}: {key} values must be uint8, floats in [0, 1] or numbers in 0..255; "
                f"received {x.dtype} in [{low:g}, {high:g}]."
            )
        else:
            scale = 1.0

    def convert(chunk):
        if chunk.ndim == 3:
            chunk = chunk[..., None]
        if scale is not None:
            chunk = np.round(chunk * scale).astype(np.uint8)
        if chunk.shape[-1] == 1:
            return np.repeat(chunk, 3, axis=-1)
        return chunk[..., :3]

    return convert


def _npz_entry(path, split, cache_dir):
    """The cached `x_<split>` images of an .npz file (the file is read only to build the entry)."""
    key = f"x_{split}"

    def open_arrays():
        x = _read_npz(path, (key,), load=(key,))[key]
        return [(x, _uint8_converter(x, path, key))]

    def summarise(images):
        labels = _read_npz(path, (), load=("y_train", "y_test"))
        labels = [y for y in labels.values() if y.size and np.issubdtype(y.dtype, np.number)]
        num_classes = int(max(float(y.max()) for y in labels)) + 1 if labels else None
        mean, std = _image_stats(images)
        return {"num_classes": num_classes, "mean": mean, "std": std}

    source = _FileArraySource("npz", path, key, [path], f"{path} ({key})", open_arrays,
                              summarise if split == "train" else None)
    return image_cache.load(source, cache_dir)


def _npz_labels(y, n, split, path):
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"{path}: y_{split} must be a vector of {n} labels (one per image of x_{split}); "
            f"received shape {y.shape}."
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"{path}: y_{split} must hold integer class ids; received dtype {y.dtype}.")
    if len(y) and y.min() < 0:
        raise ValueError(
            f"{path}: y_{split} holds labels out of range: class ids must be 0..K-1, "
            f"received min {y.min():g}."
        )
    return y.astype(np.int64)


def _npz_info(train):
    """The `DatasetInfo` of an .npz dataset, from its cached `x_train` entry."""
    meta = train.meta
    return DatasetInfo("npz", meta.get("num_classes"), int(train.images.shape[1]), tuple(meta["mean"]),
                       tuple(meta["std"]), len(train.images))


# ---------------------------------------------------------------------------------------------------
# STL-10 binary archive
# ---------------------------------------------------------------------------------------------------


def _stl10_root(path):
    if (path / "stl10_binary").is_dir():
        return path / "stl10_binary"
    return path


def _stl10_require(root, parts, labels):
    expected = []
    for part in parts:
        images, label_file = _STL10_FILES[part]
        expected.append(images)
        if labels and label_file:
            expected.append(label_file)
    missing = [f for f in expected if not (root / f).is_file()]
    if missing:
        raise DataUnavailableError(
            f"Dataset 'stl10_binary': {root} lacks {', '.join(missing)}; expected the STL-10 binary "
            f"archive (stl10_binary.tar.gz, unpacked) with {', '.join(expected)} in DIR or DIR/stl10_binary."
        )


def _stl10_count(root, part):
    path = root / _STL10_FILES[part][0]
    return path.stat().st_size // int(np.prod(_STL10_SHAPE)) if path.is_file() else 0


def _stl10_images(root, part):
    """Memory-mapped (N, 3, 96, 96) uint8 images, as stored (column-major per image)."""
    path = root / _STL10_FILES[part][0]
    size, per_image = path.stat().st_size, int(np.prod(_STL10_SHAPE))
    if size == 0 or size % per_image:
        raise ValueError(
            f"{path} is not an STL-10 image file: {size} bytes is not a positive multiple of {per_image} "
            "(3×96×96); the file may be truncated."
        )
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(size // per_image, *_STL10_SHAPE))


def _stl10_entry(root, parts, cache_dir):
    """The cached (N, 96, 96, 3) images of the STL-10 `parts` (in order), converted from the .bin files."""
    part = "+".join(parts)
    files = [root / _STL10_FILES[p][0] for p in parts]
    source = _FileArraySource("stl10_binary", root, part, files, f"dataset 'stl10_binary' at {root} ({part})",
                              lambda: [(_stl10_images(root, p), _stl10_to_hwc) for p in parts])
    return image_cache.load(source, cache_dir)


def _stl10_to_hwc(x):
    """(N, 3, 96, 96) column-major STL-10 images → (N, 96, 96, 3) row-major."""
    return np.transpose(x, (0, 3, 2, 1))


def _stl10_labels(root, part, count):
    path = root / _STL10_FILES[part][1]
    labels = np.fromfile(path, dtype=np.uint8)
    if len(labels) != count:
        raise ValueError(
            f"{path} holds {len(labels)} labels but {_STL10_FILES[part][0]} holds {count} images."
        )
    if len(labels) and (labels.min() < 1 or labels.max() > 10):
        raise ValueError(
            f"{path}: STL-10 labels must be 1..10; found values in [{labels.min()}, {labels.max()}]."
        )
    return labels.astype(np.int64) - 1


def _stl10_binary_info(num_pretrain):
    mean, std = NORMALIZATIONS["stl10"]
    return DatasetInfo("stl10_binary", 10, 64, mean, std, num_pretrain)


# ---------------------------------------------------------------------------------------------------
# Sources of the decoded-image cache
# ---------------------------------------------------------------------------------------------------


class _FileArraySource(image_cache.CacheSource):
    """Images read from arrays stored in files (an .npz member, STL-10 .bin files).

    The fingerprint is the files' sizes and modification times, so a warm start never opens them;
    the arrays are opened (and checked) only when the entry is built.
    """

    def __init__(self, kind, path, part, files, describe, open_arrays, summarise=None):
        self.identity = {"kind": kind, "path": str(Path(path).resolve()), "part": part}
        self.describe = describe
        self.files = [Path(f) for f in files]
        self._stat = self._stat_files()
        self._open_arrays = open_arrays  # () -> [(array, chunk -> uint8 NHWC)]
        self._arrays = None
        self._summarise = summarise

    def _stat_files(self):
        stats = []
        for f in self.files:
            try:
                st = f.stat()
                stats.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
            except OSError:
                stats.append([str(f), -1, -1])
        return stats

    def fingerprint(self):
        return json.dumps(self._stat)

    def changes(self):
        changed = [Path(a[0]).name for a, b in zip(self._stat, self._stat_files()) if a != b]
        return f"{', '.join(changed)} modified" if changed else ""

    @property
    def arrays(self):
        if self._arrays is None:
            self._arrays = self._open_arrays()
        return self._arrays

    @property
    def count(self):
        return sum(len(array) for array, _ in self.arrays)

    @property
    def image_shape(self):
        array, transform = self.arrays[0]
        return tuple(transform(array[:1]).shape[1:])

    def chunks(self):
        for array, transform in self.arrays:
            for start in range(0, len(array), _CHUNK):
                yield transform(array[start : start + _CHUNK]), None

    def summarise(self, images):
        return self._summarise(images) if self._summarise else {}


class _FolderCacheSource(image_cache.CacheSource):
    """One split of an image folder or Tiny-ImageNet, decoded (`_decode_image`) chunk by chunk."""

    def __init__(self, source, split):
        self.source, self.split = source, split
        self.files = source.splits[split]
        self.identity = {"kind": source.name, "path": str(source.root.resolve()), "part": split,
                         "image_size": source.image_size}
        self.describe = source.describe
        self.count = len(self.files)
        self.image_shape = (source.image_size, source.image_size, 3)
        self._fingerprint = None
        self._skipped = []

    def fingerprint(self):
        if self._fingerprint is None:
            self._fingerprint = self.files.digest(self.source.root)
        return self._fingerprint

    def changes(self):
        try:
            again = _ImageSource(self.source.name, self.source.given_root, self.source.image_size)
        except (OSError, ValueError) as e:
            return f"it can no longer be listed: {e}"
        files = again.splits.get(self.split)
        if files is None:
            return f"its {self.split} split is gone"
        if files.digest(self.source.root) == self.fingerprint():
            return ""
        return self.files.difference(files, self.source.root)

    def chunks(self):
        return _decode_chunks(self.files, self.source.image_size, self.describe, self._skipped)

    def summarise(self, images):
        facts = {"files": len(self.files), "skipped": len(self._skipped),
                 "skipped_examples": [Path(p).name for p in self._skipped[:5]]}
        if self.source.name != "tiny_imagenet":
            mean, std = _image_stats(images)
            facts.update(mean=mean, std=std)
        return facts


# ---------------------------------------------------------------------------------------------------
# Image folders and Tiny-ImageNet
# ---------------------------------------------------------------------------------------------------


def _is_image_name(name):
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _visible_dirs(path):
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _iter_images(directory, recursive):
    """The `os.DirEntry`s of the image files in `directory` (or below it), skipping hidden files and
    folders, in sorted relative-path order (names sorted per folder, depth first); links to folders
    are not followed (as `Path.rglob`). One `scandir` per folder: no per-file `Path` objects."""
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_file():
                if _is_image_name(entry.name):
                    yield entry
            elif recursive and entry.is_dir(follow_symlinks=False):
                yield from _iter_images(entry.path, True)
        except OSError:
            continue


def _contains_image(path):
    """Whether any image lies under `path` (stops at the first one)."""
    return any(True for _ in _iter_images(path, recursive=True))


class _Files:
    """The image files of one split: paths (strings), labels or None, and each file's size and mtime.

    Compact for large folders: no `Path` per file, sizes and times in integer arrays.
    """

    def __init__(self, labels=None):
        self.paths = []
        self.sizes = array_lib.array("q")
        self.mtimes = array_lib.array("q")
        self.labels = labels

    def add(self, path, stat=None):
        try:
            stat = stat or os.stat(path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # listed but missing (e.g. in val_annotations.txt): skipped when decoded
            size = mtime = -1
        self.paths.append(path)
        self.sizes.append(size)
        self.mtimes.append(mtime)

    def add_entries(self, entries):
        for entry in entries:
            try:
                stat = entry.stat()
            except OSError:
                stat = None
            self.add(entry.path, stat)

    def __len__(self):
        return len(self.paths)

    def subset(self, mask):
        out = _Files(None if self.labels is None else self.labels[mask])
        for i in np.flatnonzero(mask):
            out.paths.append(self.paths[i])
            out.sizes.append(self.sizes[i])
            out.mtimes.append(self.mtimes[i])
        return out

    def _rows(self, root):
        prefix = str(root) + os.sep
        for path, size, mtime in zip(self.paths, self.sizes, self.mtimes):
            yield (path[len(prefix):] if path.startswith(prefix) else path), size, mtime

    def digest(self, root):
        """A hash of the relative paths, sizes, modification times and labels."""
        digest = hashlib.sha256()
        rows = self._rows(root)
        while True:
            block = [f"{rel}\t{size}\t{mtime}\n" for rel, size, mtime in itertools.islice(rows, 4096)]
            if not block:
                break
            digest.update("".join(block).encode("utf-8", "surrogateescape"))
        if self.labels is not None:
            digest.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def difference(self, other, root):
        """`other` against this listing, in words: counts of added, removed, modified files, a few names."""
        before = {rel: (size, mtime) for rel, size, mtime in self._rows(root)}
        after = {rel: (size, mtime) for rel, size, mtime in other._rows(root)}
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        modified = sorted(rel for rel in set(before) & set(after) if before[rel] != after[rel])
        parts = [f"{len(names)} file(s) {what}" for names, what in
                 ((added, "added"), (removed, "removed"), (modified, "modified")) if names]
        names = (added + removed + modified)[:3]
        if not parts:
            return "the labels changed"
        return ", ".join(parts) + (f": {', '.join(names)}" if names else "")


def _class_files(split_dir, classes=None):
    """(`_Files` with labels, class names) of a class-folder layout; `classes` fixes the id mapping."""
    listing = [(d, list(_iter_images(d, recursive=True))) for d in _visible_dirs(split_dir)]
    listing = [(d, entries) for d, entries in listing if entries]
    names = [d.name for d, _ in listing]
    if classes is None:
        classes = names
    else:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise ValueError(
                f"{split_dir} has classes missing from the training split: {', '.join(unknown[:5])}."
            )
    index = {name: i for i, name in enumerate(classes)}
    labels = np.concatenate([np.full(len(entries), index[d.name], np.int64) for d, entries in listing]
                            or [np.zeros(0, np.int64)])
    files = _Files(labels)
    for _, entries in listing:
        files.add_entries(entries)
    return files, classes


def _flat_files(directory):
    files = _Files()
    files.add_entries(_iter_images(directory, recursive=False))
    return files


class _ImageSource:
    """The files of a `folder` or `tiny_imagenet` dataset, found before anything is decoded."""

    def __init__(self, name, root, image_size):
        self.name, self.root, self.given_root = name, root, root
        self.describe = f"dataset {name!r} at {root}"
        self.splits = {}  # split → _Files
        self.classes = None
        if name == "tiny_imagenet":
            self._find_tiny_imagenet()
        else:
            self._find_folder()
        if image_size is None:
            image_size = 64 if name == "tiny_imagenet" else self._median_short_side()
        self.image_size = int(image_size)

    def _find_folder(self):
        root = self.root
        if not root.is_dir():
            raise ValueError(
                f"Dataset 'folder' expects a directory of images for --data_dir; {root} is a file."
            )
        subdirs = {d.name.lower(): d for d in _visible_dirs(root)}
        if "train" in subdirs:
            train_dir = subdirs["train"]
            test_dir = subdirs.get("test") or subdirs.get("val")
            if any(_contains_image(d) for d in _visible_dirs(train_dir)):
                self.splits["train"], self.classes = _class_files(train_dir)
                if test_dir is not None:
                    test, _ = _class_files(test_dir, self.classes)
                    if len(test):
                        self.splits["test"] = test
            else:
                self.splits["train"] = _flat_files(train_dir)
        elif any(_contains_image(d) for d in subdirs.values()):
            files, self.classes = _class_files(root)
            is_test = _stratified_split(files.labels)
            self.splits["train"] = files.subset(~is_test)
            self.splits["test"] = files.subset(is_test)
        else:
            self.splits["train"] = _flat_files(root)
        if not len(self.splits["train"]):
            raise DataUnavailableError(
                f"Dataset 'folder': no images ({', '.join(IMAGE_EXTENSIONS)}) in {root}; expected images, "
                "one sub-folder per class, or train/ and test/ sub-folders."
            )

    def _find_tiny_imagenet(self):
        root = self.root
        if (root / "tiny-imagenet-200").is_dir():
            root = self.root = root / "tiny-imagenet-200"
        train_dir = root / "train"
        if not train_dir.is_dir():
            raise DataUnavailableError(
                f"Dataset 'tiny_imagenet': no train/ folder in {root}; expected the Tiny-ImageNet archive "
                "(tiny-imagenet-200/train/<wnid>/images/*.JPEG, val/images + val/val_annotations.txt) or "
                "train/<class>/ and val/<class>/ (or test/<class>/) folders."
            )
        self.splits["train"], self.classes = _class_files(train_dir)
        if not len(self.splits["train"]):
            raise DataUnavailableError(f"Dataset 'tiny_imagenet': no images under {train_dir}.")
        annotations = root / "val" / "val_annotations.txt"
        if annotations.is_file():
            index = {name: i for i, name in enumerate(self.classes)}
            test_paths, test_labels = [], []
            for line in annotations.read_text().splitlines():
                fields = line.split("\t")
                if len(fields) < 2:
                    continue
                if fields[1] not in index:
                    raise ValueError(f"{annotations}: class {fields[1]!r} is not among the train/ classes.")
                test_paths.append(str(root / "val" / "images" / fields[0]))
                test_labels.append(index[fields[1]])
            test = _Files(np.asarray(test_labels, dtype=np.int64))
            for path in test_paths:
                test.add(path)
            self.splits["test"] = test
        else:
            for folder in ("val", "test"):
                if (root / folder).is_dir():
                    self.splits["test"], _ = _class_files(root / folder, self.classes)
                    break

    def _median_short_side(self):
        from PIL import Image

        paths = self.splits["train"].paths
        step = max(1, len(paths) // 1000)
        sides = []
        for path in paths[::step]:
            try:
                with Image.open(path) as image:
                    sides.append(min(image.size))
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
        if not sides:
            raise ValueError(f"No readable image in {self.describe}.")
        return int(np.clip(np.median(sides), 16, 96))

    def labelled_files(self, split):
        if self.classes is None:
            raise ValueError(
                f"{self.describe} has no labels (a flat folder of images); for labelled splits arrange it "
                "as one sub-folder per class, or train/<class>/ and test/<class>/."
            )
        if split not in self.splits:
            raise DataUnavailableError(
                f"{self.describe} has no {split} split: add a test/ (or val/) folder with one "
                "sub-folder per class."
            )
        return self.splits[split]

    def cached(self, split, cache_dir):
        """The decoded images of `split` from the cache (built on first use); warns about skipped files."""
        entry = image_cache.load(_FolderCacheSource(self, split), cache_dir)
        skipped = entry.meta.get("skipped", 0)
        if skipped:
            names = ", ".join(entry.meta.get("skipped_examples", []))
            warnings.warn(
                f"Skipped {skipped} unreadable image file(s) of {entry.meta.get('files')} in {self.describe}: "
                f"{names}" + (", ..." if skipped > 5 else ""),
                stacklevel=3,
            )
        return entry

    def find(self, split, cache_dir):
        """The cached images of `split` if they are in the cache (None otherwise); never decodes."""
        return image_cache.find(_FolderCacheSource(self, split), cache_dir)

    def info(self, train):
        """The `DatasetInfo`; `train` is the cached training split, or None (statistics from a sample)."""
        if self.name == "tiny_imagenet":
            mean, std = NORMALIZATIONS["tiny_imagenet"]
        elif train is not None:
            mean, std = tuple(train.meta["mean"]), tuple(train.meta["std"])
        else:  # labelled test split without a cached training split: statistics from a sample
            files = self.splits["train"]
            sample = files.subset(np.arange(len(files)) % max(1, len(files) // 2000) == 0)
            images = np.concatenate(list(_decode_chunks(sample, self.image_size, self.describe, [])))
            mean, std = _image_stats(images)
        num_classes = None if self.classes is None else len(self.classes)
        num_pretrain = len(train.images) if train is not None else len(self.splits["train"])
        return DatasetInfo(self.name, num_classes, self.image_size, mean, std, num_pretrain)


def _image_source(name, data_dir, image_size):
    what = "the image folder" if name == "folder" else "the Tiny-ImageNet folder"
    return _ImageSource(name, _require_data_dir(name, data_dir, what), image_size)


def _decode_image(path, size):
    """One image file → uint8 (size, size, 3): RGB, centre-cropped to a square, resized bilinearly."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            array = np.asarray(image, dtype=np.float64)
            array = array / 257.0 if image.mode.startswith("I;16") or array.max() > 255 else array
            image = Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8), mode="L")
        if image.mode in ("P", "PA", "LA", "La", "RGBa"):
            image = image.convert("RGBA")
        image = image.convert("RGB")
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))
        return np.asarray(image, dtype=np.uint8)


def _decode_chunks(files, size, describe, skipped):
    """Yield `(uint8 images [k, size, size, 3], labels [k] or None)`, `_CHUNK` files at a time.

    Files are decoded by a thread pool (PIL releases the GIL while decoding); unreadable ones are
    left out and their paths appended to `skipped`. Only one chunk is in memory at a time.

    Raises:
        ValueError: no file could be decoded.
    """

    def decode(path):
        try:
            return _decode_image(path, size)
        except Exception:  # noqa: BLE001 - any unreadable image (truncated, not an image, bomb) is skipped
            return None

    kept = 0
    workers = min(8, (os.cpu_count() or 1) * 2)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(files), _CHUNK):
            paths = files.paths[start : start + _CHUNK]
            decoded = list(pool.map(decode, paths))
            keep = [i for i, image in enumerate(decoded) if image is not None]
            skipped.extend(paths[i] for i, image in enumerate(decoded) if image is None)
            if keep:
                kept += len(keep)
                labels = None if files.labels is None else files.labels[start : start + _CHUNK][keep]
                yield np.stack([decoded[i] for i in keep]), labels
    if not kept:
        raise ValueError(f"No readable image in {describe} ({len(files)} files tried).")
