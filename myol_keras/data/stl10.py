"""The STL-10 binary source kind: `stl10_binary/*.bin`, the archive users download by hand (docs/DECISIONS.md §4.10).

Pre-training reads `unlabeled_X.bin` then `train_X.bin` (105k images); the labelled splits are `train`
and `test`. The 96-px images are stored column-major; they are converted once into the decoded-image
cache and memory-mapped from it. Training crops them to 64 px (the `DatasetInfo` image size).

Example:
    images, info = Stl10BinarySource().pretrain_array("/data/stl10")  # 105k images, 96 px
"""

from __future__ import annotations

import numpy as np

from myol_keras.data import source
from myol_keras.data.types import NORMALIZATIONS
from myol_keras.data.types import DataUnavailableError
from myol_keras.data.types import DatasetInfo

_STL10_SHAPE = (3, 96, 96)
_STL10_FILES = {
    "unlabeled": ("unlabeled_X.bin", None),
    "train": ("train_X.bin", "train_y.bin"),
    "test": ("test_X.bin", "test_y.bin"),
}


class Stl10BinarySource(source.DataSource):
    """The unpacked STL-10 binary archive in `--data_dir` (or in its `stl10_binary/` folder).

    Example:
        x_test, y_test, info = Stl10BinarySource().labelled_array("test", "/data/stl10")
    """

    name = "stl10_binary"
    summary = "with --data_dir"
    group = "local"

    def pretrain_array(self, data_dir, *, download=True, image_size=None, cache_dir=None):
        root = _stl10_root(source.require_data_dir(self.name, data_dir, "the STL-10 binary archive directory"))
        _stl10_require(root, ("unlabeled", "train"), labels=False)
        entry = _stl10_entry(root, ("unlabeled", "train"), cache_dir)
        return entry.images, _stl10_binary_info(len(entry.images))

    def labelled_array(self, split, data_dir, *, download=True, image_size=None, cache_dir=None):
        root = _stl10_root(source.require_data_dir(self.name, data_dir, "the STL-10 binary archive directory"))
        _stl10_require(root, (split,), labels=True)
        entry = _stl10_entry(root, (split,), cache_dir)
        labels = _stl10_labels(root, split, len(entry.images))
        num_pretrain = _stl10_count(root, "unlabeled") + _stl10_count(root, "train")
        return entry.images, labels, _stl10_binary_info(num_pretrain or None)




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
    return source.cached_arrays("stl10_binary", root, part, files, f"dataset 'stl10_binary' at {root} ({part})",
                                lambda: [(_stl10_images(root, p), _stl10_to_hwc) for p in parts], cache_dir)


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
