"""The `.npz` source kind: `x_train`, `y_train`, `x_test`, `y_test` arrays in one file (docs/DECISIONS.md §4.10).

Images may be uint8, floats in [0, 1] or numbers in 0..255, shaped NHWC (C in 1, 3, 4) or NHW; they are
converted to uint8 RGB once, into the decoded-image cache, and memory-mapped from it after that (a warm
start never opens the file).

Example:
    images, info = NpzSource().pretrain_array("../shared/data/cifar10_subset.npz")
"""

from __future__ import annotations

import zipfile
import zlib

import numpy as np

from myol_keras.data import source
from myol_keras.data import types
from myol_keras.data.types import DatasetInfo


class NpzSource(source.DataSource):
    """Images and labels from an `.npz` file (`--data_dir=FILE.npz`); `x_test`/`y_test` are the test split.

    Example:
        x_test, y_test, info = NpzSource().labelled_array("test", "data.npz")
    """

    name = "npz"
    summary = "with --data_dir"
    group = "local"

    def pretrain_array(self, data_dir, *, download=True, image_size=None, cache_dir=None):
        path = source.require_data_dir(self.name, data_dir, "the .npz file")
        entry = _npz_entry(path, "train", cache_dir)
        return entry.images, _npz_info(entry)

    def labelled_array(self, split, data_dir, *, download=True, image_size=None, cache_dir=None):
        path = source.require_data_dir(self.name, data_dir, "the .npz file")
        arrays = _read_npz(path, ("x_train", "y_train", f"x_{split}", f"y_{split}"), load=(f"y_{split}",))
        train = _npz_entry(path, "train", cache_dir)
        entry = train if split == "train" else _npz_entry(path, split, cache_dir)
        return entry.images, _npz_labels(arrays[f"y_{split}"], len(entry.images), split, path), _npz_info(train)


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

    Accepts NHWC (C in 1, 3, 4) or NHW images, uint8 or [0, 1] floats or 0..255 integers; refuses NaN
    and infinity (which the uint8 conversion would turn into arbitrary pixels). Whether floats are
    scaled by 255 is decided from the whole array, not per chunk.
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
        if np.issubdtype(x.dtype, np.floating) and (bad := _count_non_finite(x)):
            raise ValueError(
                f"{path}: {key} holds {bad} non-finite value{'s' if bad > 1 else ''} (NaN or infinity); "
                "replace them (e.g. numpy.nan_to_num) or drop those images."
            )
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


def _count_non_finite(x):
    """NaN and ±infinity in `x`, counted `CHUNK` images at a time (no mask of the whole array)."""
    return sum(int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
               for chunk in (x[i : i + types.CHUNK] for i in range(0, len(x), types.CHUNK)))


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
        mean, std = source.image_stats(images)
        return {"num_classes": num_classes, "mean": mean, "std": std}

    return source.cached_arrays("npz", path, key, [path], f"{path} ({key})", open_arrays, cache_dir,
                                summarise if split == "train" else None)


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
