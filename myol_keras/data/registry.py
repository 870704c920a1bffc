"""The dataset registry: every source kind by name, and the public loaders (docs/DECISIONS.md §4.10).

Each name maps to one `DataSource` (tfds names, `tiny_imagenet`, `stl10_binary`, `folder`, `npz`,
`digits`, and whatever `register` adds); the loaders check their arguments and ask the source.
Every loader returns decoded `uint8` images `(H, W, 3)` (pre-training) or `(image, int64 label)` pairs
(labelled splits), together with a `DatasetInfo`: `load_pretrain_images` / `load_labelled` as an
un-batched `tf.data.Dataset`, `load_pretrain_array` / `load_labelled_array` as indexable arrays.
Greyscale sources are repeated to three channels and alpha channels are dropped. Augmentation and
normalisation happen later (`myol_keras.augment`, the method and the export), so images stay `uint8`.

File-based sources (image folders, Tiny-ImageNet, the STL-10 binary archive, `.npz` files) are decoded
once into an on-disk cache and memory-mapped after that (`myol_keras.data.cache`): a warm start
decodes nothing, and private memory does not grow with the number of images.

Importing this module imports no TensorFlow (the settings read `DATASETS` and `describe_datasets()`);
the `tf.data` loaders import it when called.

Example:
    images, info = load_pretrain_array("digits")
    register(MySource())          # a DataSource subclass; then --dataset=<its name> works
"""

from __future__ import annotations

import collections.abc
import re

import numpy as np

from myol_keras.data import digits
from myol_keras.data import folder
from myol_keras.data import npz
from myol_keras.data import source
from myol_keras.data import stl10
from myol_keras.data import tfds
from myol_keras.data.types import SPLITS

_SOURCES: dict[str, source.DataSource] = {}


class _Names(collections.abc.Sequence):
    """The registered names, in registration order: a live, read-only view (a plug-in registered later
    is in it too). Compares equal to the tuple of the names."""

    def __getitem__(self, index):
        return tuple(_SOURCES)[index]

    def __len__(self):
        return len(_SOURCES)

    def __contains__(self, name):
        try:
            return name in _SOURCES
        except TypeError:  # unhashable: not a name
            return False

    def __eq__(self, other):
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, list, _Names)) else other)

    __hash__ = None

    def __repr__(self):
        return repr(tuple(self))


DATASETS = _Names()


def register(data_source, *, replace=False):
    """Make `data_source` loadable by its name (`load_*`, `--dataset`, the evaluations).

    Args:
        data_source: a `DataSource` with a `name` (letters, digits, `_`, `-`, `.`).
        replace: allow replacing a registered source of the same name.

    Returns:
        `data_source`.

    Example:
        register(MySource())
        images, info = load_pretrain_array(MySource.name)
    """
    if not isinstance(data_source, source.DataSource):
        raise TypeError(f"register() takes a myol_keras.data.DataSource. Received: {data_source!r}")
    name = data_source.name
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"A dataset name must be letters, digits, '_', '-' or '.'. Received: name={name!r}")
    if name in _SOURCES and not replace:
        raise ValueError(f"Dataset {name!r} is already registered; pass replace=True to replace it.")
    _SOURCES[name] = data_source
    return data_source


def unregister(name):
    """Remove the source registered as `name` (a plug-in); returns it."""
    return _SOURCES.pop(_check_name(name))


def get_source(name):
    """The `DataSource` registered as `name`; a one-line ValueError listing the names otherwise."""
    return _SOURCES[_check_name(name)]


def describe_datasets():
    """The registered names for the `--dataset` help, grouped: `tfds cifar10, ...; local npz, ... (with
    --data_dir); digits (embedded, offline)`.

    Example:
        help = f"Dataset: {describe_datasets()}."
    """
    groups = {}
    for data_source in _SOURCES.values():
        groups.setdefault(data_source.group or data_source.name, []).append(data_source)
    parts = []
    for members in groups.values():
        names = ", ".join(s.name for s in members)
        text = f"{members[0].group} {names}" if members[0].group else names
        summaries = {s.summary for s in members}
        if len(summaries) == 1 and members[0].summary:
            text += f" ({members[0].summary})"
        parts.append(text)
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------


