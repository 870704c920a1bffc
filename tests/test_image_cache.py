"""The on-disk decoded-image cache (issue 20, docs/DECISIONS.md §4.10): built once, memory-mapped after, rebuilt when
the source changes, never used half-written, and every failure one clear line with nothing left behind."""

import errno
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from myol_keras import data
from myol_keras.data import cache as image_cache
from myol_keras.data import folder as folder_source
from myol_keras.data import npz as npz_source
from myol_keras import rundir

from conftest import one_line


def _folder(root, classes=3, per_class=4, size=16):
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(np.full((size, size + 4, 3), 40 * k + i, np.uint8)).save(root / f"class{k}" / f"{i}.png")
    return root


@pytest.fixture
def decodes(monkeypatch):
    """Count the image files decoded (the cache's reason to exist is that this stays 0 on a warm start)."""
    calls = []
    decode = folder_source._decode_image

    def counting(path, size):
        calls.append(path)
        return decode(path, size)

    monkeypatch.setattr(folder_source, "_decode_image", counting)
    return calls


def _entries(cache_dir):
    return sorted(n for n in os.listdir(cache_dir) if not n.startswith(rundir.TEMPORARY_PREFIX))


def _temporaries(cache_dir):
    return sorted(n for n in os.listdir(cache_dir) if n.startswith(rundir.TEMPORARY_PREFIX))


