"""Multi-crop CLSA (METHODS §2.10, `--clsa_crops=multi`): the crop sides scaled from the code's 224..96 px, the
11 views, the summed 5 + 25 (symmetric: 10 + 50) loss terms against NumPy, one CLI run and the bad flag values."""

import doctest
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_main_in_process, tiny_method
from myol_keras import losses
from myol_keras.methods import clsa_views
from myol_keras.methods.clsa import CLSA, multi_crop_sizes

SEED = losses.step_seed(0, 0)
MEAN, STD = (0.5,) * 3, (0.25,) * 3


# --- the crop sides -------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size, stem, expected", [
    (224, None, [224, 192, 160, 128, 96]),  # the code's own sides (64-px stem, minimum 17)
    (96, None, [96, 82, 69, 55, 41]),  # 82.3, 68.6, 54.9, 41.1
    (64, None, [64, 55, 46, 37, 27]),  # 54.9, 45.7, 36.6, 27.4
    (32, None, [32, 27, 23, 18, 14]),  # 27.4, 22.9, 18.3, 13.7
    (16, None, [16, 14, 11, 9, 9]),  # 13.7, 11.4, 9.1, 6.9 raised to the CIFAR stem's 9: two sides collide
    (32, "64px", [32, 27, 23, 18, 17]),  # 13.7 raised to the 64-px stem's 17
])
def test_multi_crop_sides_are_the_codes_scaled_by_size_over_224_at_least_the_stems_minimum(image_size, stem, expected):
    assert multi_crop_sizes(image_size, stem) == expected
    # the last side is single-crop's strong side: one rule for both
    assert expected[-1] == clsa_views.strong_crop_size(image_size, stem)


def test_the_mapping_docstrings_examples_hold():
    result = doctest.testmod(clsa_views, verbose=False)
    assert result.attempted >= 3 and result.failed == 0


# --- the views ------------------------------------------------------------------------------------


def test_multi_crop_views_are_eleven_tensors_of_their_own_sides_drawn_from_the_seed():
    # (one eager call: the five RandAugment recipes cost seconds; the seeded determinism of
    # `augment.make_view_fn` is tested with the augmentations)
    view_fn = CLSA.make_view_fn(32, MEAN, STD, seed=3, crops="multi")
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)), tf.uint8)
    views = view_fn(images, seed=tf.constant([1, 2], tf.int64))
    sides = [32, 27, 23, 18, 14]
    # (w0, key, w1..w4, s0..s4)
    assert [tuple(v.shape) for v in views] == [(2, s, s, 3) for s in [32, 32, *sides[1:], *sides]]
    weak0, key, strong0 = views[0], views[1], views[6]
    assert not np.allclose(weak0.numpy(), key.numpy()) and not np.allclose(weak0.numpy(), strong0.numpy())
    # the recipes: weak crops at their scale ranges, strong ones with RandAugment last before Normalize,
    # view i seeded with seed + 1000 i (single-crop's first three as before)
    recipes = clsa_views.view_recipes(32, MEAN, STD, seed=3, crops="multi")
    assert [r[1].scale for r in recipes] == [(0.2, 1.0), (0.2, 1.0), *clsa_views.MULTI_SCALES[1:],
                                             *clsa_views.MULTI_SCALES]
    assert [type(r[-2]).__name__ for r in recipes] == ["RandomGrayscale"] * 6 + ["RandAugment"] * 5
    assert len({r[1].seed for r in recipes}) == 11
    single = clsa_views.view_recipes(32, MEAN, STD, seed=3)
    assert [r[1].seed for r in single[:2]] == [r[1].seed for r in recipes[:2]]
    with pytest.raises(ValueError, match="strong_size"):
        CLSA.make_view_fn(32, MEAN, STD, crops="multi", strong_size=12)
    with pytest.raises(ValueError, match="crops"):
        CLSA.make_view_fn(32, MEAN, STD, crops="five")


def test_a_run_resolves_the_multi_crop_views_and_records_their_sides():
    import types

    from myol_keras import PretrainConfig
    from myol_keras.methods import inputs

    config = PretrainConfig(method="clsa", clsa_crops="multi", image_size=16)
    assert config.method_kwargs()["crops"] == "multi"
    plan = types.SimpleNamespace(image_size=16, stem="cifar", mean=MEAN, std=STD)
    inputs.resolve(config, plan)
    assert plan.method_inputs.view_options == {"crops": "multi", "stem": "cifar"}
    assert inputs.facts(plan) == {"clsa_crop_sizes": [16, 14, 11, 9, 9]}
    single = inputs.resolve(PretrainConfig(method="clsa", image_size=16), types.SimpleNamespace(**vars(plan)))
    assert single.method_inputs.view_options == {"crops": "single", "stem": "cifar", "strong_size": 9}


# --- the loss -------------------------------------------------------------------------------------


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy_terms(weak, strong, k, queue, t=0.2, t2=0.2):
    """The code's train loop over its two lists: CE of every weak query, DDM of every (weak, strong) pair, summed."""
    k, queue = _unit(k), _unit(queue)
    labels = np.arange(len(k))

    def logits(q, temperature):
        return np.concatenate([_unit(q) @ k.T, _unit(q) @ queue.T], axis=1) / temperature

    contrastive = sum(-_log_softmax(logits(q, t))[labels, labels].mean() for q in weak)
    ddm = sum(-(np.exp(_log_softmax(logits(q, t2))) * _log_softmax(logits(s, t2))).sum(axis=1).mean()
              for q in weak for s in strong)
    return contrastive, ddm


