"""ResumableBackup and the deterministic input pipeline, in-process (the kill
tests in test_resume.py drive the CLI through SIGKILLs)."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import random_views, tiny_method
from myol_keras import augment, checkpoint, data
from myol_keras.callbacks import EMATargetUpdate, EpochHistoryCSV
from myol_keras.methods import MoCo


def _moco():
    model = tiny_method(MoCo, queue_size=16, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return model


def _fit(model, backup, history, epochs, initial_epoch=0):
    ds = tf.data.Dataset.from_tensors(random_views(batch=8, size=16)).repeat()
    model.fit(ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=2, verbose=0, shuffle=False,
              callbacks=[EMATargetUpdate(0.9), EpochHistoryCSV(history), backup])


def test_restore_brings_back_every_variable_and_the_history(tmp_path):
    backup_dir, history = str(tmp_path / "backup"), str(tmp_path / "history.csv")
    trained = _moco()
    _fit(trained, checkpoint.ResumableBackup(backup_dir, history), history, epochs=3)
    assert [e for e, _ in checkpoint.checkpoints(backup_dir)] == [2, 3]  # the latest and the previous good one
    assert not [n for n in os.listdir(backup_dir) if n.startswith(".tmp-")]

    fresh = _moco()
    os.remove(history)
    assert checkpoint.ResumableBackup(backup_dir, history).restore(fresh) == 3
    assert int(fresh.optimizer.iterations.numpy()) == 6
    for a, b in zip(trained.weights, fresh.weights):  # online, target (EMA), BN statistics, MoCo queue
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for a, b in zip(trained.optimizer.variables, fresh.optimizer.variables):  # iterations, momentum slots
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert np.any(fresh.queue.numpy() != 0) and int(fresh.queue_pointer.numpy()) == int(trained.queue_pointer.numpy())
    with open(history) as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["0", "1", "2"]


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    backup_dir, history = str(tmp_path / "backup"), str(tmp_path / "history.csv")
    model = _moco()
    _fit(model, checkpoint.ResumableBackup(backup_dir, history), history, epochs=2)
    _, latest = checkpoint.latest_checkpoint(backup_dir)
    with open(os.path.join(latest, checkpoint.WEIGHTS_FILE), "r+b") as f:  # a disk error, say
        f.truncate(100)
    os.makedirs(os.path.join(backup_dir, ".tmp-epoch-000003-x"))  # a kill mid-write
    fresh = _moco()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        epoch = checkpoint.ResumableBackup(backup_dir, history).restore(fresh)
    assert epoch == 1 and any("damaged checkpoint" in str(w.message) for w in caught)
    assert int(fresh.optimizer.iterations.numpy()) == 2
    assert not os.path.exists(os.path.join(backup_dir, ".tmp-epoch-000003-x"))
    with open(history) as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["0"]


def test_no_checkpoint_is_written_for_nan_weights(tmp_path):
    backup_dir = str(tmp_path / "backup")
    model = _moco()
    backup = checkpoint.ResumableBackup(backup_dir)
    backup.set_model(model)
    backup.on_epoch_end(0, {"loss": 1.0})
    model.projector.trainable_variables[0].assign(tf.fill(model.projector.trainable_variables[0].shape, np.nan))
    with pytest.raises(checkpoint.NonFiniteError, match="NaN or Inf weights at the end of epoch 2"):
        backup.on_epoch_end(1, {"loss": 1.0})
    with pytest.raises(checkpoint.NonFiniteError, match="NaN or Inf loss in epoch 3"):
        backup.on_epoch_end(2, {"loss": float("nan")})
    assert [e for e, _ in checkpoint.checkpoints(backup_dir)] == [1]


def _pipeline(start_epoch, seed=0, shuffle_buffer=0):
    images = np.random.default_rng(0).integers(0, 256, size=(20, 16, 16, 3), dtype=np.uint8)
    if shuffle_buffer:  # the previous pipeline took a tf.data.Dataset
        images = tf.data.Dataset.from_tensor_slices(images)
    recipe = augment.myol_view_recipe(16, (0.5,) * 3, (0.25,) * 3, seed=1)
    return data.epoch_pipeline(images, augment.make_view_fn([recipe, recipe]), 4, seed=seed,
                               start_epoch=start_epoch, shuffle_buffer=shuffle_buffer)


@pytest.mark.parametrize("shuffle_buffer", [0, 8], ids=["global_permutation", "shuffle_buffer"])
def test_epoch_pipeline_is_a_function_of_seed_epoch_and_batch(shuffle_buffer):
    def batches(start_epoch, count, seed=0):
        return [tuple(v.numpy() for v in b) for b in _pipeline(start_epoch, seed, shuffle_buffer).take(count)]

    first = batches(0, 10)  # epochs 0 and 1 (5 batches each)
    again = batches(0, 10)
    resumed = batches(1, 5)
    other_seed = batches(0, 5, seed=1)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    for a, b in zip(first[5:], resumed):  # a run resumed at epoch 1 sees epoch 1's batches
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(first[0][0], first[5][0])  # epochs differ
    assert not np.array_equal(first[0][0], first[0][1])  # the two views differ
    assert not np.array_equal(first[0][0], other_seed[0][0])


def test_stateless_recipe_is_reproducible_and_keeps_the_stateful_api():
    images = tf.constant(np.random.default_rng(1).integers(0, 256, size=(6, 20, 20, 3), dtype=np.uint8))
    recipe = augment.myol_view_recipe(16, (0.5,) * 3, (0.25,) * 3, seed=3)
    seed = tf.constant([7, 11], tf.int64)
    a = augment.apply_recipe(recipe, images, seed).numpy()
    b = augment.apply_recipe(recipe, images, seed).numpy()
    c = augment.apply_recipe(recipe, images, tf.constant([7, 12], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 16, 16, 3) and not np.array_equal(a, c)
    s1 = augment.apply_recipe(recipe, images).numpy()  # stateful: fresh draws per call
    s2 = augment.apply_recipe(recipe, images).numpy()
    assert s1.shape == (6, 16, 16, 3) and not np.array_equal(s1, s2)
