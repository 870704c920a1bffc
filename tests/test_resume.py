"""Kill-and-resume at every fault-injection point, a NaN stop, and determinism
(docs/DECISIONS.md §4.11, issue 10).

One run directory is driven through a chain of SIGKILLs — one per named fault
point, plus one at a random moment — each rerun of the same command resuming
the previous one, until the run finishes. Its per-epoch history must be
unbroken and equal (within float tolerance) to an uninterrupted run with the
same seed, and its export must give the same embeddings.
"""

import csv
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _args(data, root, name):
    return [
        "--method=myol", "--dataset=npz", f"--data_dir={data}", "--normalization=cifar10",
        "--backbone=resnet18", "--width=4", "--image_size=16", "--batch_size=8",
        "--projector_hidden_dim=16", "--projection_dim=8", "--predictor_hidden_dim=16",
        "--epochs=2", "--steps_per_epoch=2", "--warmup_epochs=1", "--precision=float32",
        "--deterministic", "--verbose=0",
        f"--run_dir={root}/runs", f"--export_dir={root}/saved_models", f"--run_name={name}",
    ]


def _cli(args, fault=None, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("MYOL_KERAS_FAULT", None)
    if fault:
        env["MYOL_KERAS_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "myol_keras.main", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def _history(run_dir):
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def _checkpoint_epochs(run_dir):
    from myol_keras import checkpoint

    return [epoch for epoch, _ in checkpoint.checkpoints(str(run_dir / "backup"))]


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    x = rng.integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    y = rng.integers(0, 4, size=40)
    np.savez(path, x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    return str(path)


# (fault point, expected exit status, what must hold afterwards)
CHAIN = [
    # First, while the whole run is still ahead (it takes well over 8 s), so
    # the random kill cannot find it finished.
    ("random", None, lambda ck, h: True),
    # The history row of an epoch whose checkpoint never landed may be on disk;
    # the rerun restores history.csv from the checkpoint it resumes.
    ("checkpoint_first_file", -9, lambda ck, h: ck == []),
    ("checkpoint_before_rename", -9, lambda ck, h: ck == []),
    ("checkpoint_after_rename", -9, lambda ck, h: ck == [1] and [r["epoch"] for r in h] == ["0"]),
    ("step_end:3", -9, lambda ck, h: ck == [1]),
    ("nan_loss:4", 1, lambda ck, h: ck == [1] and [r["epoch"] for r in h] == ["0"]),
    ("epoch_end:2", -9, lambda ck, h: ck == [1, 2] and [r["epoch"] for r in h] == ["0", "1"]),
    ("before_export", -9, lambda ck, h: ck == [1, 2]),
    ("mid_export", -9, lambda ck, h: ck == [1, 2]),
    ("after_export", -9, lambda ck, h: ck == [1, 2]),
]


def test_kill_at_every_fault_point_then_resume_matches_uninterrupted(tiny_npz, tmp_path):
    # The uninterrupted reference runs alongside the chain (same seed and flags).
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("MYOL_KERAS_FAULT", None)
    straight = subprocess.Popen([sys.executable, "-m", "myol_keras.main", *_args(tiny_npz, tmp_path, "straight")],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    args = _args(tiny_npz, tmp_path, "chain")
    run_dir = tmp_path / "runs" / "chain"
    export_root = tmp_path / "saved_models" / "chain"
    log = []
    for point, status, check in CHAIN:
        if point == "random":
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
            env.pop("MYOL_KERAS_FAULT", None)
            delay = random.uniform(1.0, 6.0)
            proc = subprocess.Popen([sys.executable, "-m", "myol_keras.main", *args], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=120)
            log.append((f"random after {delay:.1f}s", proc.returncode))
            assert proc.returncode == -9, (log, err[-2000:])
            continue
        result = _cli(args, fault=point)
        log.append((point, result.returncode))
        assert result.returncode == status, (point, log, result.stderr[-3000:])
        ck, hist = _checkpoint_epochs(run_dir), _history(run_dir)
        assert check(ck, hist), (point, ck, [r["epoch"] for r in hist])
        if point.startswith("nan_loss"):
            lines = [line for line in result.stderr.splitlines() if line.startswith("myol_keras.main: error:")]
            assert len(lines) == 1 and "non-finite loss" in lines[0] and "after epoch 1 is kept" in lines[0], result.stderr[-2000:]
        # Never a partial export: only complete integer versions are visible.
        if export_root.exists():
            for entry in export_root.iterdir():
                if entry.name.isdigit():
                    assert (entry / "saved_model.pb").exists()
    assert not (run_dir / "DONE").exists()

    final = _cli(args)
    assert final.returncode == 0, (log, final.stderr[-3000:])
    assert sorted(p.name for p in export_root.iterdir()) == ["1"], "the export after the kill is reused, not duplicated"
    assert (run_dir / "DONE").exists()
    again = _cli(args)
    assert again.returncode == 0 and "is finished" in again.stdout and str(export_root / "1") in again.stdout

    hist = _history(run_dir)
    assert [int(r["epoch"]) for r in hist] == [0, 1], "history without gaps or duplicates"
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err[-3000:]
    root = tmp_path
    reference = _history(root / "runs" / "straight")
    assert [int(r["epoch"]) for r in reference] == [0, 1]
    for name in ("loss", "byol_loss", "mix_loss", "learning_rate", "ema_tau"):
        got = [float(r[name]) for r in hist]
        want = [float(r[name]) for r in reference]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{name} after kills {log}")
    # Same seed, same flags, two different processes (one killed ten times):
    # the same weights, hence the same embeddings from the two exports.
    import tensorflow as tf

    images = tf.constant(np.load(tiny_npz)["x_test"])
    a = tf.saved_model.load(str(root / "saved_models" / "straight" / "1")).signatures["serving_default"](images=images)
    b = tf.saved_model.load(str(export_root / "1")).signatures["serving_default"](images=images)
    np.testing.assert_allclose(a["embedding"].numpy(), b["embedding"].numpy(), rtol=1e-4, atol=1e-5)
