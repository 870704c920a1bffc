"""BYOL and MYOL: the sanity checks of docs/METHODS.md §2.1-2.2 and the target-network
rules of docs/DECISIONS.md §4.3, on a tiny ResNet."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import random_views, tiny_method
from myol_keras import losses
from myol_keras.callbacks import EMATargetUpdate
from myol_keras.ema import ema_update
from myol_keras.methods import BYOL, MYOL, get_method


def _compiled(method_cls, **kwargs):
    model = tiny_method(method_cls, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    return model


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def _target_bn_stats(model):
    return [
        np.array(v.numpy())
        for v in model.target_backbone.non_trainable_variables + model.target_projector.non_trainable_variables
    ]


def test_registry():
    assert get_method("byol") is BYOL and get_method("myol") is MYOL
    with pytest.raises(ValueError, match="Choose one of: byol, ccsl, clsa, cssl, imix, moco, myol, repmix, simclr, suncet, tribyol, unmix"):
        get_method("simsiam")


def test_byol_zero_when_views_equal_and_predictor_is_identity():
    model = tiny_method(BYOL)
    model.predictor = keras.layers.Identity()  # target == online at construction
    x, _ = random_views()
    targets = model.compute_targets([x, x])
    terms = model.compute_loss_terms([x, x], targets, seed=losses.step_seed(0, 0))
    assert float(terms["loss"]) == pytest.approx(0.0, abs=1e-5)


def test_myol_lambda_one_regresses_view1_on_its_own_target():
    model = tiny_method(MYOL)
    x1, x2 = random_views()
    perm = tf.constant([3, 1, 0, 2, 7, 6, 5, 4])
    model.sample_mixing = lambda batch, seed: (tf.ones([batch]), perm)
    targets = model.compute_targets([x1, x2])
    terms = model.compute_loss_terms([x1, x2], targets, seed=losses.step_seed(0, 0))
    _, p1 = model.online_forward(x1)
    expected = tf.reduce_mean(losses.normalized_mse(p1, targets[0]))
    assert float(terms["mix_loss"]) == pytest.approx(float(expected), abs=1e-6)
    assert float(terms["loss"]) == pytest.approx(float(terms["byol_loss"] + terms["mix_loss"]), abs=1e-6)


def test_myol_lambda_zero_is_independent_of_the_permutation():
    model = tiny_method(MYOL)
    x1, x2 = random_views()
    targets = model.compute_targets([x1, x2])
    _, p2 = model.online_forward(x2)
    expected = float(tf.reduce_mean(losses.normalized_mse(p2, targets[1])))
    for perm in ([0, 1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, 0], [2, 0, 1, 5, 3, 4, 7, 6]):
        model.sample_mixing = lambda batch, seed, perm=perm: (tf.zeros([batch]), tf.constant(perm))
        terms = model.compute_loss_terms([x1, x2], targets, seed=losses.step_seed(0, 0))
        assert float(terms["mix_loss"]) == pytest.approx(expected, abs=1e-5)


def test_myol_gamma_weights_the_mix_term():
    model = tiny_method(MYOL, gamma=3.0)
    x1, x2 = random_views()
    terms = model.compute_loss_terms([x1, x2], model.compute_targets([x1, x2]), losses.step_seed(0, 5))
    assert float(terms["loss"]) == pytest.approx(float(terms["byol_loss"] + 3.0 * terms["mix_loss"]), abs=1e-5)
    assert 0.0 <= float(terms["loss"]) <= 8.0 + 3.0 * 4.0


def test_myol_mixing_is_per_sample_and_keyed_on_the_step():
    model = tiny_method(MYOL)
    lam, perm = model.sample_mixing(64, losses.step_seed(0, 10))
    lam2, perm2 = model.sample_mixing(64, losses.step_seed(0, 10))
    lam3, _ = model.sample_mixing(64, losses.step_seed(0, 11))
    assert len(np.unique(lam.numpy())) == 64  # per sample, no max(lam, 1 - lam)
    assert lam.numpy().min() < 0.5 < lam.numpy().max()
    np.testing.assert_array_equal(lam.numpy(), lam2.numpy())
    np.testing.assert_array_equal(perm.numpy(), perm2.numpy())
    assert not np.allclose(lam.numpy(), lam3.numpy())


@pytest.mark.parametrize("method_cls", [BYOL, MYOL])
def test_train_step_updates_online_not_target_params_but_target_bn_stats(method_cls):
    model = _compiled(method_cls, weight_decay=1e-4)
    online = _values(model.optimized_variables)
    target = _values([t for t, _ in model.ema_pairs])
    bn_stats = _target_bn_stats(model)
    logs = model.train_step(tuple(tf.constant(v) for v in random_views()))
    assert np.isfinite(float(logs["loss"]))
    assert set(logs) >= {"loss", "z_std", *method_cls.loss_term_names}
    assert any(not np.allclose(a, b) for a, b in zip(online, _values(model.optimized_variables)))
    for before, (t, _) in zip(target, model.ema_pairs):
        np.testing.assert_array_equal(before, t.numpy())
    assert any(not np.allclose(a, b) for a, b in zip(bn_stats, _target_bn_stats(model)))
    assert int(model.optimizer.iterations.numpy()) == 1


def test_no_target_variable_in_the_optimizer():
    model = _compiled(MYOL)
    model.train_step(tuple(tf.constant(v) for v in random_views()))
    optimized = {id(v) for v in model.optimizer._trainable_variables}
    target = {id(v) for v in model.target_backbone.variables + model.target_projector.variables}
    assert optimized == {id(v) for v in model.optimized_variables}
    assert not optimized & target
    # one momentum slot per optimized variable, none for the target
    assert len(model.optimizer.variables) == len(model.optimized_variables) + 2  # + iterations, learning_rate


def test_target_bn_uses_batch_statistics():
    model = tiny_method(BYOL)
    backbone = model.target_backbone
    bn = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    probe = keras.Model(backbone.inputs, bn.output)
    x = random_views()[0] * 3.0 + 5.0
    out = probe(x, training=True).numpy()
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    assert model.target_backbone.trainable  # trainable, so BN honours training=True


def test_coupled_weight_decay_adds_wd_times_w_to_the_gradient():
    # With lr=1, no momentum, the update difference between wd and no wd is exactly lr*wd*w.
    results = []
    for wd in (0.0, 0.5):
        keras.utils.set_random_seed(1)
        model = tiny_method(BYOL, weight_decay=wd)
        model.compile(optimizer=keras.optimizers.SGD(1.0))
        before = _values(model.optimized_variables)
        model.train_step(tuple(tf.constant(v) for v in random_views()))
        results.append((before, _values(model.optimized_variables)))
    (b0, a0), (b1, a1) = results
    for w0, w1, after0, after1 in zip(b0, b1, a0, a1):
        np.testing.assert_allclose(w0, w1)
        np.testing.assert_allclose(after0 - after1, 0.5 * w0, atol=1e-5)


def test_ema_update_constant_tau():
    target = keras.Variable(np.zeros(3, "float32"))
    online = keras.Variable(np.ones(3, "float32"))
    ema_update([(target, online)], 0.996)
    np.testing.assert_allclose(target.numpy(), 0.004, atol=1e-7)


def test_ema_callback_moves_target_towards_online():
    model = _compiled(BYOL)
    x = random_views(batch=8)
    ds = tf.data.Dataset.from_tensors(x).repeat(2)
    target_before = _values([t for t, _ in model.ema_pairs])
    online_before = _values([o for _, o in model.ema_pairs])
    np.testing.assert_allclose(target_before[0], online_before[0])
    callback = EMATargetUpdate(tau=0.5)
    model.fit(ds, epochs=1, verbose=0, callbacks=[callback])
    online_after = _values([o for _, o in model.ema_pairs])
    target_after = _values([t for t, _ in model.ema_pairs])
    # two steps: xi2 = 0.5 * (0.5 * xi0 + 0.5 * theta1) + 0.5 * theta2; check the weights moved
    assert any(not np.allclose(a, b) for a, b in zip(target_before, target_after))
    assert any(not np.allclose(a, b) for a, b in zip(target_after, online_after))


def test_ema_callback_reads_tau_from_iterations():
    model = _compiled(BYOL)
    callback = EMATargetUpdate(tau=0.99, schedule="cosine", total_steps=10)
    callback.set_model(model)
    model.optimizer.iterations.assign(6)  # the update after step 5 of 10
    assert callback.current_tau() == pytest.approx(1 - 0.01 * (np.cos(np.pi * 0.5) + 1) / 2)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["ema_tau"] == pytest.approx(0.995)


@pytest.mark.parametrize("method_cls", [BYOL, MYOL])
def test_get_config_round_trip(method_cls):
    model = tiny_method(method_cls, weight_decay=1e-4, seed=3)
    clone = method_cls.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.backbone.count_params() == model.backbone.count_params()


def test_configs_and_saved_models_with_the_retired_gemm_argument_still_load(tmp_path):
    # Until issue 25 every saved method config held `gemm_weight_gradient_side` (now a scoped
    # setting of myol_keras.conv, no constructor argument): such configs and files load, the key dropped.
    import json
    import zipfile

    model = tiny_method(MYOL, weight_decay=1e-4, seed=3)
    old_config = {**model.get_config(), "gemm_weight_gradient_side": 8}
    clone = MYOL.from_config(old_config)
    assert clone.get_config() == model.get_config() and "gemm_weight_gradient_side" not in clone.get_config()

    path = tmp_path / "myol.keras"
    model.save(path)
    old_path = tmp_path / "old.keras"
    with zipfile.ZipFile(path) as new, zipfile.ZipFile(old_path, "w") as old:
        for item in new.infolist():
            content = new.read(item.filename)
            if item.filename == "config.json":
                saved = json.loads(content)
                saved["config"]["gemm_weight_gradient_side"] = "auto"  # what older versions wrote
                content = json.dumps(saved).encode()
            old.writestr(item, content)
    loaded = keras.saving.load_model(old_path)
    assert type(loaded) is MYOL and loaded.alpha == model.alpha
    for mine, theirs in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_optimizer_state_restored_after_resume(tmp_path):
    x = random_views(batch=8)
    ds = tf.data.Dataset.from_tensors(x).repeat(3)
    backup = str(tmp_path / "backup")
    model = _compiled(MYOL)
    model.fit(ds, epochs=1, verbose=0, callbacks=[
        EMATargetUpdate(), keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)])
    saved_iterations = int(model.optimizer.iterations.numpy())
    saved_slots = _values(model.optimizer.variables)
    saved_target = _values([t for t, _ in model.ema_pairs])

    restored = _compiled(MYOL)
    restored.fit(ds, epochs=1, verbose=0, callbacks=[
        EMATargetUpdate(), keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)])
    assert saved_iterations == 3
    assert int(restored.optimizer.iterations.numpy()) == saved_iterations
    for a, b in zip(saved_slots, _values(restored.optimizer.variables)):
        np.testing.assert_allclose(a, b)
    for a, (t, _) in zip(saved_target, restored.ema_pairs):
        np.testing.assert_allclose(a, t.numpy())


def test_mixed_float16_step_on_cpu_is_finite():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = tiny_method(MYOL, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    logs = model.train_step(tuple(tf.constant(v) for v in random_views()))
    assert np.isfinite(float(logs["loss"]))
    assert model.optimized_variables[0].dtype == "float32"


def test_too_few_views_is_a_clear_error():
    model = _compiled(BYOL)
    with pytest.raises(ValueError, match="needs 2 views"):
        model.train_step((tf.constant(random_views()[0]),))
