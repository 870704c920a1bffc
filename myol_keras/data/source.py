"""What every source kind shares: the `DataSource` interface the registry dispatches on, and the one-way
route of file-based sources into the decoded-image cache (`cached_entry`, `FileStats`).

A source kind (tfds, npz, folder, STL-10 binary, digits, or a user's plug-in) is one `DataSource`
subclass; `myol_keras.data.register(source)` makes it loadable by name everywhere (`load_*`, the
command line's `--dataset`). A file-based source lists its files, computes a `cache.CacheSpec` and
feeds its decoded images to the cache; the cache never calls back into it. Imports no TensorFlow.

Example:
    class Squares(DataSource):
        name, summary = "squares", "generated, offline"

        def pretrain_array(self, data_dir, *, download=True, image_size=None, cache_dir=None):
            images = np.zeros((8, 16, 16, 3), np.uint8)
            return images, DatasetInfo("squares", None, 16, (0.5,) * 3, (0.25,) * 3, len(images))

    register(Squares())
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from myol_keras.data import cache
from myol_keras.data import types

_MAX_STATS_IMAGES = 10_000


class DataSource:
    """One kind of data, loadable by its name (`myol_keras.data.register`).

    Subclasses set the class attributes and implement `pretrain_array` (and `labelled_array` when the
    data has labels); the `tf.data` forms default to streaming those arrays.

    Args:
        name: (class attribute) the registry name, the value of `--dataset`.
        summary: a few words for the `--dataset` help (`"embedded, offline"`).
        group: sources of one group are listed together in the help (`"tfds"`, `"local"`).
        takes_image_size: whether `image_size=` is accepted (a training size to resize to).

    Example:
        class Squares(DataSource):
            name = "squares"

            def pretrain_array(self, data_dir, *, download=True, image_size=None, cache_dir=None):
                return np.zeros((8, 16, 16, 3), np.uint8), DatasetInfo("squares", None, 16, m, s, 8)
    """

    name = ""
    summary = ""
    group = ""
    takes_image_size = False

    def pretrain_array(self, data_dir, *, download=True, image_size=None, cache_dir=None):
        """`(uint8 [N, H, W, 3] images, DatasetInfo)`: the unlabelled pre-training images."""
        raise NotImplementedError(f"{type(self).__name__} must implement pretrain_array")

    def labelled_array(self, split, data_dir, *, download=True, image_size=None, cache_dir=None):
        """`(uint8 images, int64 [N] labels, DatasetInfo)` of `split` (`"train"` or `"test"`)."""
        raise ValueError(f"Dataset {self.name!r} has no labels; it can only be used for pre-training.")

    def pretrain_dataset(self, data_dir, *, download=True, image_size=None, cache_dir=None):
        """`(tf.data.Dataset of uint8 images, DatasetInfo)`; default: streams `pretrain_array`."""
        from myol_keras.data import pipeline

        images, info = self.pretrain_array(data_dir, download=download, image_size=image_size, cache_dir=cache_dir)
        return pipeline.dataset_from_arrays(images), info

    def labelled_dataset(self, split, data_dir, *, download=True, image_size=None, cache_dir=None):
        """`(tf.data.Dataset of (uint8 image, int64 label), DatasetInfo)`; default: streams `labelled_array`."""
        from myol_keras.data import pipeline

        images, labels, info = self.labelled_array(split, data_dir, download=download, image_size=image_size,
                                                   cache_dir=cache_dir)
        return pipeline.dataset_from_arrays(images, labels), info


def require_data_dir(name, data_dir, what):
    """`data_dir` as a `Path` that exists; one-line errors naming `--data_dir` otherwise."""
    if data_dir is None or str(data_dir) == "":
        raise ValueError(f"Dataset {name!r} reads {what}: set --data_dir (data_dir=...) to it.")
    path = Path(os.path.expanduser(str(data_dir)))
    if not path.exists():
        raise types.DataUnavailableError(
            f"Dataset {name!r}: {path} does not exist; point --data_dir at {what}."
        )
    return path


def image_stats(images):
    """Per-channel mean/std of uint8 images in [0, 1] units, from at most 10k evenly spaced images.

    Read `CHUNK` images at a time (a memory-mapped cache is never copied whole); two passes, so the
    standard deviation is taken around the mean as `np.std` does.
    """
    chunk = types.CHUNK
    step = max(1, len(images) // _MAX_STATS_IMAGES)
    index = np.arange(0, len(images), step)[:_MAX_STATS_IMAGES]
    chunks = [index[i : i + chunk] for i in range(0, len(index), chunk)]
    pixels = len(index) * int(np.prod(images.shape[1:-1]))
    total = sum(np.asarray(images[c], dtype=np.float64).sum(axis=(0, 1, 2)) for c in chunks)
    mean = total / 255.0 / pixels
    squares = sum((((np.asarray(images[c], dtype=np.float64) / 255.0) - mean) ** 2).sum(axis=(0, 1, 2))
                  for c in chunks)
    std = np.sqrt(squares / pixels)
    std = np.where(std > 0, std, 1.0)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def stratified_split(labels, test_fraction=types.TEST_FRACTION, seed=0):
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


def cached_entry(spec, chunks, cache_dir, *, summarise=None, changes=None):
    """The cache entry of `spec`: opened when current, else built from `chunks()` (once, across processes).

    Args:
        spec: the `cache.CacheSpec` of the source.
        chunks: `() -> iterable of (uint8 images [k, H, W, 3], int64 labels [k] or None)`; called only
            to build.
        cache_dir: the cache directory (None: the default).
        summarise: `written images -> JSON-able facts` stored in `meta.json` (statistics, skipped files).
        changes: `() -> ''` or what changed in the source since `spec` was computed; checked after the
            last chunk, so a source changing during the build is an error, not a stale entry.

    Returns:
        `cache.CachedImages`.

    Raises:
        cache.ImageCacheError: the cache cannot be written, the source cannot be read or it changed.
    """
    entry = cache.open_current(spec, cache_dir)
    if entry is not None:
        return entry
    with cache.EntryBuild(spec, cache_dir) as build:
        if build.entry is None:
            for images, labels in _read(spec, chunks()):
                build.append(images, labels)
            facts = summarise(build.written()) if summarise else {}
            change = changes() if changes else ""
            if change:
                raise cache.ImageCacheError(
                    f"{spec.describe} changed while its decoded-image cache was being built ({change}); nothing "
                    "was cached: rerun once the data has stopped changing"
                )
            build.finish(facts)
    return build.entry


def _read(spec, chunks):
    """`chunks`, its OSErrors (a file unreadable mid-way) told apart from the cache's own."""
    chunks = iter(chunks)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except OSError as e:
            detail = " ".join((e.strerror or str(e)).split())
            raise cache.ImageCacheError(f"cannot read {spec.describe} while caching it: {detail}") from None
        yield chunk