def load_pretrain_array(name, data_dir=None, *, download=True, image_size=None, cache_dir=None):
    """Unlabelled pre-training images of a registered dataset, as one indexable array.

    File-based sources (`folder`, `tiny_imagenet`, `stl10_binary`, `npz`) are decoded once into the
    on-disk cache (`myol_keras.data.cache`, built with a progress line) and memory-mapped from it, so
    private memory does not grow with the number of images and later runs start without decoding.
    tfds datasets and `digits` are held in memory.

    Args:
        name, data_dir, download, image_size: as in `load_pretrain_images`.
        cache_dir: the decoded-image cache directory (default: `cache.default_cache_dir()`).

    Returns:
        `(images, info)`: `uint8 [N, H, W, 3]` (an `np.memmap` for file-based sources) and a `DatasetInfo`.

    Raises:
        ImageCacheError: the cache cannot be written (read-only, full disk) or the source
            changed while its cache was being built.

    Example:
        images, info = load_pretrain_array("folder", "/data/my_images")  # memory-mapped
        ds = epoch_pipeline(images, view_fn, 256, seed=0)
    """
    data_source = _source(name, image_size)
    return data_source.pretrain_array(data_dir, download=download, image_size=image_size, cache_dir=cache_dir)


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
    data_source = _source(name, image_size)
    return data_source.pretrain_dataset(data_dir, download=download, image_size=image_size, cache_dir=cache_dir)


def load_labelled_array(name, split, data_dir=None, *, download=True, image_size=None, cache_dir=None):
    """Labelled images of a registered dataset as arrays: `(images, labels, info)`.

    The images of file-based sources come from the same memory-mapped cache as pre-training
    (`load_pretrain_array`); tfds and `digits` splits are held in memory.

    Args:
        name, split, data_dir, download, image_size: as in `load_labelled`.
        cache_dir: the decoded-image cache directory (default: `cache.default_cache_dir()`).

    Returns:
        `uint8 [N, H, W, 3]` images, `int64 [N]` labels and a `DatasetInfo`.

    Example:
        x_test, y_test, info = load_labelled_array("tiny_imagenet", "test", "/data/tiny-imagenet-200")
    """
    data_source = _source(name, image_size, split)
    return data_source.labelled_array(split, data_dir, download=download, image_size=image_size,
                                      cache_dir=cache_dir)


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
    data_source = _source(name, image_size, split)
    return data_source.labelled_dataset(split, data_dir, download=download, image_size=image_size,
                                        cache_dir=cache_dir)


def _source(name, image_size, split=None):
    """The source of `name` after checking the arguments every loader shares."""
    data_source = get_source(name)
    if split is not None and split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    if image_size is None:
        return data_source
    if not data_source.takes_image_size:
        takers = sorted(repr(n) for n, s in _SOURCES.items() if s.takes_image_size)
        listed = " and ".join([", ".join(takers[:-1]), takers[-1]] if len(takers) > 1 else takers) or "no dataset"
        raise ValueError(
            f"image_size can only be set for {listed}. Received: image_size="
            f"{image_size!r} for dataset {name!r}"
        )
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8. Received: image_size={image_size!r}")
    return data_source


def _check_name(name):
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset; choose one of: {', '.join(DATASETS)}. Received: {name!r}")
    return name


for _builtin in (*tfds.SOURCES, folder.FolderSource("tiny_imagenet"), stl10.Stl10BinarySource(),
                 folder.FolderSource("folder"), npz.NpzSource(), digits.DigitsSource()):
    register(_builtin)
del _builtin
