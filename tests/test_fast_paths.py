"""The fast paths of issue 11 change speed, not results: the in-step EMA under
`steps_per_execution`, and augmentation inside the training step
(`--augment_on=device`), each against the default path on the same data."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import random_views, run_main_in_process, tiny_method
from myol_keras import augment, conv, data
from myol_keras.callbacks import EMATargetUpdate
from myol_keras.methods import BYOL, MYOL, TriBYOL


def _twin_models(method_cls, steps_per_execution=(1, 1)):
    """Two compiled copies of one tiny model with identical weights."""
    models = []
    for spe in steps_per_execution:
        model = tiny_method(method_cls, weight_decay=1e-4, seed=5)
        if models:
            model.set_weights(models[0].get_weights())
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), steps_per_execution=spe)
        models.append(model)
    return models


def _assert_same_weights(a, b, atol):
    names = [v.path for v in a.weights]
    for name, x, y in zip(names, a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=name)


@pytest.mark.parametrize("method_cls", [MYOL, TriBYOL])
def test_in_step_ema_with_steps_per_execution_equals_the_callback(method_cls):
    # MYOL: mixing randomness keyed on the step; TriBYOL: alternating targets;
    # the cosine tau changes every step, so a skipped or shifted update shows.
    views = random_views(batch=8, num_views=method_cls.num_views)
    ds = tf.data.Dataset.from_tensors(views).repeat()
    per_step, per_execution = _twin_models(method_cls, steps_per_execution=(1, 2))
    per_step.fit(ds, epochs=1, steps_per_epoch=4, verbose=0,
                 callbacks=[EMATargetUpdate(0.9, "cosine", total_steps=8)])
    per_execution.fit(ds, epochs=1, steps_per_epoch=4, verbose=0,
                      callbacks=[EMATargetUpdate(0.9, "cosine", total_steps=8, in_step=True)])
    assert int(per_execution.optimizer.iterations.numpy()) == 4
    assert per_execution.in_step_ema == (0.9, "cosine", 8)
    _assert_same_weights(per_step, per_execution, atol=2e-5)
    # the target really moved (not equal to its initial copy of the online net)
    target, online = per_execution.ema_pairs[0]
    assert not np.allclose(target.numpy(), online.numpy())


def test_the_callback_refuses_to_run_once_per_execution():
    _, model = _twin_models(BYOL, steps_per_execution=(1, 2))
    ds = tf.data.Dataset.from_tensors(random_views(batch=8)).repeat()
    with pytest.raises(ValueError, match="in_step=True"):
        model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[EMATargetUpdate(0.99)])


def test_device_augmentation_gives_the_host_pipeline_step():
    rng = np.random.default_rng(0)
    images = tf.data.Dataset.from_tensor_slices(rng.integers(0, 256, size=(16, 16, 16, 3), dtype=np.uint8))
    recipes = [augment.myol_view_recipe(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), seed=s) for s in (1, 2)]
    view_fn = augment.make_view_fn(recipes)
    host_ds = data.epoch_pipeline(images, view_fn, 8, seed=3)
    device_ds = data.epoch_pipeline(images, None, 8, seed=3)
    raw = next(iter(device_ds))
    assert sorted(raw) == ["images", "seed"] and raw["images"].dtype == tf.uint8
    assert raw["seed"].shape == (8, 2) and np.all(raw["seed"].numpy() == raw["seed"].numpy()[0])

    host, device = _twin_models(MYOL)
    with pytest.raises(ValueError, match="set_device_augmentation"):
        device.fit(device_ds, epochs=1, steps_per_epoch=1, verbose=0)
    device.set_device_augmentation(view_fn)
    # The views the step computes are the host pipeline's, batch by batch (to float
    # rounding: the graph may fuse the colour arithmetic differently) ...
    in_step_views = tf.function(device._unpack_views)
    for (host_views, raw_batch) in zip(host_ds.take(3), device_ds.take(3)):
        for h, d in zip(host_views, in_step_views(raw_batch)):
            np.testing.assert_allclose(h.numpy(), d.numpy(), atol=5e-5, rtol=0)
    # ... so the first step's loss (computed before any update) is the host step's.
    # Weights are not compared: this width-4 net on 8 images is chaotic (1e-5 noise in
    # the views moved its weights by ~0.25 within 3 steps, by up to 5e-3 in one).
    losses = [model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0, callbacks=[EMATargetUpdate(0.99)]).history
              for model, ds in ((host, host_ds), (device, device_ds))]
    for key in ("loss", "byol_loss", "mix_loss"):
        assert losses[1][key][0] == pytest.approx(losses[0][key][0], rel=1e-4), key
    assert int(device.optimizer.iterations.numpy()) == 1
    with pytest.raises(ValueError, match="callable"):
        device.set_device_augmentation("views")


def test_cli_device_augmentation_and_steps_per_execution(tmp_path, capsys):
    argv = ["--method=myol", "--dataset=digits", "--image_size=16", "--width=4", "--projector_hidden_dim=16",
            "--projection_dim=8", "--predictor_hidden_dim=16", "--batch_size=16", "--epochs=1",
            "--steps_per_epoch=4", "--precision=float32", "--verbose=0", f"--run_dir={tmp_path}/runs",
            f"--export_dir={tmp_path}/saved_models", "--run_name=fast"]
    status, _, err = run_main_in_process([*argv, "--steps_per_execution=3"], capsys)
    assert status == 2 and "does not divide the 4 steps per epoch" in err and "1, 2, 4" in err
    assert not (tmp_path / "runs").exists()

    status, out, err = run_main_in_process([*argv, "--steps_per_execution=2", "--augment_on=device"], capsys)
    assert status == 0, err
    history = (tmp_path / "runs" / "fast" / "history.csv").read_text().splitlines()
    header, row = history[0].split(","), history[1].split(",")
    speed = float(row[header.index("images_per_second")])
    assert speed > 0 and np.isfinite(float(row[header.index("loss")]))
    assert (tmp_path / "saved_models" / "fast" / "1" / "saved_model.pb").exists()


def _assert_same_loss_curve(method_cls, steps=5, variant_scope=contextlib.nullcontext, **variant):
    """`steps` seeded float32 steps of a tiny model with `variant` kwargs equal the default model's.

    `variant_scope()` is opened around the variant's `fit` calls (a lever set by the entry point).

    SGD with momentum, coupled weight decay and the in-step EMA (and MYOL's mixing),
    along the default run's trajectory: before each step the variant gets the default
    model's whole state (weights, BN moving statistics, optimizer slots and iterations),
    so every step is compared from the same point. (Free-running trajectories of this
    tiny network are chaotic: a 1e-7 relative change of the input views alone moves its
    weights by up to 1e-1 within 5 steps; along one trajectory the paths agree to ~1e-6.)
    Returns the variant model.
    """
    keras.utils.set_random_seed(3)
    ds = tf.data.Dataset.from_tensors(random_views(batch=16, num_views=2, seed=11)).repeat()
    models = []
    for kwargs in ({}, variant):
        model = tiny_method(method_cls, width=8, weight_decay=1e-4, seed=5, **kwargs)
        if models:
            model.set_weights(models[0].get_weights())
        model.set_in_step_ema(0.99)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        models.append(model)
    default, other = models
    moved = None
    for step in range(steps):
        other.set_weights(default.get_weights())
        for mine, theirs in zip(other.optimizer.variables, default.optimizer.variables):
            mine.assign(theirs)
        before = default.get_weights()
        expected = default.fit(ds, epochs=1, steps_per_epoch=1, verbose=0).history
        with variant_scope():
            got = other.fit(ds, epochs=1, steps_per_epoch=1, verbose=0).history
        for key in expected:
            assert got[key][0] == pytest.approx(expected[key][0], rel=1e-5, abs=1e-6), (step, key)
        _assert_same_weights(default, other, atol=2e-5)
        moved = max(float(np.abs(a - b).max()) for a, b in zip(before, default.get_weights()))
    assert moved > 1e-3  # the steps really moved the weights (BN statistics and targets included)
    assert int(other.optimizer.iterations.numpy()) == steps
    return other


@pytest.mark.parametrize("method_cls", [BYOL, MYOL])
def test_stacked_views_give_the_per_view_loss_curve(method_cls):
    # Issue 17: one forward pass over the stacked views (per-view BatchNorm statistics) is the
    # reference's one pass per view to float tolerance.
    stacked = _assert_same_loss_curve(method_cls, stack_views=True)
    assert stacked.stack_views
    assert type(stacked).from_config(stacked.get_config()).stack_views is True


@pytest.mark.parametrize("method_cls", [BYOL, MYOL])
def test_gemm_weight_gradients_give_the_kernel_loss_curve(method_cls, gemm_calls):
    # Issue 17: the weight gradient of the small convolutions as one GEMM (myol_keras.conv) is
    # TensorFlow's convolution kernel to float tolerance. At 16 px the width-8 ResNet-18's
    # stages 2-4 run at 8, 4 and 2 px: max side 8 puts 9 of its 3x3 convolutions on the GEMM path.
    _assert_same_loss_curve(method_cls, variant_scope=lambda: conv.gemm_weight_gradient_side(8))
    # Traced once per online pass: BYOL 2 views, MYOL + the mixed batch; 3 per stage, stage 2..4.
    online_passes = 3 if method_cls is MYOL else 2
    assert len(gemm_calls) == online_passes * 9
    assert sorted({x.shape[1] for x in gemm_calls}) == [2, 4, 8]