def test_folder_is_decoded_once_then_memory_mapped_by_training_and_evaluation(tmp_path, decodes):
    root, cache = _folder(tmp_path / "images"), tmp_path / "cache"
    images, info = data.load_pretrain_array("folder", str(root), cache_dir=str(cache))
    assert isinstance(images, np.memmap) and images.shape == (9, 16, 16, 3)  # 80 % of 3 x 4 (class folders)
    assert len(decodes) == 9 and info.num_pretrain_images == 9 and info.num_classes == 3
    decodes.clear()
    again, again_info = data.load_pretrain_array("folder", str(root), cache_dir=str(cache))
    x_train, y_train, _ = data.load_labelled_array("folder", "train", str(root), cache_dir=str(cache))
    assert decodes == []  # warm: nothing decoded, training and the evaluations share the entry
    np.testing.assert_array_equal(again, images)
    np.testing.assert_array_equal(x_train, images)
    assert again_info == info and list(y_train) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    np.testing.assert_array_equal(x_train[:, 0, 0, 0] // 40, y_train)
    meta = json.loads((cache / _entries(cache)[0] / image_cache.META_FILE).read_text())
    assert meta["shape"] == [9, 16, 16, 3] and meta["labels"] and meta["mean"] == list(info.mean)
    data.load_labelled_array("folder", "test", str(root), cache_dir=str(cache))
    assert len(decodes) == 3  # the test split is an entry of its own
    assert len(_entries(cache)) == 2 and _temporaries(cache) == []


def test_changed_folder_rebuilds_and_drops_the_stale_entry(tmp_path, decodes):
    root, cache = _folder(tmp_path / "images", classes=1, per_class=5), tmp_path / "cache"
    flat = root / "class0"  # a flat folder: every image is a pre-training image
    data.load_pretrain_array("folder", str(flat), cache_dir=str(cache))
    (first,) = _entries(cache)
    decodes.clear()
    stat = os.stat(flat / "2.png")
    os.utime(flat / "2.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched
    data.load_pretrain_array("folder", str(flat), cache_dir=str(cache))
    assert len(decodes) == 5
    (second,) = _entries(cache)
    assert second != first
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(flat / "9.png")  # a file added
    images, info = data.load_pretrain_array("folder", str(flat), cache_dir=str(cache))
    assert len(images) == info.num_pretrain_images == 6 and len(_entries(cache)) == 1
    # Another image size is another entry, kept beside the first.
    data.load_pretrain_array("folder", str(flat), image_size=8, cache_dir=str(cache))
    assert len(_entries(cache)) == 2



def _rewrite_keeping_size_and_mtime(path, write):
    """Rewrite `path` with `write(path)` (same size), then give it back its old modification time."""
    before = os.stat(path)
    write(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_file_rewritten_with_its_old_size_and_mtime_is_rebuilt(tmp_path, decodes):
    # Issue 29: the key was (path, size, mtime), so `cp -p` or `os.utime` kept serving the old pixels.
    flat, cache = tmp_path / "images", tmp_path / "cache"
    flat.mkdir()
    for i in range(3):  # BMP: the file size depends on the image size only
        Image.fromarray(np.full((16, 16, 3), 10 * i, np.uint8)).save(flat / f"{i}.bmp")
    images, _ = data.load_pretrain_array("folder", str(flat), cache_dir=str(cache))
    assert list(images[:, 0, 0, 0]) == [0, 10, 20]

    # In place (the inode stays; `cp -p new 1.bmp` does this).
    _rewrite_keeping_size_and_mtime(flat / "1.bmp",
                                    lambda p: Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(p))
    decodes.clear()
    images, _ = data.load_pretrain_array("folder", str(flat), cache_dir=str(cache))
    assert len(decodes) == 3 and list(images[:, 0, 0, 0]) == [0, 200, 20]

    # Replaced by a rename (another inode), with the old size and modification time.
    def replace(path):
        Image.fromarray(np.full((16, 16, 3), 99, np.uint8)).save(tmp_path / "new.bmp")
        os.replace(tmp_path / "new.bmp", path)

    _rewrite_keeping_size_and_mtime(flat / "2.bmp", replace)
    decodes.clear()
    images, _ = data.load_pretrain_array("folder", str(flat), cache_dir=str(cache))
    assert len(decodes) == 3 and list(images[:, 0, 0, 0]) == [0, 200, 99]
    assert len(_entries(cache)) == 1  # the stale versions are gone

    # The .npz route (and STL-10's .bin files) key on the same file facts.
    path = tmp_path / "d.npz"
    x = np.zeros((4, 8, 8, 3), np.uint8)
    np.savez(path, x_train=x)
    np.testing.assert_array_equal(data.load_pretrain_array("npz", str(path), cache_dir=str(cache))[0], x)
    _rewrite_keeping_size_and_mtime(path, lambda p: np.savez(p, x_train=x + 7))
    np.testing.assert_array_equal(data.load_pretrain_array("npz", str(path), cache_dir=str(cache))[0], x + 7)


def test_half_written_entries_are_never_used(tmp_path, decodes):
    root, cache = _folder(tmp_path / "images", classes=1, per_class=4), tmp_path / "cache"
    flat = root / "class0"
    reference, _ = data.load_pretrain_array("folder", str(flat), cache_dir=str(cache))
    reference = np.array(reference)
    (entry,) = _entries(cache)
    # A build killed on another host long ago, and one killed here (its process is gone).
    stale = cache / f"{rundir.TEMPORARY_PREFIX}{entry}-old"
    stale.mkdir()
    (stale / image_cache.IMAGES_FILE).write_bytes(b"\0" * 100)
    os.utime(stale / image_cache.IMAGES_FILE, (0, 0))
    os.utime(stale, (0, 0))
    dead = cache / f"{rundir.TEMPORARY_PREFIX}{entry}-dead"
    dead.mkdir()
    (dead / image_cache.OWNER_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 7}))

    # An entry whose images file is truncated and whose meta.json is gone: not used, rebuilt.
    (cache / entry / image_cache.META_FILE).unlink()
    with open(cache / entry / image_cache.IMAGES_FILE, "r+b") as f:
        f.truncate(100)
    decodes.clear()
    images, _ = data.load_pretrain_array("folder", str(flat), cache_dir=str(cache))
    assert len(decodes) == 4
    np.testing.assert_array_equal(images, reference)
    assert _temporaries(cache) == [] and _entries(cache) == [entry]

    # meta.json present, images file truncated: not used either.
    with open(cache / entry / image_cache.IMAGES_FILE, "r+b") as f:
        f.truncate(100)
    decodes.clear()
    images, _ = data.load_pretrain_array("folder", str(flat), cache_dir=str(cache))
    assert len(decodes) == 4
    np.testing.assert_array_equal(images, reference)



def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_two_threads_building_one_entry_decode_it_once(tmp_path, decodes, monkeypatch, capsys):
    # Issue 29: two builders of one entry both decoded everything; now one builds, the other waits.
    root, cache = _folder(tmp_path / "images", classes=1, per_class=6), tmp_path / "cache"
    flat = str(root / "class0")
    counting = folder_source._decode_image
    start = threading.Barrier(2)

    def slow(path, size):
        time.sleep(0.2)  # long enough for the second thread to find the build under way
        return counting(path, size)

    monkeypatch.setattr(folder_source, "_decode_image", slow)
    results = [None, None]

    def load(i):
        start.wait()
        results[i] = data.load_pretrain_array("folder", flat, cache_dir=str(cache))

    threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(r is not None for r in results)
    assert len(decodes) == 6  # once, not twice
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]
    out = capsys.readouterr().out
    waiting = f"myol_keras: waiting for process {os.getpid()} on {socket.gethostname()} to finish caching the decoded"
    assert waiting in out and "dataset 'folder' at" in out, out
    assert os.listdir(cache) == _entries(cache) and len(_entries(cache)) == 1  # no lock file left


