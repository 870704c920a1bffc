"""CLSA (METHODS §2.10): the strong crop's size, the views, the loss and its alpha, the queue (and its resume),
mixed precision, and training from the command line and from `myol_keras.pretrain`."""

import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import random_views, run_main_in_process, tiny_method
from myol_keras import losses
from myol_keras.methods.clsa import CLSA, strong_crop_size

SEED = losses.step_seed(0, 0)
MEAN, STD = (0.5,) * 3, (0.25,) * 3


# --- the strong crop's size ----------------------------------------------------------------------


@pytest.mark.parametrize("image_size, stem, expected", [
    (224, None, 96),  # the code's own sizes
    (96, None, 41),  # 96 * 96 / 224 = 41.1 (64-px stem, minimum 17)
    (64, None, 27),  # 27.4
    (32, None, 14),  # 13.7
    (21, None, 9),  # 9.0
    (16, None, 9),  # 6.9, raised to the CIFAR stem's minimum
    (32, "64px", 17),  # 13.7, raised to the 64-px stem's minimum
])
def test_strong_crop_is_the_codes_96_of_224_at_least_the_stems_minimum(image_size, stem, expected):
    assert strong_crop_size(image_size, stem) == expected


def test_a_requested_strong_size_is_kept_and_checked_against_the_stem():
    assert strong_crop_size(32, "cifar", requested=20) == 20
    with pytest.raises(ValueError, match=r"--clsa_strong_size=12 is below the minimum of 17 px .*'64px'"):
        strong_crop_size(64, "64px", requested=12)


