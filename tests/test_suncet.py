"""SuNCEt (METHODS §2.11): the labelled batches (C x s images of the training split only), the term and its
switch after `supervised_epochs`, mixed precision, data without labels, bad flags, CLI and `myol_keras.pretrain`."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import random_views, run_main_in_process, tiny_method
from myol_keras import losses
from myol_keras.methods.suncet import LabelledBatches, SuNCEt

SEED = losses.step_seed(0, 0)
MEAN, STD = (0.5,) * 3, (0.25,) * 3


@pytest.fixture
def split_npz(tmp_path):
    """A labelled npz whose training images (value 2i + 1 in pixel 0) differ from every test image (even values)."""
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 128, size=(60, 16, 16, 3), dtype=np.uint8) * 2
    x_train[:, 0, 0, 0] = 2 * np.arange(60) % 256 + 1  # odd: identifies the training image
    y_train = np.repeat(np.arange(4), 15)
    x_test = rng.integers(0, 128, size=(20, 16, 16, 3), dtype=np.uint8) * 2
    path = tmp_path / "split.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=np.repeat(np.arange(4), 5))
    return str(path), x_train, y_train, x_test


def _config(path, **changes):
    from myol_keras.config import PretrainConfig

    settings = dict(method="suncet", dataset="npz", data_dir=path, width=4, image_size=16, batch_size=8, epochs=2,
                    steps_per_epoch=2, projector_hidden_dim=16, projection_dim=8, precision="float32", verbose=0,
                    monitor="none", labels_fraction=0.2, suncet_classes_per_batch=3, suncet_images_per_class=2)
    settings.update(changes)
    return PretrainConfig(**settings)


def test_a_labelled_batch_is_c_times_s_images_of_the_training_split_only(split_npz, tmp_path):
    from myol_keras import training

    path, x_train, y_train, x_test = split_npz
    plan = training.plan_run(_config(path, run_dir=str(tmp_path / "runs")))
    assert plan.resolved()["suncet_labelled_images"] == 12  # 20 % of 15 per class, 4 classes
    batches = plan.method_inputs.attach.__self__
    assert isinstance(batches, LabelledBatches) and batches.batch_size == 6
    subset = set(batches.sampler.indices.tolist())
    train_rows = {bytes(x): i for i, x in enumerate(x_train)}
    test_rows = {bytes(x) for x in x_test}
    for step in range(6):
        images, labels, targets = batches.raw_batch(step)
        assert images.shape == (6, 16, 16, 3)
        rows = [train_rows[bytes(x)] for x in images]  # KeyError: not a training image
        assert not {bytes(x) for x in images} & test_rows
        assert set(rows) <= subset and len(set(rows)) == 6
        np.testing.assert_array_equal(y_train[rows], labels)
        assert sorted(np.bincount(labels, minlength=4).tolist()) == [0, 2, 2, 2]  # C = 3 classes x s = 2
        np.testing.assert_array_equal(targets, (labels[:, None] == labels[None, :3]).astype(np.float32))
    np.testing.assert_array_equal(batches.raw_batch(4)[0], batches.raw_batch(4)[0])  # a pure function of the step
    # the stream: one augmented view of each, the epoch on every row, from the resumed epoch on
    element = next(iter(batches.dataset(start_step=5)))
    assert element["labelled"].shape == (6, 16, 16, 3) and element["labelled"].dtype == tf.float32
    np.testing.assert_array_equal(element["epoch"].numpy(), [2] * 6)  # step 5 of 2 per epoch
    np.testing.assert_array_equal(element["labelled_targets"].numpy(), batches.raw_batch(5)[2])


def test_the_pretraining_stream_carries_the_labelled_batch(split_npz, tmp_path):
    from myol_keras import training

    path = split_npz[0]
    config = _config(path, run_dir=str(tmp_path / "runs"))
    plan = training.plan_run(config)
    batch = next(iter(training.build_dataset(config, plan, SuNCEt, start_epoch=1)))
    assert [v.shape for v in batch["views"]] == [(8, 16, 16, 3)] * 2
    assert batch["labelled"].shape == (6, 16, 16, 3) and batch["labelled_targets"].shape == (6, 3)
    np.testing.assert_array_equal(batch["epoch"].numpy(), [1] * 6)
    device = training.build_dataset(config.replace(augment_on="device"), plan, SuNCEt)
    assert {"images", "seed", "labelled", "labelled_targets", "epoch"} <= set(next(iter(device)))
    # two replicas: the global labelled batch is one C x s block per replica (tf.distribute splits it in two)
    two = next(iter(training.build_dataset(config, plan, SuNCEt, start_epoch=1, replicas=2)))
    assert [v.shape for v in two["views"]] == [(8, 16, 16, 3)] * 2
    assert two["labelled"].shape == (12, 16, 16, 3) and two["epoch"].shape == (12,)
    batches = plan.method_inputs.attach.__self__
    images, labels, targets = batches.raw_batch(2, replicas=2)  # step 2: epoch 1's first
    np.testing.assert_array_equal(two["labelled_targets"].numpy(), targets)
    for block in np.split(targets, 2):
        np.testing.assert_array_equal(block, np.tile(np.eye(3, dtype=np.float32), (2, 1)))
    assert [len({bytes(x) for x in half}) for half in np.split(images, 2)] == [6, 6]
    # 3 labelled images a class, fewer than 2 replicas x s = 4: each block takes 2 of them, together all 3
    assert len({bytes(x) for x in images}) == 9


def _batch(epoch, classes=3, per_class=2):
    x1, x2 = random_views(batch=8, size=16)
    labelled = random_views(batch=classes * per_class, size=16, num_views=1, seed=3)[0]
    targets = np.tile(np.eye(classes, dtype=np.float32), (per_class, 1))
    return {"views": (tf.constant(x1), tf.constant(x2)), "labelled": tf.constant(labelled),
            "labelled_targets": tf.constant(targets), "epoch": tf.fill([classes * per_class], epoch)}


def test_the_term_is_added_for_supervised_epochs_then_switched_off():
    model = tiny_method(SuNCEt, supervised_epochs=2)
    for epoch, weight in ((0, 1.0), (1, 1.0), (2, 0.0), (7, 0.0)):
        data = _batch(epoch)
        views = model._unpack_views(data)
        terms = model.compute_loss_terms(views, [], SEED)
        assert float(terms["suncet_loss"]) > 0
        expected = float(terms["ntxent_loss"]) + weight * float(terms["suncet_loss"])
        assert float(terms["loss"]) == pytest.approx(expected, rel=1e-6), epoch
    always = tiny_method(SuNCEt)  # supervised_epochs=0: every epoch
    terms = always.compute_loss_terms(always._unpack_views(_batch(100)), [], SEED)
    assert float(terms["loss"]) == pytest.approx(float(terms["ntxent_loss"]) + float(terms["suncet_loss"]), rel=1e-6)


def test_the_terms_are_simclr_and_suncet_of_one_forward():
    model = tiny_method(SuNCEt, temperature=0.2, suncet_temperature=0.1)
    data = _batch(0)
    terms = model.compute_loss_terms(model._unpack_views(data), [], SEED)
    x1, x2 = data["views"]
    z, _ = model.online_forward(tf.concat([x1, x2, data["labelled"]], axis=0))
    assert float(terms["ntxent_loss"]) == pytest.approx(float(losses.simclr_loss(z[:16], 0.2)), rel=1e-5)
    expected = losses.suncet_loss(z[16:], data["labelled_targets"], 0.1)
    assert float(terms["suncet_loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_views_without_a_labelled_batch_are_a_clear_error():
    model = tiny_method(SuNCEt)
    with pytest.raises(ValueError, match="LabelledBatches"):
        model._unpack_views(tuple(tf.constant(v) for v in random_views()))


def test_mixed_bfloat16_step_keeps_losses_in_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = tiny_method(SuNCEt)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    data = _batch(0)
    terms = model.compute_loss_terms(model._unpack_views(data), [], SEED)
    assert all(terms[name].dtype == tf.float32 for name in ("loss", "ntxent_loss", "suncet_loss"))
    logs = model.train_step(data)
    assert np.isfinite(float(logs["loss"])) and model.optimized_variables[0].dtype == "float32"


# --- the command line and the Python API ------------------------------------------------------------

TINY = ["--width=4", "--image_size=16", "--batch_size=8", "--epochs=2", "--steps_per_epoch=2",
        "--projector_hidden_dim=16", "--projection_dim=8", "--precision=float32", "--verbose=0", "--monitor=none"]


def _flat_folder(tmp_path):
    from PIL import Image

    images = tmp_path / "flat"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return images


@pytest.mark.parametrize("argv, match", [
    (["--dataset=digits", "--labels_fraction=0"], r"--labels_fraction"),
    (["--dataset=digits", "--labels_fraction=1.5"], r"--labels_fraction"),
    (["--dataset=digits", "--supervised_epochs=-1"], r"--supervised_epochs"),
    (["--dataset=digits", "--supervised_epochs=3"], r"--supervised_epochs=3 is more than --epochs=2"),
    (["--dataset=digits", "--suncet_temperature=0"], r"--suncet_temperature"),
    (["--dataset=digits", "--suncet_ntxent_temperature=-1"], r"--suncet_ntxent_temperature"),
    (["--dataset=digits", "--suncet_images_per_class=0"], r"--suncet_images_per_class"),
    (["--dataset=digits", "--suncet_classes_per_batch=-1"], r"--suncet_classes_per_batch"),
    (["--dataset=digits", "--suncet_classes_per_batch=11"], r"--suncet_classes_per_batch=11 is more than the 10 classes"),
    (["--dataset=digits", "--labels_fraction=0.01", "--suncet_images_per_class=3"],
     r"--suncet_images_per_class=3 is more than the 1 labelled images of the smallest class"),
    (["--dataset=folder", "--data_dir={flat}", "--cache_dir={tmp}/cache"],
     r"--method=suncet needs labelled training images; --dataset=folder gives none"),
])
def test_bad_suncet_settings_and_data_without_labels_are_one_line_exit_2(argv, match, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    flat = _flat_folder(tmp_path) if any("{flat}" in a for a in argv) else None
    argv = [a.replace("{flat}", str(flat)).replace("{tmp}", str(tmp_path)) for a in argv]
    status, _, err = run_main_in_process(["--method=suncet", *TINY, *argv], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1, err
    assert lines[0].startswith("myol_keras.main: error: ") and re.search(match, lines[0]), lines[0]
    assert sorted(os.listdir(work)) == []


def test_trains_from_the_command_line_and_from_pretrain(split_npz, tmp_path, capsys, monkeypatch):
    import csv

    import myol_keras

    monkeypatch.chdir(tmp_path)
    path = split_npz[0]
    status, _, err = run_main_in_process(["--method=suncet", "--dataset=npz", f"--data_dir={path}", *TINY,
                                          "--labels_fraction=0.2", "--suncet_classes_per_batch=3",
                                          "--supervised_epochs=1", "--run_name=cli"], capsys)
    assert status == 0, err[-3000:]
    with open(tmp_path / "runs" / "cli" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["loss"]) == pytest.approx(float(rows[0]["ntxent_loss"]) + float(rows[0]["suncet_loss"]),
                                                   rel=1e-5)
    assert float(rows[1]["loss"]) == pytest.approx(float(rows[1]["ntxent_loss"]), rel=1e-6)  # switched off
    export = myol_keras.pretrain(_config(path, epochs=1, run_name="api"))
    assert os.path.exists(os.path.join(export, "saved_model.pb"))