def test_two_processes_building_one_entry_decode_it_once(tmp_path):
    root, cache = _folder(tmp_path / "images", classes=1, per_class=6), tmp_path / "cache"
    log = tmp_path / "decoded.log"
    script = textwrap.dedent(f"""
        import os, time
        from myol_keras.data import folder, registry
        decode = folder._decode_image

        def counting(path, size):
            with open({str(log)!r}, "a") as f:
                f.write(path + "\\n")
            time.sleep(1.5)
            return decode(path, size)

        folder._decode_image = counting
        images, info = registry.load_pretrain_array("folder", {str(root / 'class0')!r}, cache_dir={str(cache)!r})
        print("sum", int(images.sum()))
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    first = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not log.exists() and time.monotonic() < deadline:  # the first one holds the lock and decodes
        time.sleep(0.05)
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    first_out, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-2000:]
    assert len(log.read_text().splitlines()) == 6
    assert f"waiting for process {first.pid} on" in second.stdout, second.stdout
    assert first_out.splitlines()[-1] == second.stdout.splitlines()[-1]
    assert len(os.listdir(cache)) == 1


def test_a_stale_lock_of_a_dead_builder_is_taken_over(tmp_path, decodes, monkeypatch, capsys):
    from myol_keras.data import lock as lock_lib

    root, cache = _folder(tmp_path / "images", classes=1, per_class=3), tmp_path / "cache"
    flat = str(root / "class0")
    reference = np.array(data.load_pretrain_array("folder", flat, cache_dir=str(cache))[0])
    (entry,) = _entries(cache)
    shutil.rmtree(cache / entry)
    lock_file = cache / (entry + ".lock")

    # A killed builder's lock file, naming its dead pid: nobody holds it, it is taken over at once.
    lock_file.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "started": 0}))
    decodes.clear()
    began = time.monotonic()
    images, _ = data.load_pretrain_array("folder", flat, cache_dir=str(cache))
    assert time.monotonic() - began < 30 and len(decodes) == 3
    np.testing.assert_array_equal(images, reference)
    assert not lock_file.exists() and "waiting" not in capsys.readouterr().out

    # Held, but by a descendant that outlived the builder (the pid it names is gone): taken over
    # after STALE_SECONDS, with the waiting line naming the dead builder meanwhile.
    shutil.rmtree(cache / entry)
    dead = _dead_pid()
    monkeypatch.setattr(lock_lib, "STALE_SECONDS", 0.5)
    held = os.open(lock_file, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(held, json.dumps({"host": socket.gethostname(), "pid": dead, "started": 0}).encode())
        decodes.clear()
        images, _ = data.load_pretrain_array("folder", flat, cache_dir=str(cache))
    finally:
        os.close(held)
    assert len(decodes) == 3 and not lock_file.exists()
    np.testing.assert_array_equal(images, reference)
    assert f"waiting for process {dead} on {socket.gethostname()}" in capsys.readouterr().out


def test_a_build_killed_midway_leaves_a_temporary_that_the_next_build_removes(tmp_path):
    root, cache = _folder(tmp_path / "images", classes=1, per_class=3), tmp_path / "cache"
    script = textwrap.dedent(f"""
        from myol_keras import data
        data.load_pretrain_array("folder", {str(root / 'class0')!r}, cache_dir={str(cache)!r})
    """)
    env = dict(os.environ, MYOL_KERAS_FAULT="cache_build", TF_CPP_MIN_LOG_LEVEL="2")
    killed = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    _, err = killed.communicate(timeout=300)
    assert killed.returncode == -9, err[-2000:]
    assert len(_temporaries(cache)) == 1  # the images written so far, never used
    (lock,) = _entries(cache)  # and the killed builder's lock, naming it: the next build takes it over
    assert lock.endswith(".lock") and json.loads((cache / lock).read_text())["pid"] == killed.pid
    images, _ = data.load_pretrain_array("folder", str(root / "class0"), cache_dir=str(cache))
    assert len(images) == 3 and _temporaries(cache) == [] and len(_entries(cache)) == 1
    assert not _entries(cache)[0].endswith(".lock")


def test_a_folder_changing_during_the_build_is_one_error_and_caches_nothing(tmp_path, monkeypatch):
    root, cache = _folder(tmp_path / "images", classes=1, per_class=4), tmp_path / "cache"
    flat = root / "class0"
    decode = folder_source._decode_image

    def decode_while_a_file_arrives(path, size):
        (flat / "late.png").exists() or Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "late.png")
        return decode(path, size)

    monkeypatch.setattr(folder_source, "_decode_image", decode_while_a_file_arrives)
    with pytest.raises(image_cache.ImageCacheError) as error:
        data.load_pretrain_array("folder", str(flat), cache_dir=str(cache))
    one_line(error, str(flat), "changed while its decoded-image cache was being built", "1 file(s) added: late.png",
              "rerun")
    assert os.listdir(cache) == []


def test_a_full_disk_fails_before_decoding_and_a_disk_filling_up_leaves_nothing(tmp_path, monkeypatch, decodes):
    root, cache = _folder(tmp_path / "images", classes=1, per_class=4), tmp_path / "cache"
    flat = str(root / "class0")
    usage = image_cache.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(image_cache.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(image_cache.ImageCacheError) as error:
        data.load_pretrain_array("folder", flat, cache_dir=str(cache))
    one_line(error, "needs 0.06 GB", "0.00 GB free", str(cache), "--cache_dir")
    assert decodes == [] and os.listdir(cache) == []
    monkeypatch.undo()

    def no_space(f, images):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(image_cache, "_write_chunk", no_space)
    with pytest.raises(image_cache.ImageCacheError) as error:
        data.load_pretrain_array("folder", flat, cache_dir=str(cache))
    one_line(error, "cannot write the decoded-image cache", "No space left on device", "--cache_dir")
    assert os.listdir(cache) == []


@pytest.mark.skipif(not os.path.isdir("/sys/fs"), reason="needs Linux sysfs (a directory nobody can write)")
def test_an_unwritable_cache_directory_is_refused_but_a_complete_entry_there_is_read(tmp_path, monkeypatch):
    root = _folder(tmp_path / "images", classes=1, per_class=2)
    with pytest.raises(image_cache.ImageCacheError) as error:
        data.load_pretrain_array("folder", str(root / "class0"), cache_dir="/sys/fs")
    one_line(error, "/sys/fs is not writable", "--cache_dir", "MYOL_KERAS_CACHE_DIR")
    # A read-only cache that already holds the entry (e.g. one shared, built beforehand) is fine.
    cache = tmp_path / "cache"
    data.load_pretrain_array("folder", str(root / "class0"), cache_dir=str(cache))

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(image_cache, "_mkstemp", refuse)
    monkeypatch.setattr(image_cache.rundir, "atomic_directory", refuse)
    images, _ = data.load_pretrain_array("folder", str(root / "class0"), cache_dir=str(cache))
    assert len(images) == 2


def test_npz_and_stl10_binary_are_read_only_to_build(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=np.arange(10) % 4, x_test=x[:3], y_test=np.arange(3))
    images, info = data.load_pretrain_array("npz", str(path), cache_dir=str(cache))
    np.testing.assert_array_equal(images, x)
    assert isinstance(images, np.memmap) and info.num_classes == 4

    read = npz_source._read_npz
    monkeypatch.setattr(npz_source, "_read_npz", lambda *a, **k: pytest.fail("the .npz was read on a warm start"))
    again, again_info = data.load_pretrain_array("npz", str(path), cache_dir=str(cache))
    assert again_info == info
    monkeypatch.setattr(npz_source, "_read_npz", read)
    x_test, y_test, _ = data.load_labelled_array("npz", "test", str(path), cache_dir=str(cache))
    np.testing.assert_array_equal(x_test, x[:3])
    np.testing.assert_array_equal(y_test, [0, 1, 2])
    np.savez(path, x_train=x[::-1], y_train=np.arange(10) % 4)  # rewritten: rebuilt
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    np.testing.assert_array_equal(data.load_pretrain_array("npz", str(path), cache_dir=str(cache))[0], x[::-1])

    stl = tmp_path / "stl10_binary"
    stl.mkdir()
    hwc = rng.integers(0, 256, size=(3, 96, 96, 3), dtype=np.uint8)
    for name, part in (("unlabeled_X.bin", hwc[:2]), ("train_X.bin", hwc[2:])):
        (stl / name).write_bytes(np.ascontiguousarray(np.transpose(part, (0, 3, 2, 1))).tobytes())
    images, info = data.load_pretrain_array("stl10_binary", str(tmp_path), cache_dir=str(cache))
    np.testing.assert_array_equal(images, hwc)
    assert isinstance(images, np.memmap) and info.num_pretrain_images == 3


def test_plan_run_reads_the_cache_of_the_config(tmp_path):
    from myol_keras import PretrainConfig
    from myol_keras import training

    root = _folder(tmp_path / "images", classes=2, per_class=5)
    config = PretrainConfig(dataset="folder", data_dir=str(root), cache_dir=str(tmp_path / "cache"), batch_size=4,
                            run_dir=str(tmp_path / "runs"), export_dir=str(tmp_path / "exports"))
    plan = training.plan_run(config)
    assert isinstance(plan.images, np.memmap) and plan.num_images == 8 and plan.steps_per_epoch == 2
    assert len(_entries(tmp_path / "cache")) == 1 and not (tmp_path / "runs").exists()


def test_a_run_started_with_the_shuffle_buffer_is_told_how_to_resume(tmp_path):
    from myol_keras import PretrainConfig
    from myol_keras import training

    config = PretrainConfig(dataset="digits")
    saved = {**config.to_dict(), "shuffle_buffer": 10000}  # what runs recorded before the global shuffle
    run = rundir.RunDirectory(str(tmp_path / "run")).create()
    run.write_config(saved)
    with pytest.raises(training.SetupError) as error:
        training.check_resumable(config, run)
    one_line(error, "--shuffle_buffer=10000 before, 0 now", "--shuffle_buffer=10000 resumes it")
    training.check_resumable(config.replace(shuffle_buffer=10000), run)
