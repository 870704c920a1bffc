"""One builder per cache entry: a lock file next to the entry, waited for with a progress line.

Two processes (or threads) that need the same decoded-image cache entry would
otherwise both decode every image. The builder holds an exclusive `flock` on
`<entry>.lock` and records its host and pid in the file; the others poll the
lock, print a line naming the builder while they wait, then open what it built.

Stale locks: the kernel releases a `flock` when its holder dies, so the lock of
a killed builder (its file still naming the dead pid) is taken over at once. A
lock still held although the pid it names is gone from this host (a forked child
inherited the descriptor and outlived the builder) is taken over after
`STALE_SECONDS`: its file is removed and a new one created. The file is removed
when the build ends. Where `fcntl` does not exist (Windows) there is no lock:
each process builds, and the atomic rename keeps the cache consistent.

Example:
    lock = EntryLock("/cache/entry.lock", "the decoded images of /data/x")
    lock.acquire()        # waits while another process builds
    try:
        ...
    finally:
        lock.release()
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time

from myol_keras.data import progress

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

POLL_SECONDS = 0.2
STALE_SECONDS = 2.0  # a held lock naming a pid gone from this host for this long is taken over


def alive(pid):
    """Whether process `pid` exists on this host (a process of another user counts as alive)."""
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError) as e:
        return isinstance(e, OSError) and e.errno == errno.EPERM
    return True


def read_owner(path):
    """The `{"host", "pid", "started"}` a lock file records, or None (missing, empty, being written)."""
    try:
        with open(path) as f:
            owner = json.load(f)
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


class EntryLock:
    """An exclusive lock on `path`, taken by `acquire` (waiting as long as another holder builds).

    Args:
        path: the lock file (`<entry>.lock`).
        what: what the holder builds, for the waiting line (`"the decoded images of ..."`).
        verbose: print the waiting line on stdout.
        stream: where the waiting line goes (default: stdout).

    Example:
        lock = EntryLock(entry_path + ".lock", "the decoded images of /data/x"); lock.acquire(); lock.release()
    """

    def __init__(self, path, what, *, verbose=True, stream=None):
        self.path, self.what, self.verbose = path, what, verbose
        self.stream = stream
        self._fd = None

    def acquire(self):
        """Take the lock, waiting (with a progress line) while another live process or thread holds it."""
        if fcntl is None:
            return self
        waiting = progress.StatusLine(self.verbose, self.stream, first=True)
        dead_since, dead_owner = None, None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = read_owner(self.path)
                if _orphaned(owner):
                    if owner != dead_owner:
                        dead_since, dead_owner = time.monotonic(), owner
                    elif time.monotonic() - dead_since > STALE_SECONDS:
                        _unlink(self.path)  # stale: the next round creates a new lock file
                        continue
                else:
                    dead_since, dead_owner = None, None
                waiting.show(self._waiting_text(owner, waiting.elapsed))
                time.sleep(POLL_SECONDS)
                continue
            except BaseException:
                os.close(fd)
                raise
            if not _same_file(fd, self.path):  # the previous holder removed it as it finished: again
                os.close(fd)
                continue
            self._fd = fd
            waiting.end()
            _record_owner(fd)
            return self

    def _waiting_text(self, owner, elapsed):
        who = (f"process {owner.get('pid')} on {owner.get('host')}" if owner and owner.get("pid") is not None
               else "another process")
        return f"myol_keras: waiting for {who} to finish caching {self.what} ({elapsed:.0f} s)"

    def release(self):
        """Remove the lock file and let the next process in (which then finds the entry built)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                _unlink(self.path)
        finally:
            os.close(fd)  # releases the flock


def _orphaned(owner):
    """Whether a held lock names a process of this host that is gone."""
    return bool(owner) and owner.get("host") == socket.gethostname() and not alive(owner.get("pid"))


def _same_file(fd, path):
    try:
        mine, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def _unlink(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _record_owner(fd):
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
