"""Numeric checks of the loss and mixing primitives (docs/METHODS.md §0.2, §2.1, §2.2)."""

import numpy as np
import pytest
import tensorflow as tf

from myol_keras import losses


def test_normalized_mse_universal_checks():
    v = np.array([[0.3, -1.2, 2.0]], "float32")
    w = np.array([[1.5, 0.2, -0.7]], "float32")
    e1, e2 = np.array([[1.0, 0.0]], "float32"), np.array([[0.0, 1.0]], "float32")
    np.testing.assert_allclose(losses.normalized_mse(v, v), [0.0], atol=1e-6)
    np.testing.assert_allclose(losses.normalized_mse(v, -v), [4.0], atol=1e-6)
    np.testing.assert_allclose(losses.normalized_mse(e1, e2), [2.0], atol=1e-6)
    np.testing.assert_allclose(
        losses.normalized_mse(3.0 * v, 0.25 * w), losses.normalized_mse(v, w), atol=1e-6
    )
    # equals ||n(a) - n(b)||^2
    na, nb = v / np.linalg.norm(v), w / np.linalg.norm(w)
    np.testing.assert_allclose(losses.normalized_mse(v, w), [np.sum((na - nb) ** 2)], atol=1e-6)


def test_byol_loss_sums_both_directions():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(2, 5, 8)).astype("float32")
    # Perfect predictions give 0; exactly opposite predictions give 8 (the sum, not the mean).
    assert float(losses.byol_loss(z2, z1, z1, z2)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.byol_loss(-z2, -z1, z1, z2)) == pytest.approx(8.0, abs=1e-5)
    # Scaling a target by c > 0 changes nothing.
    p1, p2 = rng.normal(size=(2, 5, 8)).astype("float32")
    base = float(losses.byol_loss(p1, p2, z1, z2))
    assert float(losses.byol_loss(p1, p2, 7.0 * z1, 0.1 * z2)) == pytest.approx(base, abs=1e-6)


def test_myol_mixes_raw_projections_0_452085():
    p = np.array([[1.0, 1.0]], "float32")
    z1 = np.array([[1.0, 0.0]], "float32")
    z2 = np.array([[0.0, 10.0]], "float32")
    lam, perm = np.array([0.5], "float32"), np.array([0])
    mix = float(losses.myol_mix_loss(p, z1, z2, lam, perm))
    assert mix == pytest.approx(0.452085, abs=1e-6)
    # The two wrong alternatives give other numbers.
    normalise_then_mix = losses.normalized_mse(
        p, 0.5 * losses.l2_normalize(z1) + 0.5 * losses.l2_normalize(z2)
    )
    assert float(normalise_then_mix[0]) == pytest.approx(0.0, abs=1e-6)
    imix_style = 0.5 * losses.normalized_mse(p, z1) + 0.5 * losses.normalized_mse(p, z2)
    assert float(imix_style[0]) == pytest.approx(0.585786, abs=1e-6)


def test_mix_images_and_projections_use_the_permuted_partner():
    x1 = np.arange(4, dtype="float32").reshape(4, 1, 1, 1)
    x2 = 10 + np.arange(4, dtype="float32").reshape(4, 1, 1, 1)
    lam = np.array([1.0, 0.0, 0.5, 0.25], "float32")
    perm = np.array([3, 2, 1, 0])
    mixed = losses.mix_images(x1, x2, lam, perm).numpy().ravel()
    np.testing.assert_allclose(mixed, [0.0, 12.0, 0.5 * 2 + 0.5 * 11, 0.25 * 3 + 0.75 * 10])
    z = losses.mix_projections(x1.reshape(4, 1), x2.reshape(4, 1), lam, perm).numpy().ravel()
    np.testing.assert_allclose(z, mixed)


def test_beta_samples_are_per_sample_and_stateless():
    seed = losses.step_seed(7, tf.constant(3, tf.int64))
    lam = losses.sample_beta(seed, [20000], 2.0).numpy()
    assert lam.min() > 0.0 and lam.max() < 1.0
    assert lam.mean() == pytest.approx(0.5, abs=0.01)
    assert lam.var() == pytest.approx(1.0 / (4 * (2 * 2.0 + 1)), abs=0.003)  # Beta(2,2): 1/20
    assert len(np.unique(lam[:64])) == 64
    again = losses.sample_beta(losses.step_seed(7, tf.constant(3, tf.int64)), [20000], 2.0).numpy()
    np.testing.assert_array_equal(lam, again)
    other_step = losses.sample_beta(losses.step_seed(7, tf.constant(4, tf.int64)), [20000], 2.0).numpy()
    assert not np.allclose(lam, other_step)
    other_replica = losses.sample_beta(losses.step_seed(7, tf.constant(3, tf.int64), 1), [20000], 2.0)
    assert not np.allclose(lam, other_replica.numpy())


@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5, 2.5])
def test_beta_moments_for_integer_and_other_alphas(alpha):
    lam = losses.sample_beta(losses.step_seed(3, tf.constant(9, tf.int64)), [40000], alpha).numpy()
    assert lam.min() >= 0.0 and lam.max() <= 1.0
    assert lam.mean() == pytest.approx(0.5, abs=0.01)
    assert lam.var() == pytest.approx(1.0 / (4 * (2 * alpha + 1)), abs=0.004)


def test_beta_draw_compiles_with_xla_for_integer_alpha():
    draw = tf.function(lambda step: losses.sample_beta(losses.step_seed(0, step), [64], 2.0), jit_compile=True)
    lam = draw(tf.constant(5, tf.int64)).numpy()  # XLA may pick another stateless RNG algorithm than eager
    assert lam.shape == (64,) and lam.min() > 0.0 and lam.max() < 1.0 and len(np.unique(lam)) == 64
    np.testing.assert_array_equal(lam, draw(tf.constant(5, tf.int64)).numpy())


def test_permutation_is_a_permutation():
    perm = losses.sample_permutation(losses.step_seed(0, tf.constant(1)), 50).numpy()
    assert sorted(perm.tolist()) == list(range(50))
    assert not np.array_equal(perm, np.arange(50))


def test_embedding_std_collapse_monitor():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4096, 64)).astype("float32")
    assert float(losses.embedding_std(z)) == pytest.approx(1 / np.sqrt(64), rel=0.05)
    collapsed = np.tile(z[:1], (128, 1))
    assert float(losses.embedding_std(collapsed)) == pytest.approx(0.0, abs=1e-6)
