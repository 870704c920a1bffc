"""Dataset registry and loaders: tfds names, image folders, `.npz` arrays, the STL-10 binary archive,
Tiny-ImageNet and the embedded scikit-learn digits (DESIGN §4.10, METHODS §1.6).

Every loader returns a `tf.data.Dataset` of decoded, un-batched `uint8` images `(H, W, 3)` (pre-training)
or `(image, int64 label)` pairs (labelled splits), together with a `DatasetInfo`. Greyscale sources are
repeated to three channels and alpha channels are dropped. Augmentation and normalisation happen later
(`myol_keras.augment`, the method and the export), so the images stay `uint8` here.

When a dataset cannot be found or fetched, a `DataUnavailableError` says, on one line, which dataset,
where it looked and which offline routes exist. tfds itself, offline, retries a download for minutes
before failing; `load_*` checks reachability of the download host first (at most 3 s) instead.

Example:
    images, info = load_pretrain_images("digits")
    ds = pretrain_pipeline(images, lambda batch: (batch, batch), batch_size=64)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
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

__all__ = [
    "DATASETS",
    "NORMALIZATIONS",
    "DataUnavailableError",
    "DatasetInfo",
    "load_labelled",
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
_CHUNK = 1024  # images per chunk when streaming large arrays into tf.data
_IN_MEMORY_BYTES = 256 * 2**20  # arrays above this are streamed in chunks instead of copied into a tensor
_MAX_STATS_IMAGES = 10_000
_NETWORK_TIMEOUT = 3.0
_TEST_FRACTION = 0.2


# ---------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------


def load_pretrain_images(name, data_dir=None, *, download=True, image_size=None):
    """Unlabelled pre-training images of a registered dataset.

    Args:
        name: a name from `DATASETS`.
        data_dir: tfds data directory (tfds names; default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`),
            the `.npz` file (`npz`), or the directory (`folder`, `stl10_binary`, `tiny_imagenet`).
        download: allow tfds to download and prepare a missing dataset.
        image_size: training size for `folder` / `tiny_imagenet` (default: median short side capped to
            [16, 96] for folders, 64 for Tiny-ImageNet); images are centre-cropped and resized to it.

    Returns:
        `(dataset, info)`: un-batched `uint8` images `(H, W, 3)` and a `DatasetInfo`.

    Example:
        images, info = load_pretrain_images("stl10_binary", "/data/stl10")  # 105k images, 96 px
    """
    name = _check_name(name)
    _check_image_size_arg(name, image_size)
    if name in _TFDS:
        spec = _TFDS[name]
        ds, info = _load_tfds(name, spec.pretrain_split, data_dir, download)
        return ds.map(lambda image, label: _to_rgb(image), num_parallel_calls=tf.data.AUTOTUNE), info
    if name == "digits":
        (x_train, _), _, info = _digits()
        return _dataset_from_arrays(x_train), info
    if name == "npz":
        path = _require_data_dir(name, data_dir, "the .npz file")
        arrays = _read_npz(path, ("x_train",))
        x_train = _as_uint8_images(arrays["x_train"], path, "x_train")
        return _dataset_from_arrays(x_train), _npz_info(arrays, x_train)
    if name == "stl10_binary":
        root = _stl10_root(_require_data_dir(name, data_dir, "the STL-10 binary archive directory"))
        _stl10_require(root, ("unlabeled", "train"), labels=False)
        parts = [_stl10_images(root, part) for part in ("unlabeled", "train")]
        ds = _dataset_from_arrays(parts[0], transform=_stl10_to_hwc).concatenate(
            _dataset_from_arrays(parts[1], transform=_stl10_to_hwc)
        )
        return ds, _stl10_binary_info(sum(len(p) for p in parts))
    # folder / tiny_imagenet
    source = _image_source(name, data_dir, image_size)
    paths, _ = source.pretrain_files()
    images, _ = _decode_files(paths, None, source.image_size, source.describe)
    return _dataset_from_arrays(images), source.info(images, len(images))


def load_labelled(name, split, data_dir=None, *, download=True, image_size=None):
    """Labelled images of a registered dataset.

    Args:
        name: a name from `DATASETS`.
        split: `"train"` or `"test"` (Tiny-ImageNet's `val` is its test split; a class-folder layout
            without `train/` and `test/` is split 80/20 per class, deterministically).
        data_dir, download, image_size: as in `load_pretrain_images`.

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
    if name == "digits":
        train, test, info = _digits()
        x, y = train if split == "train" else test
        return _dataset_from_arrays(x, y), info
    if name == "npz":
        path = _require_data_dir(name, data_dir, "the .npz file")
        arrays = _read_npz(path, ("x_train", "y_train", f"x_{split}", f"y_{split}"))
        x_train = _as_uint8_images(arrays["x_train"], path, "x_train")
        info = _npz_info(arrays, x_train)
        x = x_train if split == "train" else _as_uint8_images(arrays[f"x_{split}"], path, f"x_{split}")
        return _dataset_from_arrays(x, _npz_labels(arrays, split, path)), info
    if name == "stl10_binary":
        root = _stl10_root(_require_data_dir(name, data_dir, "the STL-10 binary archive directory"))
        _stl10_require(root, (split,), labels=True)
        images = _stl10_images(root, split)
        labels = _stl10_labels(root, split, len(images))
        num_pretrain = _stl10_count(root, "unlabeled") + _stl10_count(root, "train")
        return (
            _dataset_from_arrays(images, labels, transform=_stl10_to_hwc),
            _stl10_binary_info(num_pretrain or None),
        )
    source = _image_source(name, data_dir, image_size)
    paths, labels = source.labelled_files(split)
    images, labels = _decode_files(paths, labels, source.image_size, source.describe)
    info = source.info(images if split == "train" else None, len(source.pretrain_files()[0]))
    return _dataset_from_arrays(images, labels), info


def pretrain_pipeline(
    images, view_fn, batch_size, *, drop_remainder=True, shuffle_buffer=10_000, seed=None, cache=True
):
    """cache (decoded uint8) → shuffle (reshuffled every epoch) → batch → map(view_fn) → prefetch.

    Args:
        images: un-batched `uint8` images, as from `load_pretrain_images`.
        view_fn: maps a `uint8` batch `(B, H, W, 3)` to a tuple of views; runs with AUTOTUNE parallelism.
        batch_size: images per batch (at least 2: BatchNorm needs two samples).
        drop_remainder: drop the last partial batch (the default; a batch of one breaks BatchNorm).
        shuffle_buffer: shuffle buffer size in images (0 or 1 disables shuffling).
        seed: shuffle seed; the order still differs between epochs.
        cache: cache the decoded images in memory after the first epoch.

    Example:
        ds = pretrain_pipeline(images, recipe.two_views, batch_size=256, seed=0)
    """
    num_images = int(images.cardinality())
    validate_batch_size(batch_size, num_images if num_images >= 0 else None, drop_remainder)
    ds = images.cache() if cache else images
    if shuffle_buffer and shuffle_buffer > 1:
        ds = ds.shuffle(int(shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    ds = ds.map(view_fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def epoch_seed(seed, epoch):
    """The stateless `[2]` int64 seed of one epoch: a pure function of (seed, epoch)."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.constant(0x5EED, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))


def batch_seed(seed, epoch, index):
    """The stateless augmentation seed of batch `index` of `epoch`."""
    return tf.random.experimental.stateless_fold_in(epoch_seed(seed, epoch), tf.cast(index, tf.int64))


def epoch_pipeline(
    images,
    view_fn,
    batch_size,
    *,
    seed=0,
    start_epoch=0,
    steps_per_epoch=None,
    drop_remainder=True,
    shuffle_buffer=10_000,
    cache=True,
    counterparts=False,
):
    """A resumable, deterministic pre-training stream: epochs `start_epoch, start_epoch + 1, ...`.

    Like `pretrain_pipeline` (cache → shuffle → batch → map(view_fn) →
    prefetch), but the data order and the augmentation of every batch are a
    pure function of `(seed, epoch, batch index)` instead of stateful
    generators, which Keras does not checkpoint: epoch `e` is shuffled with a
    seed derived from `(seed, e)` and batch `i` of it is augmented with
    `view_fn(batch, seed=batch_seed(seed, e, i))`. A run resumed at epoch `e`
    therefore sees exactly the batches an uninterrupted run would have seen.
    The stream is infinite; give `fit` a `steps_per_epoch`.

    Args:
        images: un-batched `uint8` images, as from `load_pretrain_images`.
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
            first batches of each epoch's shuffle.
        drop_remainder: drop the last partial batch of each epoch.
        shuffle_buffer: shuffle buffer in images (0 or 1: no shuffling).
        cache: cache the decoded images in memory after the first pass.
        counterparts: pair every image with a counterpart from an independent
            shuffle of the data set (representation mixing, METHODS §2.6).

    Example:
        ds = epoch_pipeline(images, augment.make_view_fn([r, r]), 256, seed=0, start_epoch=12)
    """
    num_images = int(images.cardinality())
    if num_images < 0:
        num_images = sum(1 for _ in images)
    steps = steps_in_epoch(num_images, batch_size, drop_remainder, steps_per_epoch)
    source = images.cache() if cache else images
    shuffle = bool(shuffle_buffer and shuffle_buffer > 1)

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

    def views(epoch, index, batch):
        batch_key = batch_seed(seed, epoch, index)
        if view_fn is None:
            rows = tf.shape(tf.nest.flatten(batch)[0])[0]
            return {"images": batch, "seed": tf.tile(batch_key[None], [rows, 1])}
        if isinstance(batch, tuple):
            return view_fn(*batch, seed=batch_key)
        return view_fn(batch, seed=batch_key)

    ds = tf.data.Dataset.range(int(start_epoch), 2**62).flat_map(one_epoch)
    ds = ds.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


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


def _dataset_from_arrays(images, labels=None, *, transform=None):
    """A tf.data.Dataset over `images` (and int64 `labels`), streamed in chunks when large.

    Small in-memory arrays become one tensor; memory-mapped or large arrays (and those needing a
    per-chunk `transform`) are read `_CHUNK` images at a time, so they are never copied whole.
    """
    n = len(images)
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
    streamed = transform is not None or isinstance(images, np.memmap) or images.nbytes > _IN_MEMORY_BYTES
    if not streamed:
        return tf.data.Dataset.from_tensor_slices(images if labels is None else (images, labels))
    transform = transform or (lambda x: x)
    image_shape = transform(images[:1]).shape[1:]

    def chunks():
        for start in range(0, n, _CHUNK):
            x = np.ascontiguousarray(transform(images[start : start + _CHUNK]), dtype=np.uint8)
            yield x if labels is None else (x, labels[start : start + _CHUNK])

    image_spec = tf.TensorSpec((None, *image_shape), tf.uint8)
    spec = image_spec if labels is None else (image_spec, tf.TensorSpec((None,), tf.int64))
    ds = tf.data.Dataset.from_generator(chunks, output_signature=spec).unbatch()
    return ds.apply(tf.data.experimental.assert_cardinality(n))


def _image_stats(images):
    """Per-channel mean/std of uint8 images in [0, 1] units, from at most 10k evenly spaced images."""
    step = max(1, len(images) // _MAX_STATS_IMAGES)
    sample = np.asarray(images[::step][:_MAX_STATS_IMAGES], dtype=np.float64) / 255.0
    mean = sample.mean(axis=(0, 1, 2))
    std = sample.std(axis=(0, 1, 2))
    std = np.where(std > 0, std, 1.0)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


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


def _read_npz(path, required):
    """The x_/y_ arrays of an .npz file; one-line ValueErrors for a bad file or missing keys."""
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
            wanted = ("x_train", "y_train", "x_test", "y_test")
            arrays = {k: npz[k] for k in wanted if k in keys}
    except KeyError as error:
        raise ValueError(
            f"{path} lacks the arrays {', '.join(error.args[0])}; found: {', '.join(keys) or 'none'} "
            "(expected x_train, y_train, x_test, y_test)."
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as error:
        detail = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(f"{path} is not a valid .npz file (corrupt or truncated?): {detail}") from None
    return arrays


def _as_uint8_images(x, path, key):
    """NHWC (C in 1, 3, 4) or NHW images, uint8 or [0, 1] floats or 0..255 integers → uint8 NHWC RGB."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or len(x) == 0:
        raise ValueError(
            f"{path}: {key} must be non-empty images shaped (N, H, W), (N, H, W, 1), (N, H, W, 3) or "
            f"(N, H, W, 4). Received shape {x.shape}."
        )
    if x.dtype != np.uint8:
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise ValueError(f"{path}: {key} must hold numbers; received dtype {x.dtype}.")
        low, high = float(x.min()), float(x.max())
        if np.issubdtype(x.dtype, np.floating) and low >= 0.0 and high <= 1.0:
            x = np.round(x * 255.0)
        elif low < 0 or high > 255:
            raise ValueError(
                f"{path}: {key} values must be uint8, floats in [0, 1] or numbers in 0..255; "
                f"received {x.dtype} in [{low:g}, {high:g}]."
            )
        x = np.round(x).astype(np.uint8)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] == 4:
        x = np.ascontiguousarray(x[..., :3])
    return x


def _npz_labels(arrays, split, path):
    y = arrays[f"y_{split}"]
    n = len(arrays[f"x_{split}"])
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


def _npz_info(arrays, x_train):
    num_classes = None
    labels = [arrays[k] for k in ("y_train", "y_test") if k in arrays]
    labels = [y for y in labels if y.size and np.issubdtype(y.dtype, np.number)]
    if labels:
        num_classes = int(max(float(y.max()) for y in labels)) + 1
    mean, std = _image_stats(x_train)
    return DatasetInfo("npz", num_classes, int(x_train.shape[1]), mean, std, len(x_train))


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
# Image folders and Tiny-ImageNet
# ---------------------------------------------------------------------------------------------------


def _is_image(path):
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _visible_dirs(path):
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(path, recursive):
    """Sorted image files in `path` (or below it), skipping hidden files and folders."""
    files = path.rglob("*") if recursive else path.iterdir()
    hidden = lambda p: any(part.startswith(".") for part in p.relative_to(path).parts)  # noqa: E731
    return sorted(p for p in files if _is_image(p) and not hidden(p))


def _contains_image(path):
    """Whether any image lies under `path` (stops at the first one)."""
    return any(_is_image(p) for p in path.rglob("*"))


def _class_files(split_dir, classes=None):
    """(paths, labels, class names) of a class-folder layout; `classes` fixes the id mapping."""
    listing = [(d, _images_in(d, recursive=True)) for d in _visible_dirs(split_dir)]
    listing = [(d, files) for d, files in listing if files]
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
    paths, labels = [], []
    for d, files in listing:
        paths += files
        labels += [index[d.name]] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), classes


class _ImageSource:
    """The files of a `folder` or `tiny_imagenet` dataset, found before anything is decoded."""

    def __init__(self, name, root, image_size):
        self.name, self.root = name, root
        self.describe = f"dataset {name!r} at {root}"
        self.splits = {}  # split → (paths, labels or None)
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
                paths, labels, self.classes = _class_files(train_dir)
                self.splits["train"] = (paths, labels)
                if test_dir is not None:
                    test_paths, test_labels, _ = _class_files(test_dir, self.classes)
                    if test_paths:
                        self.splits["test"] = (test_paths, test_labels)
            else:
                self.splits["train"] = (_images_in(train_dir, recursive=False), None)
        elif any(_contains_image(d) for d in subdirs.values()):
            paths, labels, self.classes = _class_files(root)
            is_test = _stratified_split(labels)
            self.splits["train"] = ([p for p, t in zip(paths, is_test) if not t], labels[~is_test])
            self.splits["test"] = ([p for p, t in zip(paths, is_test) if t], labels[is_test])
        else:
            self.splits["train"] = (_images_in(root, recursive=False), None)
        if not self.splits["train"][0]:
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
        paths, labels, self.classes = _class_files(train_dir)
        if not paths:
            raise DataUnavailableError(f"Dataset 'tiny_imagenet': no images under {train_dir}.")
        self.splits["train"] = (paths, labels)
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
                test_paths.append(root / "val" / "images" / fields[0])
                test_labels.append(index[fields[1]])
            self.splits["test"] = (test_paths, np.asarray(test_labels, dtype=np.int64))
        else:
            for folder in ("val", "test"):
                if (root / folder).is_dir():
                    test_paths, test_labels, _ = _class_files(root / folder, self.classes)
                    self.splits["test"] = (test_paths, test_labels)
                    break

    def _median_short_side(self):
        from PIL import Image

        paths = self.splits["train"][0]
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

    def pretrain_files(self):
        return self.splits["train"]

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

    def info(self, train_images, num_pretrain):
        if self.name == "tiny_imagenet":
            mean, std = NORMALIZATIONS["tiny_imagenet"]
        else:
            if train_images is None:  # labelled split requested: statistics from the training images
                sample = self.splits["train"][0]
                sample = sample[:: max(1, len(sample) // 2000)]
                train_images, _ = _decode_files(sample, None, self.image_size, self.describe, warn=False)
            mean, std = _image_stats(train_images)
        num_classes = None if self.classes is None else len(self.classes)
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


def _decode_files(paths, labels, size, describe, warn=True):
    """Decode image files in parallel; unreadable files are skipped and reported in one warning."""

    def decode(path):
        try:
            return _decode_image(path, size)
        except Exception:  # noqa: BLE001 - any unreadable image (truncated, not an image, bomb) is skipped
            return None

    workers = min(8, (os.cpu_count() or 1) * 2)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(decode, paths, chunksize=64))
    keep = [i for i, image in enumerate(decoded) if image is not None]
    skipped = [str(paths[i]) for i, image in enumerate(decoded) if image is None]
    if not keep:
        raise ValueError(f"No readable image in {describe} ({len(paths)} files tried).")
    if skipped and warn:
        names = ", ".join(Path(p).name for p in skipped[:5])
        warnings.warn(
            f"Skipped {len(skipped)} unreadable image file(s) of {len(paths)} in {describe}: {names}"
            + (", ..." if len(skipped) > 5 else ""),
            stacklevel=3,
        )
    images = np.stack([decoded[i] for i in keep])
    return images, (None if labels is None else np.asarray(labels, dtype=np.int64)[keep])

