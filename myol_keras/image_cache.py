"""The on-disk cache of decoded images: built once, memory-mapped by every later run (DESIGN §4.10).

Decoding a folder of JPEGs on every run costs minutes and holds every pixel in
memory. Instead, the decoded, resized `uint8` images of a file-based source
(an image folder, Tiny-ImageNet, the STL-10 binary archive, an `.npz`) are
written once to `<cache_dir>/<entry>/` and memory-mapped by later runs and by
the evaluations: private memory no longer grows with the number of images (the
pages belong to the page cache), and a warm start reads no image at all.

An entry holds

| file | content |
|---|---|
| `images.u8` | the images, raw `uint8` `[N, H, W, 3]` in C order |
| `labels.npy` | `int64 [N]` labels, when the source has them |
| `meta.json` | format version, key, shape, the source's description and what it computed (statistics, skipped files) |

and is named `<kind>-<part>-<name>-<source id>-<key>`. The *key* hashes the
cache format version, the source's identity (kind, path, part, image size) and
its *fingerprint* (for a folder: every file's relative path, size and
modification time), so a changed folder gets a new entry and the stale one of
the same source is removed. An entry is written in a temporary sibling
directory, fsynced and renamed into place (`rundir.atomic_directory`): a
reader sees a complete entry or none. An entry whose files do not match its
`meta.json` is never used. A source that changes while its entry is being
built (its fingerprint differs after the build) is an error, not a stale cache.

The location: `cache_dir` (`--cache_dir`), else `$MYOL_KERAS_CACHE_DIR`, else
`$XDG_CACHE_HOME/myol_keras`, else `~/.cache/myol_keras`. A read-only
location is fine for entries that already exist (a shared, pre-built cache).

Example:
    entry = image_cache.load(source)          # a CacheSource (myol_keras.data builds them)
    entry.images.shape                        # (N, H, W, 3), memory-mapped
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time

import numpy as np

from myol_keras import faults
from myol_keras import rundir

FORMAT_VERSION = 1
ENV_VAR = "MYOL_KERAS_CACHE_DIR"
IMAGES_FILE = "images.u8"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"
OWNER_FILE = "owner.json"
_STALE_SECONDS = 3600  # a temporary entry without a live owner this old was left by a killed build
_SPARE_BYTES = 64 * 2**20


class ImageCacheError(ValueError):
    """The decoded-image cache cannot be built or used; the message says why and what to do."""


def default_cache_dir():
    """`$MYOL_KERAS_CACHE_DIR`, else `$XDG_CACHE_HOME/myol_keras`, else `~/.cache/myol_keras`."""
    if os.environ.get(ENV_VAR):
        return os.path.abspath(os.path.expanduser(os.environ[ENV_VAR]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.abspath(os.path.join(os.path.expanduser(base), "myol_keras"))


def resolve_cache_dir(cache_dir=None):
    """The cache directory to use: `cache_dir` (expanded), or `default_cache_dir()` when empty."""
    if cache_dir is None or str(cache_dir) == "":
        return default_cache_dir()
    return os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))


class CacheSource:
    """What the cache needs to know about a source of images; `myol_keras.data` subclasses it.

    Attributes:
        identity: a JSON-able dict naming the source: kind, path, part, image size. Entries of the
            same identity are versions of each other (the stale ones are removed).
        describe: a short description for messages (`"dataset 'folder' at /data/x"`).
        count: the number of images the build will write at most (for the free-space check).
        image_shape: `(H, W, 3)`.
    """

    identity: dict = {}
    describe: str = "image source"
    count: int = 0
    image_shape: tuple = ()

    def fingerprint(self):
        """A string that changes whenever the images would (listing, sizes, modification times)."""
        raise NotImplementedError

    def changes(self):
        """After a build: a short description of what changed in the source since `fingerprint()`, or ''."""
        raise NotImplementedError

    def chunks(self):
        """Yield `(uint8 images [k, H, W, 3], int64 labels [k] or None)` in order; may skip unreadable items."""
        raise NotImplementedError

    def summarise(self, images):
        """JSON-able facts about the written images (e.g. statistics), stored in `meta.json`."""
        return {}


@dataclasses.dataclass(frozen=True)
class CachedImages:
    """One complete cache entry, opened.

    Args:
        images: memory-mapped `uint8 [N, H, W, 3]` (read-only).
        labels: `int64 [N]` or None.
        meta: the entry's `meta.json`.
        path: the entry directory.
        built: whether this call built it (False: reused).
    """

    images: np.ndarray
    labels: np.ndarray | None
    meta: dict
    path: str
    built: bool = False


def cache_key(source):
    """The hex digest naming the content of `source` (format version, identity, fingerprint)."""
    payload = json.dumps({"format": FORMAT_VERSION, "identity": source.identity,
                          "fingerprint": source.fingerprint()}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def entry_prefix(source):
    """`<kind>-<part>-<name>-<identity hash>-`: what every version of this source's entry starts with."""
    identity = source.identity
    words = [str(identity.get("kind", "")), str(identity.get("part", "")),
             os.path.basename(str(identity.get("path", "")).rstrip("/"))]
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", "-".join(w for w in words if w))[:60] or "images"
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{slug}-{digest}-"


