"""The image-folder source kinds: `folder` (any folder of images) and `tiny_imagenet` (docs/DECISIONS.md §4.10).

A folder is a flat folder of images (unlabelled), one sub-folder per class (split 80/20 per class,
deterministically) or `train/` and `test/` (or `val/`) sub-folders of classes. Tiny-ImageNet is its
archive's layout (`train/<wnid>/images/*.JPEG`, `val/images` + `val/val_annotations.txt`) or class
folders. The files are listed before anything is decoded; each split is decoded once (RGB, centre
square, resized) into the decoded-image cache, keyed on the listing (paths, sizes, modification and
change times, inodes), and memory-mapped from it after that. Unreadable files are skipped with one
counted warning.

Example:
    images, info = FolderSource("folder").pretrain_array("/data/my_images")  # memory-mapped
"""

from __future__ import annotations

import array as array_lib
import concurrent.futures
import hashlib
import itertools
import os
import warnings
from pathlib import Path

import numpy as np

from myol_keras.data import cache
from myol_keras.data import source
from myol_keras.data import types
from myol_keras.data.types import NORMALIZATIONS
from myol_keras.data.types import DataUnavailableError
from myol_keras.data.types import DatasetInfo

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class FolderSource(source.DataSource):
    """A folder of images (`"folder"`) or Tiny-ImageNet (`"tiny_imagenet"`) in `--data_dir`.

    Args:
        name: `"folder"` or `"tiny_imagenet"` (the layouts searched, the default size and statistics).

    Example:
        x_test, y_test, info = FolderSource("tiny_imagenet").labelled_array("test", "/data/tiny-imagenet-200")
    """

    summary = "with --data_dir"
    group = "local"
    takes_image_size = True

    def __init__(self, name):
        if name not in ("folder", "tiny_imagenet"):
            raise ValueError(f"FolderSource reads 'folder' or 'tiny_imagenet'. Received: name={name!r}")
        self.name = name

    def pretrain_array(self, data_dir, *, download=True, image_size=None, cache_dir=None):
        listing = _listing(self.name, data_dir, image_size)
        entry = listing.cached("train", cache_dir)
        return entry.images, listing.info(entry)

    def labelled_array(self, split, data_dir, *, download=True, image_size=None, cache_dir=None):
        listing = _listing(self.name, data_dir, image_size)
        listing.labelled_files(split)  # no labels / no such split: an error before anything is decoded
        entry = listing.cached(split, cache_dir)
        train = entry if split == "train" else listing.find("train", cache_dir)
        return entry.images, entry.labels, listing.info(train)


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
    """The image files of one split: paths (strings), labels or None, and each file's size, modification
    time, change time and inode (a file rewritten with its old size and modification time, as `cp -p` or
    `os.utime` leave it, still has a new change time; one replaced by a rename, a new inode).

    Compact for large folders: no `Path` per file, the file facts in integer arrays.
    """

    def __init__(self, labels=None):
        self.paths = []
        self.facts = (array_lib.array("q"), array_lib.array("q"), array_lib.array("q"), array_lib.array("Q"))
        self.labels = labels

    def add(self, path, stat=None):
        try:
            stat = stat or os.stat(path)
            facts = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
        except OSError:  # listed but missing (e.g. in val_annotations.txt): skipped when decoded
            facts = (-1, -1, -1, 0)
        self.paths.append(path)
        for column, value in zip(self.facts, facts):
            column.append(value)

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
            for mine, theirs in zip(self.facts, out.facts):
                theirs.append(mine[i])
        return out

    def _rows(self, root):
        """`(relative path, (size, mtime, ctime, inode))` per file."""
        prefix = str(root) + os.sep
        for path, *facts in zip(self.paths, *self.facts):
            yield (path[len(prefix):] if path.startswith(prefix) else path), tuple(facts)

    def digest(self, root):
        """A hash of the relative paths, the file facts (size, modification and change times, inode) and
        the labels."""
        digest = hashlib.sha256()
        rows = self._rows(root)
        while True:
            block = [f"{rel}\t{size}\t{mtime}\t{ctime}\t{inode}\n"
                     for rel, (size, mtime, ctime, inode) in itertools.islice(rows, 4096)]
            if not block:
                break
            digest.update("".join(block).encode("utf-8", "surrogateescape"))
        if self.labels is not None:
            digest.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def difference(self, other, root):
        """`other` against this listing, in words: counts of added, removed, modified files, a few names."""
        before = dict(self._rows(root))
        after = dict(other._rows(root))
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