class FileStats:
    """Size, modification time, change time and inode of a few files (an .npz, STL-10 .bin files).

    The fingerprint of a source stored in whole files: a warm start stats them and never opens them;
    a file rewritten in place with its old size and modification time (`cp -p`, `os.utime`) still
    has a new change time, and one replaced by a rename a new inode.

    Args:
        files: the paths.

    Example:
        stats = FileStats([path]); stats.fingerprint(); stats.changes()
    """

    def __init__(self, files):
        self.files = [Path(f) for f in files]
        self.rows = self._stat()

    def _stat(self):
        rows = []
        for f in self.files:
            try:
                st = f.stat()
                rows.append([str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
            except OSError:
                rows.append([str(f), -1, -1, -1, 0])
        return rows

    def fingerprint(self):
        return json.dumps(self.rows)

    def changes(self):
        """'' or which files changed since these stats were taken."""
        changed = [Path(a[0]).name for a, b in zip(self.rows, self._stat()) if a != b]
        return f"{', '.join(changed)} modified" if changed else ""


def cached_arrays(kind, path, part, files, describe, open_arrays, cache_dir, summarise=None):
    """The cache entry of images stored as arrays in `files` (an .npz member, STL-10 .bin files).

    Args:
        kind, path, part: the source's identity (the registry name, its path, which images).
        files: the files the images come from (their stats are the fingerprint).
        describe: the source, for messages.
        open_arrays: `() -> [(array, chunk -> uint8 NHWC)]`, called only to build (the arrays are
            opened and checked then).
        cache_dir: the cache directory.
        summarise: as in `cached_entry`.
    """
    stats = FileStats(files)
    identity = {"kind": kind, "path": str(Path(path).resolve()), "part": part}
    arrays = []

    def opened():
        if not arrays:
            arrays.extend(open_arrays())
        return arrays

    def chunks():
        for array, transform in opened():
            for start in range(0, len(array), types.CHUNK):
                yield transform(array[start : start + types.CHUNK]), None

    spec = cache.CacheSpec(identity, stats.fingerprint(), describe)
    if (entry := cache.open_current(spec, cache_dir)) is not None:  # warm: the files are never opened
        return entry
    first, transform = opened()[0]
    spec = dataclasses.replace(spec, count=sum(len(a) for a, _ in opened()),
                               image_shape=tuple(transform(first[:1]).shape[1:]))
    return cached_entry(spec, chunks, cache_dir, summarise=summarise, changes=stats.changes)
