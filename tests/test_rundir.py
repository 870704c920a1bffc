"""The run directory: atomic writes, atomic directories, versions, markers (no TensorFlow needed)."""

import json
import os

import pytest

from myol_keras import rundir


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    rundir.atomic_write_json(path, {"x": 1})
    rundir.atomic_write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    rundir.atomic_write(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.bin"]


def test_a_failing_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    rundir.atomic_write_json(path, {"x": 1})
    with pytest.raises(TypeError):
        rundir.atomic_write(path, 12345)  # neither str nor bytes: the write fails half-way
    assert json.loads(path.read_text()) == {"x": 1}
    assert os.listdir(tmp_path) == ["a.json"]


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "root" / "1"
    with rundir.atomic_directory(final) as tmp:
        (open(os.path.join(tmp, "f"), "w")).write("done")
    assert (final / "f").read_text() == "done"
    with pytest.raises(RuntimeError, match="converter failed"):
        with rundir.atomic_directory(tmp_path / "root" / "2") as tmp:
            open(os.path.join(tmp, "half"), "w").write("x")
            raise RuntimeError("converter failed")
    assert sorted(os.listdir(tmp_path / "root")) == ["1"]
    with pytest.raises(FileExistsError):
        with rundir.atomic_directory(final):
            pass


def test_versions_and_temporaries(tmp_path):
    assert rundir.next_version(tmp_path / "missing") == 1
    for name in ("1", "3", ".tmp-4-abc", "notes"):
        (tmp_path / name).mkdir()
    assert rundir.versions(tmp_path) == [1, 3] and rundir.next_version(tmp_path) == 4
    rundir.remove_temporaries(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["1", "3", "notes"]


def test_check_writable_directory(tmp_path):
    assert rundir.check_writable_directory(tmp_path / "new" / "deeper") == str(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # checking creates nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        rundir.check_writable_directory(tmp_path / "file" / "sub", "--run_dir")


def test_run_directory_markers(tmp_path):
    run = rundir.RunDirectory(tmp_path / "r").create()
    assert not run.is_done() and run.pending_export() is None
    run.claim_export("saved_models/r/1")
    assert run.pending_export() == "saved_models/r/1"
    run.mark_done("saved_models/r/1")
    run.clear_claim()
    assert run.is_done() and run.read_done()["export"] == "saved_models/r/1" and run.pending_export() is None
    run.write_config({"method": "byol"})
    assert run.read_config() == {"method": "byol"}
    assert run.history_path == str(tmp_path / "r" / "history.csv")