def find(source, cache_dir=None):
    """The complete entry of `source` if one exists (None otherwise); never builds."""
    directory = resolve_cache_dir(cache_dir)
    key = cache_key(source)
    path = os.path.join(directory, entry_prefix(source) + key[:20])
    if not os.path.isdir(path):
        return None
    return _open(path, key)


def load(source, cache_dir=None, *, verbose=True):
    """The entry of `source`: reused when complete and current, else built (atomically) and opened.

    Args:
        source: a `CacheSource`.
        cache_dir: the cache directory (default: `default_cache_dir()`).
        verbose: print a progress line on stdout while building.

    Returns:
        `CachedImages`.

    Raises:
        ImageCacheError: the cache cannot be written (read-only, full disk), or the source changed
            while the entry was being built. Nothing is left behind.
        ValueError / FileNotFoundError: from the source (no readable image, ...).
    """
    directory = resolve_cache_dir(cache_dir)
    key = cache_key(source)
    path = os.path.join(directory, entry_prefix(source) + key[:20])
    if os.path.isdir(path):
        entry = _open(path, key)
        if entry is not None:
            return entry
        _discard(path, directory, source)  # damaged (e.g. a file truncated by hand): never used
    _check_can_write(directory, source)
    _remove_abandoned(directory)
    try:
        _build(path, key, source, verbose)
    except OSError as e:
        if os.path.isdir(path) and (entry := _open(path, key)) is not None:
            return entry  # another process built the same entry meanwhile
        raise ImageCacheError(
            f"cannot write the decoded-image cache of {source.describe} in {directory}: {_reason(e)}; "
            f"free space there or set --cache_dir (or ${ENV_VAR}) to a writable directory on a larger disk"
        ) from None
    _remove_other_versions(directory, source, os.path.basename(path))
    entry = _open(path, key)
    if entry is None:  # pragma: no cover - just written and checked
        raise ImageCacheError(f"the cache entry {path} just written cannot be read back")
    return dataclasses.replace(entry, built=True)


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def _open(path, key):
    """The entry at `path` if it is complete and holds `key`, else None."""
    try:
        with open(os.path.join(path, META_FILE)) as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
            return None
        shape = tuple(int(v) for v in meta["shape"])
        images_path = os.path.join(path, IMAGES_FILE)
        if len(shape) != 4 or os.path.getsize(images_path) != int(np.prod(shape)):
            return None
        images = (np.memmap(images_path, dtype=np.uint8, mode="r", shape=shape) if shape[0]
                  else np.zeros(shape, np.uint8))
        labels = None
        if meta.get("labels"):
            labels = np.load(os.path.join(path, LABELS_FILE), allow_pickle=False)
            if labels.shape != (shape[0],):
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return CachedImages(images, labels, meta, path)


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


def _reason(error):
    return " ".join((error.strerror or str(error)).split()) if isinstance(error, OSError) else str(error)


def _check_can_write(directory, source):
    """Fail before decoding anything if `directory` cannot take the entry (not writable, too small)."""
    needed = int(source.count) * int(np.prod(source.image_shape)) + _SPARE_BYTES
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ImageCacheError(
            f"the decoded-image cache directory {directory} is a file, not a directory; set --cache_dir "
            f"(or ${ENV_VAR}) to a directory"
        )
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = _mkstemp(directory)
        os.close(fd)
        os.remove(probe)
        free = shutil.disk_usage(directory).free
    except OSError as e:
        raise ImageCacheError(
            f"the decoded-image cache directory {directory} is not writable ({_reason(e)}); set --cache_dir "
            f"(or ${ENV_VAR}) to a writable directory with {_gigabytes(needed)} free"
        ) from None
    if free < needed:
        raise ImageCacheError(
            f"the decoded-image cache of {source.describe} needs {_gigabytes(needed)} but the disk of {directory} "
            f"has {_gigabytes(free)} free; free space there or set --cache_dir (or ${ENV_VAR}) to a larger disk"
        )


def _mkstemp(directory):
    import tempfile

    return tempfile.mkstemp(prefix=rundir.TEMPORARY_PREFIX + "probe-", dir=directory)


def _gigabytes(count):
    return f"{count / 2**30:.2f} GB"


