"""The on-disk cache of decoded images: built once, memory-mapped by every later run (docs/DECISIONS.md §4.10).

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
its *fingerprint* (for a folder: every file's relative path, size, modification
time, change time and inode), so a changed folder gets a new entry and the stale
one of the same source is removed. An entry is written in a temporary sibling
directory, fsynced and renamed into place (`rundir.atomic_directory`): a
reader sees a complete entry or none. An entry whose files do not match its
`meta.json` is never used. A source that changes while its entry is being
built is an error, not a stale cache (the source checks, before `finish`).

One process builds an entry while the others wait for it: the builder holds
`<entry>.lock` (an exclusive `flock`, released by the kernel if the builder
dies, so a killed builder's lock is taken over at once), and a waiter prints
a progress line naming the builder, then opens what it built.

The data flows one way: a source computes a `CacheSpec` (plain values) and
feeds its images to an `EntryBuild`; the cache never calls back into a source.

The location: `cache_dir` (`--cache_dir`), else `$MYOL_KERAS_CACHE_DIR`, else
`$XDG_CACHE_HOME/myol_keras`, else `~/.cache/myol_keras`. A read-only
location is fine for entries that already exist (a shared, pre-built cache).

Example:
    spec = CacheSpec({"kind": "mine", "path": "/data/x"}, fingerprint, "my images", 100, (32, 32, 3))
    entry = open_current(spec)
    if entry is None:
        with EntryBuild(spec) as build:
            if build.entry is None:           # not built by another process meanwhile
                build.append(images, labels)
                build.finish({})
        entry = build.entry
    entry.images.shape                        # (N, H, W, 3), memory-mapped
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import time

import numpy as np

from myol_keras import faults
from myol_keras import rundir
from myol_keras.data import lock as lock_lib
from myol_keras.data import progress

FORMAT_VERSION = 1
ENV_VAR = "MYOL_KERAS_CACHE_DIR"
IMAGES_FILE = "images.u8"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"
OWNER_FILE = "owner.json"
LOCK_SUFFIX = ".lock"
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


@dataclasses.dataclass(frozen=True)
class CacheSpec:
    """What the cache needs to know about a source of images, as plain values.

    Args:
        identity: a JSON-able dict naming the source: kind, path, part, image size. Entries of the
            same identity are versions of each other (the stale ones are removed).
        fingerprint: a string that changes whenever the images would (for a folder: the listing and
            every file's size, modification and change times and inode).
        describe: a short description for messages (`"dataset 'folder' at /data/x"`).
        count: the number of images the build will write at most (for the free-space check); needed
            to build only (not part of the key).
        image_shape: `(H, W, 3)`; needed to build only.

    Example:
        spec = CacheSpec({"kind": "npz", "path": "/d.npz", "part": "x_train"}, "...", "/d.npz", 10, (8, 8, 3))
    """

    identity: dict
    fingerprint: str
    describe: str
    count: int = 0
    image_shape: tuple = ()


@dataclasses.dataclass(frozen=True)
class CachedImages:
    """One complete cache entry, opened.

    Args:
        images: memory-mapped `uint8 [N, H, W, 3]` (read-only).
        labels: `int64 [N]` or None.
        meta: the entry's `meta.json`.
        path: the entry directory.
        built: whether this call built it (False: reused).

    Example:
        entry = find(spec); entry.images.shape
    """

    images: np.ndarray
    labels: np.ndarray | None
    meta: dict
    path: str
    built: bool = False


def cache_key(spec):
    """The hex digest naming the content of `spec` (format version, identity, fingerprint)."""
    payload = json.dumps({"format": FORMAT_VERSION, "identity": spec.identity, "fingerprint": spec.fingerprint},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def entry_prefix(spec):
    """`<kind>-<part>-<name>-<identity hash>-`: what every version of this source's entry starts with."""
    identity = spec.identity
    words = [str(identity.get("kind", "")), str(identity.get("part", "")),
             os.path.basename(str(identity.get("path", "")).rstrip("/"))]
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", "-".join(w for w in words if w))[:60] or "images"
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{slug}-{digest}-"


def entry_path(spec, cache_dir=None):
    """The directory of the entry of `spec` in `cache_dir`; its lock file is this path + `.lock`."""
    return os.path.join(resolve_cache_dir(cache_dir), entry_prefix(spec) + cache_key(spec)[:20])


def find(spec, cache_dir=None):
    """The complete entry of `spec` if one exists (None otherwise); never builds, never removes."""
    path = entry_path(spec, cache_dir)
    if not os.path.isdir(path):
        return None
    return _open(path, cache_key(spec))


def open_current(spec, cache_dir=None):
    """The complete entry of `spec`, or None; a damaged entry (e.g. a file truncated by hand) is removed.

    Raises:
        ImageCacheError: a damaged entry cannot be removed.
    """
    path = entry_path(spec, cache_dir)
    if not os.path.isdir(path):
        return None
    entry = _open(path, cache_key(spec))
    if entry is None:
        _discard(path, os.path.dirname(path), spec)
    return entry


class EntryBuild:
    """Writes the entry of a `CacheSpec` from the chunks of images its caller appends.

    Entering checks that the cache directory can take the entry (before anything is decoded), then
    takes the entry's lock, waiting with a progress line while another process builds the same entry.
    If that process built it, `entry` is set and nothing is to be written. Otherwise the caller
    `append`s every chunk, reads `written()` (e.g. for statistics) and calls `finish(facts)`; leaving the
    block renames the entry into place, removes the other versions of the source and sets `entry`
    (`built=True`). Any error leaves nothing behind; a failed write is one `ImageCacheError`.

    Args:
        spec: the `CacheSpec` of the entry.
        cache_dir: the cache directory (default: `default_cache_dir()`).
        verbose: print progress lines on stdout (building, waiting).

    Example:
        with EntryBuild(spec) as build:
            if build.entry is None:
                for images, labels in chunks:
                    build.append(images, labels)
                build.finish({"mean": stats(build.written())})
        entry = build.entry
    """

    def __init__(self, spec, cache_dir=None, *, verbose=True):
        self.spec, self.verbose = spec, verbose
        self.directory = resolve_cache_dir(cache_dir)
        self.key = cache_key(spec)
        self.path = os.path.join(self.directory, entry_prefix(spec) + self.key[:20])
        self.entry = None
        self._lock = None
        self._stack = None
        self._file = None
        self._count, self._labels, self._finished = 0, [], False
        self._shape = tuple(int(v) for v in spec.image_shape)

    def __enter__(self):
        _check_can_write(self.directory, self.spec)
        self._lock = lock_lib.EntryLock(self.path + LOCK_SUFFIX, f"the decoded images of {self.spec.describe}",
                                        verbose=self.verbose)
        self._lock.acquire()
        try:
            if os.path.isdir(self.path):
                self.entry = _open(self.path, self.key)  # built by another process while this one waited
                if self.entry is None:
                    _discard(self.path, self.directory, self.spec)
            if self.entry is None:
                _remove_abandoned(self.directory)
                self._start()
        except BaseException as e:
            self._unwind(e)
            self._stack = None
            try:
                if isinstance(e, OSError) and self._write_failed(e):
                    return self
            finally:
                if self.entry is None:
                    self._lock.release()
            raise
        return self

    def _start(self):
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(rundir.atomic_directory(self.path))
        self._tmp = tmp
        rundir.atomic_write_json(os.path.join(tmp, OWNER_FILE),
                                 {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
        self._file = self._stack.enter_context(open(os.path.join(tmp, IMAGES_FILE), "wb"))
        self._progress = progress.StatusLine(self.verbose)

    def append(self, images, labels=None):
        """Write one chunk: `uint8 [k, H, W, 3]` images and their `int64 [k]` labels (or None)."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.shape[1:] != self._shape:
            raise ValueError(f"{self.spec.describe}: images of shape {images.shape[1:]}, expected {self._shape}")
        _write_chunk(self._file, images)
        self._count += len(images)
        if labels is not None:
            self._labels.append(np.asarray(labels, dtype=np.int64))
        self._progress.show(self._text())
        faults.maybe_fail("cache_build")

    def _text(self):
        return _progress_text(f"the decoded images of {self.spec.describe} in {self.path}", self.spec.count,
                              self._count, self._progress.elapsed)

    def written(self):
        """The images written so far, memory-mapped (the labels are saved): call once, after the last chunk."""
        self._file.close()
        self._progress.end(self._text())
        if self._labels:
            np.save(os.path.join(self._tmp, LABELS_FILE), np.concatenate(self._labels))
        shape = (self._count, *self._shape)
        return (np.memmap(os.path.join(self._tmp, IMAGES_FILE), dtype=np.uint8, mode="r", shape=shape)
                if self._count else np.zeros(shape, np.uint8))

    def finish(self, facts):
        """Write `meta.json` with the JSON-able `facts` of the source (statistics, skipped files)."""
        if not self._file.closed:
            self.written()
        meta = {
            "format": FORMAT_VERSION, "key": self.key, "shape": [self._count, *self._shape], "dtype": "uint8",
            "labels": bool(self._labels), "identity": self.spec.identity, "source": self.spec.describe,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **facts,
        }
        os.remove(os.path.join(self._tmp, OWNER_FILE))
        rundir.atomic_write_json(os.path.join(self._tmp, META_FILE), meta)
        self._finished = True

    def __exit__(self, exc_type, error, traceback):
        if self._stack is None:  # reused: nothing was written
            self._lock.release()
            return False
        try:
            if error is None and not self._finished:
                error = RuntimeError("EntryBuild left without finish(): nothing was cached")
                self._unwind(error)
                raise error
            if error is not None:
                self._unwind(error)
                return isinstance(error, OSError) and self._write_failed(error)
            try:
                self._stack.close()  # fsync, rename into place
            except OSError as e:
                return self._write_failed(e)
            _remove_other_versions(self.directory, self.spec, os.path.basename(self.path))
            entry = _open(self.path, self.key)
            if entry is None:  # pragma: no cover - just written and checked
                raise ImageCacheError(f"the cache entry {self.path} just written cannot be read back")
            self.entry = dataclasses.replace(entry, built=True)
            return False
        finally:
            self._lock.release()

    def _unwind(self, error):
        """Close the images file and remove the temporary directory (after an error)."""
        if self._stack is not None:
            self._stack.__exit__(type(error), error, error.__traceback__)

    def _write_failed(self, error):
        """After an OSError while writing: True (error suppressed) if the entry exists complete anyway
        (another process built it), else one `ImageCacheError`."""
        if os.path.isdir(self.path) and (entry := _open(self.path, self.key)) is not None:
            self.entry = entry
            return True
        raise ImageCacheError(
            f"cannot write the decoded-image cache of {self.spec.describe} in {self.directory}: {_reason(error)}; "
            f"free space there or set --cache_dir (or ${ENV_VAR}) to a writable directory on a larger disk"
        ) from None


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


def _check_can_write(directory, spec):
    """Fail before decoding anything if `directory` cannot take the entry (not writable, too small)."""
    needed = int(spec.count) * int(np.prod(spec.image_shape)) + _SPARE_BYTES
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
            f"the decoded-image cache of {spec.describe} needs {_gigabytes(needed)} but the disk of {directory} "
            f"has {_gigabytes(free)} free; free space there or set --cache_dir (or ${ENV_VAR}) to a larger disk"
        )


def _mkstemp(directory):
    import tempfile

    return tempfile.mkstemp(prefix=rundir.TEMPORARY_PREFIX + "probe-", dir=directory)


def _gigabytes(count):
    return f"{count / 2**30:.2f} GB"


def _write_chunk(f, images):
    """Append `images` to the open entry file (the one place the cache writes pixels)."""
    f.write(memoryview(images).cast("B"))


def _discard(path, directory, spec):
    """Move a damaged entry out of the way (renamed first, so no reader picks it up half-deleted)."""
    trash = os.path.join(directory, f"{rundir.TEMPORARY_PREFIX}damaged-{os.path.basename(path)}-{os.getpid()}")
    try:
        os.rename(path, trash)
    except OSError as e:
        raise ImageCacheError(
            f"the decoded-image cache entry {path} of {spec.describe} is damaged and cannot be removed "
            f"({_reason(e)}); delete it, or set --cache_dir (or ${ENV_VAR}) to another directory"
        ) from None
    shutil.rmtree(trash, ignore_errors=True)


def _remove_other_versions(directory, spec, keep):
    """Delete the entries of the same source with another key (the folder changed since); lock files
    are their builders' own."""
    prefix = entry_prefix(spec)
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if name.startswith(prefix) and name != keep and not name.endswith(LOCK_SUFFIX):
                with contextlib.suppress(OSError):
                    _discard(os.path.join(directory, name), directory, spec)


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
                abandoned = not lock_lib.alive(owner.get("pid"))
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


def _progress_text(description, total, done, elapsed):
    """`myol_keras: caching <what>: done/total images (rate images/s, elapsed s)`."""
    rate = done / elapsed if elapsed > 0 else 0.0
    return f"myol_keras: caching {description}: {done}/{total} images ({rate:.0f} images/s, {elapsed:.1f} s)"
