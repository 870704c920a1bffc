"""The command line: usage errors, and an end-to-end run that is trained and exported
(docs/DECISIONS.md §4.6; killing and resuming: test_resume.py)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_main_in_process
from myol_keras import main as cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--method=simsiam"], r"--method=simsiam: value should be one of <byol\|myol"),
        (["--dataset=imagenet21k"], r"--dataset=imagenet21k: value should be one of <cifar10"),
        (["--dataset=folder", "--data_dir={tmp}/missing"], r"missing"),
        (["--dataset=npz"], r"--data_dir"),
        (["--batch_size=1"], r"--batch_size=1: too small.*--batch_size=2"),
        (["--image_size=8"], r"--image_size=8 is below the minimum of 9 px.*--image_size=9"),
        (["--precision=float64"], r"precision"),
        (["--epochs=0"], r"--epochs=0"),
        (["--warmup_mode=myol_faithful", "--lr_schedule=cosine"], r"cannot be combined"),
        (["--no_such_flag=1"], r"no_such_flag"),
        (["--width=abc"], r"width"),
        (["--eval=linear,accuracy"], r"unknown --eval=accuracy; choose from: linear, knn, attack"),
        # issue 29: checked before training, not after it (it used to train, then end in a ValueError traceback)
        (["--eval=linear", "--eval_dataset=imagenet21k"], r"unknown --eval_dataset='imagenet21k'; choose from: .*cifar10"),
        (["--eval_dataset=cifar10"], r"--eval_dataset=cifar10 is set but --eval is empty"),
        (["--monitor=knn,loss"], r"--monitor=knn,loss: choose auto, none or a comma-separated list of knn, rank"),
    ],
)
def test_usage_errors_are_one_line_exit_2_and_write_nothing(argv, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    status, out, err = run_main_in_process(["--epochs=1", *argv] if "--epochs=0" not in argv else argv, capsys)
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("myol_keras.main: error: ")
    assert __import__("re").search(match, lines[0]), lines[0]
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == []  # no runs/, no saved_models/


def test_the_knn_monitor_on_data_without_labels_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    # issue 28: --monitor=knn needs labels; a flat folder of images has none. (auto falls back to rank.)
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
    argv = ["--dataset=folder", f"--data_dir={images}", "--image_size=16", "--width=4", "--batch_size=4",
            "--epochs=1", "--steps_per_epoch=1", "--projector_hidden_dim=16", "--projection_dim=8",
            "--predictor_hidden_dim=16", "--precision=float32", "--verbose=0", "--cache_dir=cache"]
    status, _, err = run_main_in_process([*argv, "--monitor=knn"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1, err
    assert "--monitor=knn: the kNN monitor needs labelled train and test images" in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "saved_models").exists()
    status, out, err = run_main_in_process([*argv, "--monitor=auto"], capsys)
    assert status == 0, err[-2000:]
    [run_dir] = (tmp_path / "runs").iterdir()
    header = (run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert "rankme" in header and "embed_std" in header and "knn_top1" not in header


def test_method_flag_choices_are_the_registry():
    from myol_keras.methods import METHODS

    assert set(cli.FLAGS["method"].parser.enum_values) == set(METHODS)


def _cli(args, env=None, timeout=600):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "myol_keras.main", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env,
    )


def test_stl10_without_data_fails_fast_in_one_line(tmp_path):
    result = _cli(["--method=myol", "--dataset=stl10", f"--data_dir={tmp_path}/tfds"], timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "stl10" in lines[0] and str(tmp_path) in lines[0] and "--dataset=stl10_binary" in lines[0]
    assert not (tmp_path / "tfds").exists() or not any((tmp_path / "tfds").iterdir())


@pytest.mark.slow
def test_end_to_end_train_and_export(cifar_subset_path, tmp_path):
    """One CLI process on real images: the history, the export's layout and metadata, and the export equal to
    the backbone of the last checkpoint. Killing and resuming (at every fault point), rerunning a finished run
    and `saved_model_cli show` have their own tests (test_resume.py, test_serving.py)."""
    args = [
        "--method=myol", "--dataset=npz", f"--data_dir={cifar_subset_path}", "--normalization=cifar10",
        "--backbone=resnet18", "--width=4", "--image_size=16", "--batch_size=16",
        "--projector_hidden_dim=32", "--projection_dim=16", "--predictor_hidden_dim=32",
        "--epochs=3", "--steps_per_epoch=2", "--warmup_epochs=1", "--precision=float32",
        "--verbose=2", f"--run_dir={tmp_path}/runs", f"--export_dir={tmp_path}/saved_models",
        "--run_name=e2e",
    ]
    run_dir = tmp_path / "runs" / "e2e"
    export_root = tmp_path / "saved_models" / "e2e"

    done = _cli(args)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert {"learning_rate", "ema_tau", "z_std", "mix_loss", "byol_loss"} <= set(rows[0])
    version_dir = export_root / "1"
    assert (version_dir / "saved_model.pb").exists()
    assert [p.name for p in export_root.iterdir()] == ["1"]  # no temporary leftovers
    metadata = json.loads((version_dir / "assets.extra" / "myol_keras.json").read_text())
    assert metadata["method"] == "myol" and metadata["image_size"] == 16

    _compare_export_with_in_process_backbone(args, run_dir, version_dir, cifar_subset_path)


def _compare_export_with_in_process_backbone(args, run_dir, version_dir, npz_path):
    import keras
    import tensorflow as tf

    from myol_keras import export
    from myol_keras.preprocessing import evaluation_transform
    from myol_keras import training
    from myol_keras.schedules import WarmupSchedule

    cli.parse_flags(["myol_keras.main", *args])
    config = cli.config_from_flags()
    plan = training.plan_run(config)
    model = training.build_model(config, plan)
    schedule = WarmupSchedule(plan.learning_rate, plan.steps_per_epoch, 1)  # as in training: no lr variable
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9))
    from myol_keras import checkpoint

    epoch, path = checkpoint.latest_checkpoint(str(run_dir / "backup"))
    assert epoch == 3
    model.load_weights(os.path.join(path, checkpoint.WEIGHTS_FILE))

    images = np.load(npz_path)["x_test"][:12]
    normalised = evaluation_transform(images, 16, plan.mean, plan.std)
    expected = model.backbone(normalised, training=False).numpy()

    loaded = tf.saved_model.load(str(version_dir))
    uint8_out = loaded.signatures["serving_default"](images=tf.constant(images))["embedding"].numpy()
    pixel_out = loaded.signatures["serve_pixels"](pixels=tf.constant(images / 255.0, tf.float32))["embedding"].numpy()
    np.testing.assert_allclose(uint8_out, expected, atol=1e-4)
    np.testing.assert_allclose(pixel_out, expected, atol=1e-4)

    backbone = export.load_backbone(str(version_dir.parent))
    np.testing.assert_allclose(backbone(normalised, training=False).numpy(), expected, atol=1e-5)
    cli.FLAGS.unparse_flags()


def test_quick_start_ends_with_the_trained_vs_random_init_table(tmp_path, capsys):
    # The quick start's evaluations on a tiny run: digits, width 4, two steps, a 2-epoch probe.
    import keras

    from myol_keras import training
    from myol_keras.evaluation import random_init

    flagfile = ROOT / "flags" / "quickstart.cfg"
    args = [f"--flagfile={flagfile}", "--width=4", "--image_size=16", "--batch_size=16", "--epochs=1",
            "--steps_per_epoch=2", "--warmup_epochs=0", "--projector_hidden_dim=32", "--projection_dim=16",
            "--predictor_hidden_dim=32", "--precision=float32", "--probe_epochs=2", "--seed=3",
            f"--run_dir={tmp_path}/runs", f"--export_dir={tmp_path}/saved_models"]
    status, out, err = run_main_in_process(args, capsys)
    assert status == 0, err[-3000:]
    run_dir = tmp_path / "runs" / "quickstart"

    lines = out.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("encoder"))
    assert lines[top].split() == ["encoder", "linear", "top-1", "kNN", "top-1"]
    rows = {line.split("  ")[0].strip(): line.split() for line in lines[top + 2:top + 4]}
    assert set(rows) == {"trained (myol, 1 epochs)", "random init (seed 3)"}
    for cells in rows.values():
        assert cells[-1] == cells[-3] == "%"
        assert all(0.0 <= float(v) <= 100.0 for v in (cells[-4], cells[-2]))

    records = json.loads((run_dir / "results.json").read_text())
    assert [r["evaluation"] for r in records] == ["linear", "knn", "random_init"]
    baseline = records[-1]
    assert baseline["init_seed"] == 3 and 0.0 <= baseline["linear"]["top1"] <= 1.0
    assert 0.0 <= baseline["knn"]["top1"] <= 1.0 and baseline["protocol"]["linear"]["epochs"] == 2
    assert random_init.comparison_from_results(records)[1]["linear top-1"] == baseline["linear"]["top1"]

    text = (run_dir / "report.md").read_text()
    assert "## What quickstart learned" in text and "plots/retrieval_quickstart.png" in text
    assert (run_dir / "plots" / "retrieval_quickstart.png").exists()
    with open(run_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert 0.0 <= float(history[0]["input_bound_percent"]) <= 100.0
    # issue 28: the online monitors are on by default on labelled data, and print a line per measurement
    assert 0.0 <= float(history[0]["knn_top1"]) <= 1.0 and float(history[0]["rankme"]) >= 1.0
    assert "monitor: epoch 1/1: knn_top1" in out and "rankme" in out
    assert (run_dir / "plots" / "training.png").exists()
    # ... and the report's embedding sample opens in TensorBoard's projector, images as the sprite
    projector = run_dir / "tensorboard" / "projector"
    assert {"projector_config.pbtxt", "metadata.tsv", "sprite.png"} <= set(os.listdir(projector))
    assert "tensorboard --logdir" in text and "Projector tab" in text

    # The random-init encoder is the pre-training's starting point: the same seed-controlled weights.
    config = cli.config_from_flags()
    keras.utils.set_random_seed(config.seed)
    initial = training.build_model(config, training.plan_run(config)).backbone.get_weights()
    again, _, _ = random_init.random_init_backbone(baseline["encoder"])
    assert all(np.array_equal(a, b) for a, b in zip(initial, again.get_weights()))
    cli.FLAGS.unparse_flags()
