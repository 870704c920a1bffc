"""Multi-worker training through the CLI: two worker processes on localhost (issue 20).

Each worker runs in its own working directory, as on separate machines: the
chief (worker 0) writes the run directory and the export, the other worker
keeps its checkpoints in a scratch directory and removes it when it is done.
Keras 3.15 cannot `fit` under MultiWorkerMirroredStrategy (keras-team/keras#20585);
these runs go through the workaround in `BootstrapMethod`.
"""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cluster_helpers import env, lines_starting, start_worker, two_worker_cluster
from conftest import run_main_in_process

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset=npz", "--image_size=16", "--width=4", "--projector_hidden_dim=32", "--projection_dim=16",
        "--predictor_hidden_dim=32", "--batch_size=16", "--steps_per_epoch=3", "--warmup_epochs=1",
        "--precision=float32", "--verbose=2", "--seed=5"]


def _run_workers(tmp_path, args, faults=("", ""), timeout=600):
    """Start two workers (own directories, fresh ports); returns [(exit status, seconds, stdout, stderr)]."""
    cluster = two_worker_cluster()
    procs = [start_worker(tmp_path / f"worker{index}", cluster, index, args, faults[index]) for index in range(2)]
    start, ended = time.time(), {}
    while len(ended) < 2:
        for index, proc in enumerate(procs):
            if index not in ended and proc.poll() is not None:
                ended[index] = time.time() - start
        if time.time() - start > timeout:
            for proc in procs:
                proc.kill()
            tails = [f"worker {i} (exit {p.poll()}): {p.communicate()[1][-1500:]}" for i, p in enumerate(procs)]
            raise AssertionError(f"workers still running after {timeout} s; " + " | ".join(tails))
        time.sleep(0.2)
    return [(p.returncode, ended[i], *p.communicate()) for i, p in enumerate(procs)]


def _history(run_dir):
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def _errors(stderr):
    return lines_starting(stderr, "myol_keras.main: error:")


def _embed(version_dir, images):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    return loaded.signatures["serving_default"](images=tf.constant(images))["embedding"].numpy()


@pytest.mark.slow
def test_a_worker_killed_and_back_on_a_fresh_disk_ends_as_one_uninterrupted_mirrored_process(cifar_subset_path,
                                                                                            tmp_path):
    """Worker 1 SIGKILLs itself mid-epoch 2 (the last): the chief stops in one line, keeping epoch 1. Worker 1's
    disk is wiped (a re-created pod) and both commands are run again: they resume from the chief's checkpoint,
    only the chief writes, and the run equals one uninterrupted process on two logical CPUs
    (`--strategy=mirrored`, the same global batch): the same per-epoch losses and exported embeddings equal
    to 1e-4.

    Two workers resume bit for bit (every variable's hash after each step equals the uninterrupted two-worker
    run's); two workers and one mirrored process part at the last bit from the second step on, a gap that
    grows with the steps (3.6e-3 on embeddings of magnitude ~30 after 9 steps), hence 2 epochs of 3 steps."""
    args = ["--method=byol", f"--data_dir={cifar_subset_path}", *TINY, "--epochs=2", "--sync_batchnorm",
            "--deterministic", "--run_name=mw"]
    # Worker 1 kills itself (SIGKILL) after global step 4: in the middle of epoch 2.
    (status0, seconds0, _, err0), (status1, seconds1, _, _) = _run_workers(tmp_path, args, faults=("", "step_end:4"))
    assert status1 == -9
    assert status0 == 1 and seconds0 - seconds1 < 60, (seconds0, seconds1, err0[-3000:])
    errors = _errors(err0)
    assert len(errors) == 1 and "a worker of the cluster stopped answering" in errors[0], err0[-3000:]
    assert "after epoch 1 is kept" in errors[0] and "Traceback" not in err0
    chief, other = tmp_path / "worker0", tmp_path / "worker1"
    shutil.rmtree(other)  # worker 1 comes back on a fresh disk

    results = _run_workers(tmp_path, args)  # the same two commands again
    for status, _, out, err in results:
        assert status == 0, err[-3000:]
        assert "resuming runs/mw after epoch 1" in out
    assert [int(r["epoch"]) for r in _history(chief / "runs" / "mw")] == [0, 1]
    assert sorted(os.listdir(chief / "saved_models" / "mw")) == ["1"]
    assert os.listdir(other) == []  # nothing in the other worker's run or export directories
    assert "worker finished" in results[1][2]

    # One process, two logical CPUs, --strategy=mirrored, the same global batch, never interrupted.
    reference = tmp_path / "reference"
    reference.mkdir()
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "main_on_logical_cpus.py"), "2",
                           *args, "--strategy=mirrored"], cwd=reference, env=env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows, reference_rows = _history(chief / "runs" / "mw"), _history(reference / "runs" / "mw")
    assert len(rows) == len(reference_rows) == 2
    for a, b in zip(rows, reference_rows):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), abs=1e-5)
    images = np.load(cifar_subset_path)["x_test"][:32]
    two_workers = _embed(chief / "saved_models" / "mw" / "1", images)
    one_process = _embed(reference / "saved_models" / "mw" / "1", images)
    np.testing.assert_allclose(two_workers, one_process, atol=1e-4)