def _build(path, key, source, verbose):
    shape = tuple(int(v) for v in source.image_shape)
    progress = _Progress(f"the decoded images of {source.describe} in {path}", source.count, verbose)

    def unchanged():
        change = source.changes()
        if change:
            raise ImageCacheError(
                f"{source.describe} changed while its decoded-image cache was being built ({change}); nothing "
                "was cached: rerun once the data has stopped changing"
            )

    with rundir.atomic_directory(path, before_rename=unchanged) as tmp:
        rundir.atomic_write_json(os.path.join(tmp, OWNER_FILE),
                                 {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
        count, labels = 0, []
        with open(os.path.join(tmp, IMAGES_FILE), "wb") as f:
            for images, chunk_labels in _read(source):
                images = np.ascontiguousarray(images, dtype=np.uint8)
                if images.shape[1:] != shape:
                    raise ValueError(f"{source.describe}: images of shape {images.shape[1:]}, expected {shape}")
                _write_chunk(f, images)
                count += len(images)
                if chunk_labels is not None:
                    labels.append(np.asarray(chunk_labels, dtype=np.int64))
                progress.update(count)
                faults.maybe_fail("cache_build")
            f.flush()
        progress.close(count)
        has_labels = bool(labels)
        if has_labels:
            np.save(os.path.join(tmp, LABELS_FILE), np.concatenate(labels))
        images = (np.memmap(os.path.join(tmp, IMAGES_FILE), dtype=np.uint8, mode="r", shape=(count, *shape))
                  if count else np.zeros((0, *shape), np.uint8))
        meta = {
            "format": FORMAT_VERSION, "key": key, "shape": [count, *shape], "dtype": "uint8",
            "labels": has_labels, "identity": source.identity, "source": source.describe,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **source.summarise(images),
        }
        del images
        os.remove(os.path.join(tmp, OWNER_FILE))
        rundir.atomic_write_json(os.path.join(tmp, META_FILE), meta)


def _read(source):
    """`source.chunks()`, its OSErrors (a file unreadable mid-way) told apart from the cache's own."""
    chunks = iter(source.chunks())
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except OSError as e:
            raise ImageCacheError(f"cannot read {source.describe} while caching it: {_reason(e)}") from None
        yield chunk


def _write_chunk(f, images):
    """Append `images` to the open entry file (the one place the cache writes pixels)."""
    f.write(memoryview(images).cast("B"))


def _discard(path, directory, source):
    """Move a damaged entry out of the way (renamed first, so no reader picks it up half-deleted)."""
    trash = os.path.join(directory, f"{rundir.TEMPORARY_PREFIX}damaged-{os.path.basename(path)}-{os.getpid()}")
    try:
        os.rename(path, trash)
    except OSError as e:
        raise ImageCacheError(
            f"the decoded-image cache entry {path} of {source.describe} is damaged and cannot be removed "
            f"({_reason(e)}); delete it, or set --cache_dir (or ${ENV_VAR}) to another directory"
        ) from None
    shutil.rmtree(trash, ignore_errors=True)


def _remove_other_versions(directory, source, keep):
    """Delete the entries of the same source with another key (the folder changed since)."""
    prefix = entry_prefix(source)
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if name.startswith(prefix) and name != keep:
                with contextlib.suppress(OSError):
                    _discard(os.path.join(directory, name), directory, source)


def _remove_abandoned(directory):
    """Delete temporary entries a killed build left behind (a live build on this host is kept)."""
    host = socket.gethostname()
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if not name.startswith(rundir.TEMPORARY_PREFIX):
                continue
            path = os.path.join(directory, name)
            try:
                owner = rundir.read_json(os.path.join(path, OWNER_FILE)) if os.path.isdir(path) else None
                age = time.time() - _last_modified(path)
            except (OSError, ValueError):
                owner, age = None, _STALE_SECONDS + 1
            if owner and owner.get("host") == host:
                abandoned = not _alive(owner.get("pid"))
            else:
                abandoned = age > _STALE_SECONDS
            if abandoned:
                rundir.remove_path(path)


def _last_modified(path):
    """The newest modification time of `path` and the files directly in it (a build appends to its images)."""
    times = [os.path.getmtime(path)]
    if os.path.isdir(path):
        with os.scandir(path) as entries:
            times += [entry.stat().st_mtime for entry in entries]
    return max(times)


def _alive(pid):
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError) as e:
        return isinstance(e, OSError) and e.errno == errno.EPERM
    return True


class _Progress:
    """`myol_keras: caching <what>: done/total images (rate images/s, elapsed s)` on stdout, beside the CLI's
    other progress (stderr is kept for the one-line errors): updated in place on a terminal, else a line
    every 30 s; always a last line."""

    def __init__(self, description, total, enabled=True, stream=None):
        self.description, self.total, self.enabled = description, int(total), enabled
        self.stream = stream or sys.stdout
        self.start = self._last = time.perf_counter()
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def _line(self, done):
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        return (f"myol_keras: caching {self.description}: {done}/{self.total} images ({rate:.0f} images/s, "
                f"{elapsed:.1f} s)")

    def update(self, done):
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last > (0.5 if self.tty else 30.0):
            self.stream.write(("\r" if self.tty else "") + self._line(done) + ("" if self.tty else "\n"))
            self.stream.flush()
            self._last = now

    def close(self, done):
        if self.enabled:
            self.stream.write(("\r" if self.tty else "") + self._line(done) + "\n")
            self.stream.flush()