def test_views_are_weak_query_key_and_a_smaller_strong_query_drawn_from_the_seed():
    view_fn = CLSA.make_view_fn(32, MEAN, STD, seed=3)
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)), tf.uint8)
    weak, key, strong = view_fn(images, seed=tf.constant([1, 2], tf.int64))
    assert weak.shape == key.shape == (4, 32, 32, 3) and strong.shape == (4, 14, 14, 3)
    assert not np.allclose(weak.numpy(), key.numpy())  # independent draws
    again = view_fn(images, seed=tf.constant([1, 2], tf.int64))
    for a, b in zip((weak, key, strong), again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert CLSA.make_view_fn(32, MEAN, STD, strong_size=20)(images)[2].shape == (4, 20, 20, 3)


# --- loss, alpha, queue ---------------------------------------------------------------------------


def _views(strong=9):
    weak, key = random_views(batch=8, size=16)
    strong_view = np.random.default_rng(5).normal(size=(8, strong, strong, 3)).astype("float32")
    return tuple(tf.constant(v) for v in (weak, key, strong_view))


def test_loss_is_the_codes_contrastive_term_plus_alpha_times_ddm():
    model = tiny_method(CLSA, queue_size=16, alpha=1.0)
    views = _views()
    targets = model.compute_targets(views)
    terms = model.compute_loss_terms(views, targets, SEED)
    q, _ = model.online_forward(views[0])
    q_strong, _ = model.online_forward(views[2])
    k = targets[0]
    contrastive = losses.clsa_contrastive_loss(q, k, model.queue, 0.2, "code")
    ddm = losses.ddm_loss(q, q_strong, k, model.queue, 0.2, "code")
    assert float(terms["contrastive_loss"]) == pytest.approx(float(contrastive), rel=1e-5)
    assert float(terms["ddm_loss"]) == pytest.approx(float(ddm), rel=1e-5)
    for alpha in (0.0, 1.0, 2.5):
        model.alpha = alpha
        terms = model.compute_loss_terms(views, targets, SEED)
        assert float(terms["loss"]) == pytest.approx(float(contrastive) + alpha * float(ddm), rel=1e-5)


def test_alpha_zero_takes_no_gradient_from_the_strong_view():
    model = tiny_method(CLSA, queue_size=16, alpha=0.0)
    views = list(_views())
    targets = model.compute_targets(views)
    strong = tf.Variable(views[2])
    with tf.GradientTape(persistent=True) as tape:
        views[2] = strong
        loss = model.compute_loss_terms(views, targets, SEED)["loss"]
        model.alpha = 1.0
        loss_with_ddm = model.compute_loss_terms(views, targets, SEED)["loss"]
    assert tape.gradient(loss, strong) is None or float(tf.reduce_max(tf.abs(tape.gradient(loss, strong)))) == 0.0
    assert float(tf.reduce_max(tf.abs(tape.gradient(loss_with_ddm, strong)))) > 0.0


@pytest.mark.parametrize("symmetric", [False, True])
def test_a_step_enqueues_the_keys_of_the_key_view_or_symmetrically_of_the_weak_view(symmetric):
    model = tiny_method(CLSA, queue_size=24, symmetric=symmetric)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    views = _views()
    keys = model.compute_targets(views)  # before the step: the step's own keys
    assert len(keys) == (2 if symmetric else 1)
    logs = model.train_step(views)
    assert np.isfinite(float(logs["loss"])) and float(logs["ddm_loss"]) > 0
    assert int(model.queue_pointer.numpy()) == 8
    np.testing.assert_allclose(model.queue.numpy()[:8], keys[-1].numpy(), atol=1e-5)
    assert any(v is model.queue for v in model.non_trainable_weights)


def test_paper_form_and_config_round_trip():
    model = tiny_method(CLSA, queue_size=16, form="paper", ddm_temperature=0.5, strong_size=12)
    terms = model.compute_loss_terms(_views(), model.compute_targets(_views()), SEED)
    assert np.isfinite(float(terms["loss"]))
    config = model.get_config()
    assert {k: config[k] for k in ("form", "ddm_temperature", "strong_size", "queue_size", "temperature")} == {
        "form": "paper", "ddm_temperature": 0.5, "strong_size": 12, "queue_size": 16, "temperature": 0.2}
    with pytest.raises(ValueError, match="form"):
        tiny_method(CLSA, form="both")


def test_mixed_bfloat16_step_keeps_losses_in_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = tiny_method(CLSA, queue_size=16)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    views = _views()
    terms = model.compute_loss_terms(views, model.compute_targets(views), SEED)
    assert all(terms[name].dtype == tf.float32 for name in ("loss", "contrastive_loss", "ddm_loss"))
    logs = model.train_step(views)
    assert np.isfinite(float(logs["loss"]))
    assert model.queue.dtype == "float32" and model.optimized_variables[0].dtype == "float32"


# --- the command line and the Python API ------------------------------------------------------------

TINY = ["--dataset=digits", "--width=4", "--image_size=16", "--batch_size=8", "--epochs=1", "--steps_per_epoch=2",
        "--projector_hidden_dim=16", "--projection_dim=8", "--precision=float32", "--verbose=0", "--monitor=none"]


@pytest.mark.parametrize("argv, match", [
    (["--clsa_temperature=0"], r"--clsa_temperature"),
    (["--clsa_ddm_temperature=-1"], r"--clsa_ddm_temperature"),
    (["--clsa_alpha=-0.5"], r"--clsa_alpha"),
    (["--clsa_form=both"], r"--clsa_form=both: value should be one of <code\|paper>"),
    (["--clsa_queue_size=0"], r"--clsa_queue_size"),
    (["--clsa_symmetric=maybe"], r"clsa_symmetric"),
    (["--clsa_strong_size=-1"], r"--clsa_strong_size"),
    (["--clsa_strong_size=5"], r"--clsa_strong_size=5 is below the minimum of 9 px"),
])
def test_bad_clsa_settings_are_one_line_exit_2_and_write_nothing(argv, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main_in_process(["--method=clsa", *TINY, *argv], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1, err
    assert lines[0].startswith("myol_keras.main: error: ") and re.search(match, lines[0]), lines[0]
    assert sorted(os.listdir(tmp_path)) == []


def test_trains_from_the_command_line_and_from_pretrain(tmp_path, capsys, monkeypatch):
    import myol_keras

    monkeypatch.chdir(tmp_path)
    status, out, err = run_main_in_process(["--method=clsa", *TINY, "--clsa_queue_size=32", "--run_name=cli"], capsys)
    assert status == 0, err[-3000:]
    header = (tmp_path / "runs" / "cli" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "contrastive_loss", "ddm_loss"} <= set(header)
    path = myol_keras.pretrain(myol_keras.PretrainConfig(
        method="clsa", dataset="digits", width=4, image_size=16, batch_size=8, epochs=1, steps_per_epoch=2,
        projector_hidden_dim=16, projection_dim=8, precision="float32", verbose=0, monitor="none",
        clsa_queue_size=32, clsa_symmetric=True, run_name="api"))
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    import json

    config = json.loads((tmp_path / "runs" / "api" / "config.json").read_text())
    assert config["clsa_symmetric"] is True and config["resolved"]["clsa_strong_size"] == 9


# --- the queue survives a kill ----------------------------------------------------------------------

_RECORDING_RUN = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    import myol_keras
    from myol_keras import training

    out, phase = sys.argv[1], sys.argv[2]
    original = training._callbacks

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            np.save(f"{out}/{phase}_begin{epoch}.npy", self.model.queue.numpy())
            np.save(f"{out}/{phase}_begin{epoch}_pointer.npy", self.model.queue_pointer.numpy())
        def on_epoch_end(self, epoch, logs=None):
            np.save(f"{out}/{phase}_end{epoch}.npy", self.model.queue.numpy())

    def with_record(*args, **kwargs):
        callbacks = original(*args, **kwargs)
        return [*callbacks[:-1], Record(), callbacks[-1]]  # before FaultPoint, the last

    training._callbacks = with_record
    myol_keras.pretrain(myol_keras.PretrainConfig(
        method="clsa", dataset="digits", width=4, image_size=16, batch_size=8, epochs=2, steps_per_epoch=2,
        projector_hidden_dim=16, projection_dim=8, precision="float32", verbose=0, monitor="none",
        clsa_queue_size=48, run_dir=f"{out}/runs", export_dir=f"{out}/saved_models", run_name="killed"))
""")


def test_the_queue_after_a_resume_is_the_queue_before_the_kill(tmp_path):
    def run(phase, fault=None):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(sys.path))
        env.pop("MYOL_KERAS_FAULT", None)
        if fault:
            env["MYOL_KERAS_FAULT"] = fault
        return subprocess.run([sys.executable, "-c", _RECORDING_RUN, str(tmp_path), phase], env=env,
                              capture_output=True, text=True, timeout=600)

    killed = run("first", fault="epoch_end:1")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (tmp_path / "first_begin1.npy").exists()  # killed after epoch 1's checkpoint
    before = np.load(tmp_path / "first_end0.npy")
    assert not np.array_equal(before, np.load(tmp_path / "first_begin0.npy"))  # epoch 1 filled 16 of 48 rows
    resumed = run("second")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    assert not (tmp_path / "second_begin0.npy").exists()
    np.testing.assert_array_equal(np.load(tmp_path / "second_begin1.npy"), before)
    assert int(np.load(tmp_path / "second_begin1_pointer.npy")) == 16