@pytest.mark.slow
def test_myol_trains_on_two_workers(cifar_subset_path, tmp_path):
    results = _run_workers(tmp_path, ["--method=myol", f"--data_dir={cifar_subset_path}", *TINY, "--epochs=2",
                                      "--run_name=mw"])
    for status, _, out, err in results:
        assert status == 0, err[-3000:]
    rows = _history(tmp_path / "worker0" / "runs" / "mw")
    assert [int(r["epoch"]) for r in rows] == [0, 1] and all(np.isfinite(float(r["mix_loss"])) for r in rows)
    assert os.listdir(tmp_path / "worker1") == []


def test_a_taken_port_in_tf_config_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": [f"localhost:{port}", "localhost:1"]},
                                                    "task": {"type": "worker", "index": 0}}))
        status, _, err = run_main_in_process(["--strategy=multi_worker", "--width=4", "--epochs=1"], capsys)
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"port {port} is in use" in lines[0], err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_the_chief_killed_both_restarted_on_the_same_ports_resume_from_its_checkpoint(cifar_subset_path, tmp_path):
    """The chief frozen (SIGSTOP) in epoch 2, so worker 1 waits in a collective: SIGINT stops worker 1
    within seconds with one line; the chief is SIGKILLed; worker 1's disk is wiped; both restarted at
    once on the same ports resume from the chief's last epoch, and the chief's history is that of an
    uninterrupted run (the rows written before the kill untouched, no gap, no duplicate).

    SuNCEt, so that its labelled stream and its all-gather across workers (the `tf.identity` copies in
    `methods/suncet.py`) run under MultiWorkerMirroredStrategy too, at no extra process."""
    args = ["--method=suncet", f"--data_dir={cifar_subset_path}", *TINY, "--epochs=3", "--run_name=k"]
    cluster = two_worker_cluster()
    chief_dir, other_dir = tmp_path / "worker0", tmp_path / "worker1"
    backup = chief_dir / "runs" / "k" / "backup"
    chief = start_worker(chief_dir, cluster, 0, args)
    other = start_worker(other_dir, cluster, 1, args)
    start = time.time()
    while not (backup / "epoch-000001").exists():
        assert chief.poll() is None and time.time() - start < 600, chief.communicate()[1][-3000:]
        time.sleep(0.1)
    chief.send_signal(signal.SIGSTOP)  # frozen mid-run: worker 1 now waits for it in a collective
    time.sleep(2)
    assert other.poll() is None
    sent = time.time()
    other.send_signal(signal.SIGINT)
    _, err1 = other.communicate(timeout=60)
    assert time.time() - sent < 10 and other.returncode == 128 + signal.SIGINT, err1[-3000:]
    stops = [line for line in err1.splitlines() if line.startswith("myol_keras: stopped by SIGINT")]
    assert len(stops) == 1 and "worker 1 (localhost" in stops[0] and "while training" in stops[0], err1[-3000:]
    chief.kill()  # SIGKILL, mid-epoch
    chief.communicate()
    kept = max(int(name.split("-")[1]) for name in os.listdir(backup) if name.startswith("epoch-"))
    rows_before = _history(chief_dir / "runs" / "k")
    assert [int(r["epoch"]) for r in rows_before] == list(range(kept))
    shutil.rmtree(other_dir)  # worker 1 comes back on a fresh disk

    procs = [start_worker(chief_dir, cluster, 0, args), start_worker(other_dir, cluster, 1, args)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert f"resuming runs/k after epoch {kept}" in out
    rows = _history(chief_dir / "runs" / "k")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert rows[:kept] == rows_before  # the chief's history was neither rewritten nor moved back
    assert sorted(os.listdir(backup)) == ["epoch-000002", "epoch-000003"]
    assert os.listdir(other_dir) == []  # worker 1 needs no checkpoints of its own