def test_the_summed_terms_are_five_infonce_and_twenty_five_ddm_terms():
    model = tiny_method(CLSA, queue_size=12, crops="multi")
    rng = np.random.default_rng(1)
    weak, strong = rng.normal(size=(5, 4, 16)), rng.normal(size=(5, 4, 16))
    k = rng.normal(size=(4, 16))
    f32 = [tf.constant(x, tf.float32) for x in (*weak, *strong)]
    contrastive, ddm = model._summed_terms(f32[:5], f32[5:], tf.constant(k, tf.float32))
    expected = _numpy_terms(weak, strong, k, model.queue.numpy())
    np.testing.assert_allclose([float(contrastive), float(ddm)], expected, rtol=1e-5)
    # strong queries equal to the weak one: each of the 25 DDM terms is the entropy of p_w
    contrastive, ddm = model._summed_terms([f32[0]] * 5, [f32[0]] * 5, tf.constant(k, tf.float32))
    p_log = _log_softmax(np.concatenate([_unit(weak[0]) @ _unit(k).T, _unit(weak[0]) @ model.queue.numpy().T], 1) / 0.2)
    entropy = -(np.exp(p_log) * p_log).sum(axis=1).mean()
    assert float(ddm) == pytest.approx(25 * entropy, rel=1e-5)
    assert float(contrastive) == pytest.approx(5 * -p_log[np.arange(4), np.arange(4)].mean(), rel=1e-5)


def _multi_views(batch=4, size=16):
    rng = np.random.default_rng(5)
    sides = multi_crop_sizes(size)  # 16, 14, 11, 9, 9
    return [tf.constant(rng.normal(size=(batch, s, s, 3)), tf.float32) for s in [size, size, *sides[1:], *sides]]


@pytest.mark.parametrize("symmetric", [False, True])
def test_the_models_loss_pairs_its_views_as_the_code_and_sums_the_terms(symmetric):
    model = tiny_method(CLSA, queue_size=12, crops="multi", symmetric=symmetric, alpha=0.5)
    assert model.num_views == 11
    views = _multi_views()
    targets = model.compute_targets(views)
    terms = model.compute_loss_terms(views, targets, SEED)
    # the online projections of each view alone (training-mode BN: batch statistics, so the same values again)
    z = [model.online_forward(v)[0].numpy() for v in views]
    weak, key_query, strong = [z[0], *z[2:6]], z[1], z[6:]
    queue = model.queue.numpy()
    contrastive, ddm = _numpy_terms(weak, strong, targets[0].numpy(), queue)
    if symmetric:  # the code's second loop: w1..w4 and the key view's query against k2 = keys of w0
        np.testing.assert_allclose(targets[1].numpy(), losses.l2_normalize(model.target_forward(views[0])).numpy(),
                                   atol=1e-6)
        more = _numpy_terms([*weak[1:], key_query], strong, targets[1].numpy(), queue)
        contrastive, ddm = contrastive + more[0], ddm + more[1]
    assert float(terms["contrastive_loss"]) == pytest.approx(contrastive, rel=1e-4)
    assert float(terms["ddm_loss"]) == pytest.approx(ddm, rel=1e-4)
    assert float(terms["loss"]) == pytest.approx(contrastive + 0.5 * ddm, rel=1e-4)


def test_multi_crop_config_round_trip_and_checks():
    model = tiny_method(CLSA, queue_size=12, crops="multi")
    config = model.get_config()
    assert config["crops"] == "multi" and config["strong_size"] == 0
    assert CLSA.from_config(config).num_views == 11 and tiny_method(CLSA, queue_size=12).num_views == 3
    with pytest.raises(ValueError, match="crops"):
        tiny_method(CLSA, crops="double")
    with pytest.raises(ValueError, match="strong_size"):
        tiny_method(CLSA, crops="multi", strong_size=12)


# --- the command line -------------------------------------------------------------------------------

TINY = ["--method=clsa", "--dataset=digits", "--width=4", "--image_size=16", "--batch_size=8", "--epochs=1",
        "--steps_per_epoch=2", "--projector_hidden_dim=16", "--projection_dim=8", "--precision=float32",
        "--verbose=0", "--monitor=none", "--clsa_queue_size=32"]


@pytest.mark.parametrize("argv, match", [
    (["--clsa_crops=five"], r"--clsa_crops=five: value should be one of <single\|multi>"),
    (["--clsa_crops=multi", "--clsa_strong_size=12"], r"--clsa_strong_size=12 sets the single-crop strong view"),
])
def test_bad_crops_settings_are_one_line_exit_2_and_write_nothing(argv, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main_in_process([*TINY, *argv], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1, err
    assert lines[0].startswith("myol_keras.main: error: ") and re.search(match, lines[0]), lines[0]
    assert sorted(os.listdir(tmp_path)) == []


def test_multi_crop_trains_through_fit():
    # 11 views of their own sides through `model.fit`; a Conv-BN-ReLU backbone of width 4 at 16 px keeps the
    # trace of the 11-view step short (a ResNet-18's takes ~20 s here; the CLI run was checked by hand).
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    model = CLSA(backbone, projector_hidden_dim=16, projection_dim=8, queue_size=32, crops="multi")
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    before = [v.numpy().copy() for v in model.optimized_variables]
    ds = tf.data.Dataset.from_tensors(tuple(_multi_views(batch=8))).repeat()
    history = model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0).history
    assert {"loss", "contrastive_loss", "ddm_loss"} <= set(history)
    assert np.isfinite(history["loss"][0]) and history["ddm_loss"][0] > 2 * history["contrastive_loss"][0]
    assert int(model.queue_pointer.numpy()) == 16  # the key batch enqueued once per step
    assert any(not np.allclose(a, v.numpy()) for a, v in zip(before, model.optimized_variables))