class _Listing:
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
            is_test = source.stratified_split(files.labels)
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

    def spec(self, split):
        """The `cache.CacheSpec` of `split`: identity (kind, root, split, size) and the listing's digest."""
        files = self.splits[split]
        identity = {"kind": self.name, "path": str(self.root.resolve()), "part": split,
                    "image_size": self.image_size}
        return cache.CacheSpec(identity, files.digest(self.root), self.describe, len(files),
                               (self.image_size, self.image_size, 3))

    def cached(self, split, cache_dir):
        """The decoded images of `split` from the cache (built on first use); warns about skipped files."""
        files, spec, skipped = self.splits[split], self.spec(split), []

        def summarise(images):
            facts = {"files": len(files), "skipped": len(skipped),
                     "skipped_examples": [Path(p).name for p in skipped[:5]]}
            if self.name != "tiny_imagenet":
                mean, std = source.image_stats(images)
                facts.update(mean=mean, std=std)
            return facts

        entry = source.cached_entry(spec, lambda: _decode_chunks(files, self.image_size, self.describe, skipped),
                                    cache_dir, summarise=summarise, changes=lambda: self._changes(split, spec))
        count = entry.meta.get("skipped", 0)
        if count:
            names = ", ".join(entry.meta.get("skipped_examples", []))
            warnings.warn(
                f"Skipped {count} unreadable image file(s) of {entry.meta.get('files')} in {self.describe}: "
                f"{names}" + (", ..." if count > 5 else ""),
                stacklevel=4,
            )
        return entry

    def _changes(self, split, spec):
        """'' or what changed in `split` since `spec` was taken (listed again from scratch)."""
        try:
            again = _Listing(self.name, self.given_root, self.image_size)
        except (OSError, ValueError) as e:
            return f"it can no longer be listed: {e}"
        files = again.splits.get(split)
        if files is None:
            return f"its {split} split is gone"
        if files.digest(self.root) == spec.fingerprint:
            return ""
        return self.splits[split].difference(files, self.root)

    def find(self, split, cache_dir):
        """The cached images of `split` if they are in the cache (None otherwise); never decodes."""
        return cache.find(self.spec(split), cache_dir)

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
            mean, std = source.image_stats(images)
        num_classes = None if self.classes is None else len(self.classes)
        num_pretrain = len(train.images) if train is not None else len(self.splits["train"])
        return DatasetInfo(self.name, num_classes, self.image_size, mean, std, num_pretrain)


def _listing(name, data_dir, image_size):
    what = "the image folder" if name == "folder" else "the Tiny-ImageNet folder"
    return _Listing(name, source.require_data_dir(name, data_dir, what), image_size)


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
    """Yield `(uint8 images [k, size, size, 3], labels [k] or None)`, `CHUNK` files at a time.

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
        for start in range(0, len(files), types.CHUNK):
            paths = files.paths[start : start + types.CHUNK]
            decoded = list(pool.map(decode, paths))
            keep = [i for i, image in enumerate(decoded) if image is not None]
            skipped.extend(paths[i] for i, image in enumerate(decoded) if image is None)
            if keep:
                kept += len(keep)
                labels = None if files.labels is None else files.labels[start : start + types.CHUNK][keep]
                yield np.stack([decoded[i] for i in keep]), labels
    if not kept:
        raise ValueError(f"No readable image in {describe} ({len(files)} files tried).")
