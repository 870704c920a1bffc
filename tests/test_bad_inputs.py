"""The bad-input catalogue (issue 10, docs/DECISIONS.md §5): every case is a one-line,
actionable error with exit status 2 — most in-process through `main(argv)`, a
few as real subprocesses — and start-up validation writes nothing.

Folder datasets: an unreadable or truncated image file is *skipped* with one
counted warning (`Skipped N unreadable image file(s) of M in ...: names`);
only a folder with no readable image at all is an error. Grayscale, palette
and RGBA images are accepted and converted to 3-channel RGB.
"""

import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from conftest import run_main_in_process

TINY = ["--width=4", "--projector_hidden_dim=16", "--projection_dim=8", "--predictor_hidden_dim=16", "--epochs=1"]


# --- helpers ----------------------------------------------------------------------------------


def _one_error_line(err, prog):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert "Traceback" not in err
    return lines[0]


run_main = run_main_in_process


def _save_png(path, array, mode=None):
    from PIL import Image

    Image.fromarray(array, mode=mode).save(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every bad (and good-but-odd) input file the catalogue needs, made once."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(24, 16, 16, 3), dtype=np.uint8)
    y = rng.integers(0, 3, size=24)
    good = root / "good.npz"
    np.savez(good, x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    (root / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive at all" * 10)
    blob = good.read_bytes()
    (root / "truncated.npz").write_bytes(blob[: len(blob) // 2])
    np.savez(root / "negative_labels.npz", x_train=x, y_train=y - 1, x_test=x[:6], y_test=y[:6])
    np.savez(root / "bad_shape.npz", x_train=rng.normal(size=(24, 5)), y_train=y)
    (root / "empty").mkdir()
    mixed = root / "mixed"
    mixed.mkdir()
    for i in range(6):
        _save_png(mixed / f"rgb_{i}.png", x[i])
    _save_png(mixed / "gray.png", x[6, :, :, 0], mode="L")
    _save_png(mixed / "rgba.png", np.concatenate([x[7], np.full((16, 16, 1), 128, np.uint8)], axis=-1), mode="RGBA")
    png = (mixed / "rgb_0.png").read_bytes()
    (mixed / "truncated.png").write_bytes(png[: len(png) // 3])
    (mixed / "not_an_image.jpg").write_bytes(b"hello")
    unreadable = root / "unreadable"
    unreadable.mkdir()
    (unreadable / "a.png").write_bytes(png[:20])
    (unreadable / "b.jpg").write_bytes(b"\xff\xd8\xff")
    not_saved_model = root / "not_a_saved_model"
    not_saved_model.mkdir()
    (not_saved_model / "1").mkdir()
    (not_saved_model / "1" / "README.txt").write_text("no saved_model.pb here")
    return root


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    from myol_keras import export
    from myol_keras.backbones import ResNet

    backbone = ResNet(depth=18, stem="cifar", width=4)
    backbone.build((None, 16, 16, 3))
    root = tmp_path_factory.mktemp("export") / "tiny"
    return export.export_encoder(backbone, str(root), image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3,
                                 metadata={"dataset": "npz"})


# --- in-process: main(argv) -> exit 2, one line, nothing written ------------------------------

CASES = [
    # (id, argv, regex on the error line)
    ("unknown_method", ["--method=simsiam"], r"--method=simsiam: value should be one of <byol\|myol"),
    ("unknown_dataset", ["--dataset=imagenet21k"], r"--dataset=imagenet21k: value should be one of <cifar10"),
    ("unknown_precision", ["--precision=float64"], r"precision.*(float32|mixed_float16)"),
    ("unknown_strategy", ["--strategy=tpu_pod"], r"--strategy=tpu_pod: value should be one of <auto\|one_device\|mirrored\|multi_worker>"),
    ("multi_worker_without_tf_config", ["--strategy=multi_worker"], r"needs the TF_CONFIG environment variable"),
    ("sync_bn_on_one_device", ["--strategy=one_device", "--sync_batchnorm"], r"--sync_batchnorm .*one replica"),
    ("faithful_warmup_with_cosine", ["--warmup_mode=myol_faithful", "--lr_schedule=cosine"], r"cannot be combined"),
    ("batch_size_1", ["--batch_size=1"], r"--batch_size=1: too small.*--batch_size=2"),
    ("image_size_below_minimum", ["--image_size=8"], r"--image_size=8 is below the minimum of 9 px for the 'cifar' stem"),
    ("batch_larger_than_dataset", ["--dataset=npz", "--data_dir={files}/good.npz", "--batch_size=64"], r"batch"),
    ("missing_data_folder", ["--dataset=folder", "--data_dir={files}/nowhere"], r"nowhere"),
    ("empty_data_folder", ["--dataset=folder", "--data_dir={files}/empty"], r"no images .* in .*empty"),
    ("folder_of_unreadable_images", ["--dataset=folder", "--data_dir={files}/unreadable"], r"No readable image in dataset 'folder' at .*unreadable"),
    ("npz_without_data_dir", ["--dataset=npz"], r"--data_dir"),
    ("corrupt_npz", ["--dataset=npz", "--data_dir={files}/corrupt.npz"], r"corrupt.npz is not a valid .npz file"),
    ("truncated_npz", ["--dataset=npz", "--data_dir={files}/truncated.npz"], r"truncated.npz is not a valid .npz file"),
    ("npz_wrong_image_shape", ["--dataset=npz", "--data_dir={files}/bad_shape.npz"], r"x_train must be non-empty images shaped"),
    ("zero_epochs", ["--epochs=0"], r"--epochs=0"),
    ("negative_lr", ["--lr=-0.1"], r"--lr=-0.1: the learning rate must be positive"),
    ("ema_above_one", ["--ema=1.5"], r"--ema=1.5: tau must be in \[0, 1\]"),
    ("negative_threads", ["--threads=-2"], r"--threads=-2"),
    ("run_name_with_slash", ["--run_name=a/b"], r"--run_name=a/b: use a plain name"),
    ("unknown_flag", ["--no_such_flag=1"], r"no_such_flag"),
    ("non_integer_width", ["--width=abc"], r"width"),
    ("positional_argument", ["stray"], r"unexpected positional arguments: stray"),
]


@pytest.mark.parametrize("argv, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_main_rejects_bad_input_in_one_line_and_writes_nothing(argv, match, files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    argv = [a.replace("{files}", str(files)) for a in argv]
    if not any(a.startswith("--epochs") for a in argv):
        argv = [*TINY, *argv]
    status, out, err = run_main(argv, capsys)
    assert status == 2, (out, err)
    line = _one_error_line(err, "myol_keras.main")
    assert re.search(match, line), line
    assert sorted(os.listdir(tmp_path)) == []  # no runs/, no saved_models/


def test_changed_flags_on_an_existing_run_are_refused_and_nothing_is_overwritten(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    saved = '{"flags": {"lr": 0.05, "method": "myol"}}'
    (run_dir / "config.json").write_text(saved)
    status, _, err = run_main([*TINY, "--run_name=r", "--lr=0.2", "--dataset=npz", f"--data_dir={files}/good.npz",
                               "--batch_size=8", "--image_size=16"], capsys)
    assert status == 2
    line = _one_error_line(err, "myol_keras.main")
    assert "different flags" in line and "--lr=0.05 before, 0.2 now" in line and "--overwrite" in line
    assert (run_dir / "config.json").read_text() == saved
    assert sorted(os.listdir(run_dir)) == ["config.json"]


@pytest.mark.skipif(not os.path.isdir("/sys/fs"), reason="needs Linux sysfs (a directory nobody can write)")
def test_a_cache_directory_that_cannot_take_the_images_is_one_line_before_training(files, tmp_path, capsys,
                                                                                   monkeypatch):
    from myol_keras.data import cache as image_cache

    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    argv = [*TINY, "--dataset=folder", f"--data_dir={files}/mixed", "--batch_size=4"]
    usage = image_cache.shutil.disk_usage(tmp_path)
    for flag, fragment, full in [
        ("--cache_dir=/sys/fs", "cache directory /sys/fs is not writable (Permission denied)", False),
        (f"--cache_dir={files}/good.npz", "good.npz is a file, not a directory", False),
        (f"--cache_dir={cache}", f"but the disk of {cache} has 0.00 GB free", True),
    ]:
        if full:
            monkeypatch.setattr(image_cache.shutil, "disk_usage", lambda path: usage._replace(free=10))
        status, out, err = run_main([*argv, flag], capsys)
        assert status == 2, (out, err)
        line = _one_error_line(err, "myol_keras.main")
        assert fragment in line and "--cache_dir" in line, line
    assert os.listdir(cwd) == [] and os.listdir(cache) == []  # no run directory, no cache entry, no temporary


# --- data: skipped files, odd colour modes, labels ------------------------------------------


def test_folder_skips_unreadable_images_with_one_counted_warning_and_accepts_gray_and_rgba(files):
    from myol_keras import data

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, info = data.load_pretrain_images("folder", str(files / "mixed"))
    messages = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert len(messages) == 1, messages
    assert messages[0].startswith("Skipped 2 unreadable image file(s) of 10 in")
    assert "truncated.png" in messages[0] and "not_an_image.jpg" in messages[0]
    arrays = np.stack(list(images.as_numpy_iterator()))
    assert arrays.shape == (8, 16, 16, 3) and arrays.dtype == np.uint8  # 6 RGB + gray + RGBA, all 3 channels


def test_npz_labels_out_of_range(files):
    from myol_keras import data

    with pytest.raises(ValueError, match=r"y_train holds labels out of range: class ids must be 0..K-1"):
        data.load_labelled("npz", "train", str(files / "negative_labels.npz"))


def test_probe_rejects_labels_out_of_range_in_one_line(files, tiny_export, capsys):
    from myol_keras.evaluation import linear_probe

    with pytest.raises(SystemExit) as exit_info:
        linear_probe.main(["probe", f"--saved_model={tiny_export}", "--dataset=npz",
                           f"--data_dir={files}/negative_labels.npz", "--epochs=1", "--export=false"])
    assert exit_info.value.code == 2
    line = _one_error_line(capsys.readouterr().err, "myol_keras.evaluation.linear_probe")
    assert "out of range" in line


@pytest.mark.parametrize("tool, prog, extra", [
    ("myol_keras.evaluation.linear_probe", "myol_keras.evaluation.linear_probe", ["--dataset=npz"]),
    ("myol_keras.embed", "myol_keras.embed", ["--images={files}/mixed"]),
])
def test_tools_reject_a_path_that_is_not_a_saved_model(tool, prog, extra, files, capsys, tmp_path, monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(tool)
    extra = [a.replace("{files}", str(files)) for a in extra]
    with pytest.raises(SystemExit) as exit_info:
        module.main(["tool", f"--saved_model={files}/not_a_saved_model", f"--data_dir={files}/good.npz"
                     if "probe" in tool else f"--output={tmp_path}/e.npy", *extra])
    assert exit_info.value.code == 2
    line = _one_error_line(capsys.readouterr().err, prog)
    assert "No SavedModel at" in line and "not_a_saved_model" in line
    assert sorted(os.listdir(tmp_path)) == []


# --- the exported signature refuses the wrong dtype or shape ---------------------------------


@pytest.mark.parametrize("signature, value, match", [
    ("serving_default", ("float32", (2, 16, 16, 3)), r"expected to be a uint8 tensor but is a float tensor"),
    ("serve_pixels", ("uint8", (2, 16, 16, 3)), r"expected to be a float tensor but is a uint8 tensor"),
    ("serving_default", ("uint8", (2, 16, 16, 1)), r"expected images shaped \[batch, height, width, 3\]"),
    ("serving_default", ("uint8", (16, 16, 3)), r"4-dimensional|expected images shaped"),
])
def test_signature_rejects_wrong_dtype_or_shape(signature, value, match, tiny_export):
    import tensorflow as tf

    loaded = tf.saved_model.load(tiny_export)
    fn = loaded.signatures[signature]
    dtype, shape = value
    name = "images" if signature == "serving_default" else "pixels"
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match=match):
        fn(**{name: tf.zeros(shape, dtype)})


# --- real subprocesses: the installed entry points -----------------------------------------


def _python(module, args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


@pytest.mark.parametrize("module, args, match", [
    ("myol_keras.main", ["--strategy=mirroredd"], r"--strategy=mirroredd: value should be one of"),
    ("myol_keras.main", ["--dataset=npz", "--data_dir={files}/truncated.npz"], r"not a valid .npz file"),
    ("myol_keras.embed", ["--saved_model={files}/not_a_saved_model", "--images={files}/mixed"], r"No SavedModel at"),
], ids=["main_unknown_strategy", "main_truncated_npz", "embed_not_a_saved_model"])
def test_subprocess_usage_errors(module, args, match, files, tmp_path):
    args = [a.replace("{files}", str(files)) for a in args]
    result = _python(module, args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    line = _one_error_line(result.stderr, module)
    assert re.search(match, line), line
    assert sorted(os.listdir(tmp_path)) == []
