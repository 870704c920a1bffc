"""Closed-form and NumPy checks of the method-family maths (docs/METHODS.md §1.7, §2.3-2.9)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from myol_keras import losses


def _unit(rows):
    rows = np.asarray(rows, "float64")
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# --- Un-Mix (§1.7, §2.3) ---------------------------------------------------------


def test_reverse_twice_is_identity():
    x = tf.random.normal([5, 4, 4, 3])
    np.testing.assert_array_equal(losses.reverse_batch(losses.reverse_batch(x)).numpy(), x.numpy())
    np.testing.assert_array_equal(losses.reverse_batch(x).numpy()[0], x.numpy()[4])


@pytest.mark.parametrize(
    "lam,cx,cy,size", [(0.3, 5, 7, 16), (0.75, 0, 0, 16), (0.1, 15, 2, 16), (0.5, 3, 3, 8), (0.0, 4, 4, 8)]
)
def test_cutmix_box_matches_rand_bbox_and_lambda_is_one_minus_copied_fraction(lam, cx, cy, size):
    mask, lam_box = losses.cutmix_box(lam, cx, cy, size, size)
    # NumPy rand_bbox of the Un-Mix / MYOL code with the centre given
    r = np.sqrt(1.0 - lam)
    cw = int(size * r)
    ch = int(size * r)
    x0, x1 = np.clip(cx - cw // 2, 0, size), np.clip(cx + cw // 2, 0, size)
    y0, y1 = np.clip(cy - ch // 2, 0, size), np.clip(cy + ch // 2, 0, size)
    expected = np.zeros((size, size), "float32")
    expected[y0:y1, x0:x1] = 1.0
    np.testing.assert_array_equal(mask.numpy(), expected)
    assert float(lam_box) == pytest.approx(1.0 - expected.mean(), abs=1e-7)

    x = tf.random.normal([4, size, size, 3], seed=1)
    mixed, lam_eff = losses.unmix_images(x, tf.constant(False), lam, cx, cy)
    copied = np.any(mixed.numpy() != x.numpy(), axis=(0, 3))
    reversed_differs = np.any(losses.reverse_batch(x).numpy() != x.numpy(), axis=(0, 3))
    assert copied.sum() == (expected * reversed_differs).sum()
    assert float(lam_eff) == pytest.approx(1.0 - copied.mean(), abs=1e-7)


def test_unmix_lambda_one_leaves_images_unchanged_for_mixup_and_cutmix():
    x = tf.random.normal([6, 8, 8, 3], seed=2)
    for use_mixup in (True, False):
        mixed, lam = losses.unmix_images(x, tf.constant(use_mixup), 1.0, 3, 4)
        np.testing.assert_array_equal(mixed.numpy(), x.numpy())
        assert float(lam) == 1.0


def test_unmix_global_mixup_at_half_is_palindromic():
    x = tf.random.normal([6, 8, 8, 3], seed=3)
    mixed, lam = losses.unmix_images(x, tf.constant(True), 0.5, 0, 0)
    np.testing.assert_array_equal(losses.reverse_batch(mixed).numpy(), mixed.numpy())
    assert float(lam) == 0.5


def test_sample_unmix_is_per_batch_and_keyed_on_the_seed():
    draws = [losses.sample_unmix(losses.step_seed(0, s), 32, 32) for s in range(200)]
    lams = np.array([float(d[1]) for d in draws])
    mixups = np.array([bool(d[0]) for d in draws])
    assert 0.0 <= lams.min() and lams.max() <= 1.0 and lams.min() < 0.2 and lams.max() > 0.8  # no max()
    assert 0.35 < mixups.mean() < 0.65
    assert all(0 <= int(d[2]) < 32 and 0 <= int(d[3]) < 32 for d in draws)
    again = losses.sample_unmix(losses.step_seed(0, 7), 32, 32)
    assert float(again[1]) == lams[7]


# --- i-Mix (§2.4) -------------------------------------------------------------------


def test_imix_lambda_is_at_least_half():
    lam = losses.imix_lambda(losses.sample_beta(losses.step_seed(0, 1), [1000], 1.0)).numpy()
    assert lam.min() >= 0.5 and lam.max() <= 1.0


def test_imix_loss_is_linear_in_the_per_target_losses():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    lam = rng.uniform(0.5, 1.0, size=6)
    perm = rng.permutation(6)
    qn, kn = _unit(q), _unit(k)
    ell = lambda a, b: 2 - 2 * np.sum(a * b, axis=1)  # noqa: E731
    expected = np.mean(lam * ell(qn, kn) + (1 - lam) * ell(qn, kn[perm]))
    got = losses.imix_byol_loss(q.astype("float32"), k.astype("float32"), lam.astype("float32"), perm)
    assert float(got) == pytest.approx(expected, abs=1e-6)
    # lam = 1: the one-directional BYOL loss; pi = identity: independent of lam
    one = losses.imix_byol_loss(q.astype("float32"), k.astype("float32"), np.ones(6, "float32"), perm)
    assert float(one) == pytest.approx(np.mean(ell(qn, kn)), abs=1e-6)
    ident = [float(losses.imix_byol_loss(q.astype("float32"), k.astype("float32"), np.full(6, v, "float32"), np.arange(6)))
             for v in (0.5, 0.7, 1.0)]
    assert max(ident) - min(ident) < 1e-6


# --- TriBYOL (§2.5) -------------------------------------------------------------------


def test_tribyol_loss_equals_byol_when_x3_is_x2_and_targets_agree():
    rng = np.random.default_rng(1)
    p1, p2, z1, z2 = (rng.normal(size=(4, 8)).astype("float32") for _ in range(4))
    tri = losses.tribyol_loss(p1, p2, p2, z1, z2, z1, z2)
    assert float(tri) == pytest.approx(float(losses.byol_loss(p1, p2, z1, z2)), abs=1e-6)
    assert 0.0 <= float(losses.tribyol_loss(p1, p2, -p1, -z2, -z1, z1, z1)) <= 8.0


# --- Representation mixing (§2.6) ---------------------------------------------------------


@pytest.mark.parametrize("reduction", ["log_mean", "mean_log"])
@pytest.mark.parametrize("rows", [4, 8])
def test_repmix_identical_rows_give_log_of_rows_minus_one(reduction, rows):
    m = np.tile([[0.3, -1.0, 2.0]], (rows, 1)).astype("float32")
    assert float(losses.repmix_xent_loss(m, 0.5, reduction)) == pytest.approx(math.log(rows - 1), abs=1e-6)


def test_repmix_aligned_pairs_orthogonal_across_pairs():
    m = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]], "float32")
    expected = math.log(1 + 2 * math.exp(-2))
    assert expected == pytest.approx(0.239545, abs=1e-6)
    for reduction in ("log_mean", "mean_log"):
        assert float(losses.repmix_xent_loss(m, 0.5, reduction)) == pytest.approx(expected, abs=1e-6)


def test_repmix_reference_rows_log_mean_vs_mean_log():
    m = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.6, 0.8]], "float32")
    log_mean = float(losses.repmix_xent_loss(m, 0.5, "log_mean"))
    mean_log = float(losses.repmix_xent_loss(m, 0.5, "mean_log"))
    assert log_mean == pytest.approx(0.622062, abs=1e-6)
    assert mean_log == pytest.approx(0.639934, abs=1e-6)
    assert log_mean <= mean_log  # Jensen
    with pytest.raises(ValueError, match="reduction"):
        losses.repmix_xent_loss(m, 0.5, "sum")


def test_interleave():
    a, b = np.array([[0], [2]]), np.array([[1], [3]])
    np.testing.assert_array_equal(losses.interleave(a, b).numpy().ravel(), [0, 1, 2, 3])


# --- SimCLR (§2.8) and MoCo (§2.9) -----------------------------------------------------------


def test_simclr_identical_embeddings_give_log_2b_minus_1():
    z = np.ones((8, 16), "float32")  # B = 4 -> 2B = 8 rows
    assert float(losses.simclr_loss(z, 0.07)) == pytest.approx(math.log(7), abs=1e-5)
    assert math.log(7) == pytest.approx(1.945910, abs=1e-6)


def test_simclr_matches_numpy_nt_xent():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(6, 5))
    zn = _unit(z)
    s = zn @ zn.T / 0.5
    np.fill_diagonal(s, -np.inf)
    pos = [(i + 3) % 6 for i in range(6)]
    expected = np.mean([-s[i, pos[i]] + np.log(np.sum(np.exp(s[i][np.isfinite(s[i])]))) for i in range(6)])
    assert float(losses.simclr_loss(z.astype("float32"), 0.5)) == pytest.approx(expected, abs=1e-5)


def test_moco_loss_with_orthogonal_queue():
    d, size = 128, 4096
    q = np.zeros((4, d), "float32")
    q[:, 0] = 1.0
    queue = np.zeros((size, d), "float32")
    queue[np.arange(size), 1 + np.arange(size) % (d - 1)] = 1.0  # unit keys orthogonal to q
    got = float(losses.moco_loss(q, q, queue, 0.07))
    expected = math.log(1 + size * math.exp(-1 / 0.07))
    assert expected == pytest.approx(0.0025562, abs=1e-7)
    assert got == pytest.approx(expected, abs=1e-6)


def test_enqueue_is_fifo_and_wraps():
    queue = tf.zeros([6, 2])
    keys = tf.constant([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    q1, p1 = losses.enqueue(queue, keys, 0)
    assert int(p1) == 4
    np.testing.assert_array_equal(q1.numpy()[:, 0], [1, 2, 3, 4, 0, 0])
    q2, p2 = losses.enqueue(q1, keys * 10, p1)
    assert int(p2) == 2
    np.testing.assert_array_equal(q2.numpy()[:, 0], [30, 40, 3, 4, 10, 20])


# --- CCSL / CSSL [RECON] (§2.7) ----------------------------------------------------------------


def test_pseudo_pairs_exclude_the_diagonal_and_follow_thresholds():
    z1 = np.array([[1, 0], [0.9, 0.1], [-1, 0]], "float32")
    pos, neg = losses.pseudo_pair_masks(z1, z1, 0.8, 0.2)
    np.testing.assert_array_equal(pos.numpy(), [[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(neg.numpy(), [[0, 0, 1], [0, 0, 1], [1, 1, 0]])
    pos, neg = losses.pseudo_pair_masks(z1, z1, 1.01, -1.01)
    assert float(tf.reduce_sum(pos)) == 0 and float(tf.reduce_sum(neg)) == 0


def test_ccsl_terms_and_empty_sets_are_zero():
    p = np.array([[1, 0], [0, 1]], "float32")
    z = np.array([[1, 0], [1, 0]], "float32")
    positive = np.array([[0, 1], [0, 0]], "float32")  # (0, 1): cos = 1 -> l = 0
    negative = np.array([[0, 0], [1, 0]], "float32")  # (1, 0): cos = 0 -> hinge 0
    pos, neg = losses.ccsl_terms(p, z, positive, negative)
    assert float(pos) == pytest.approx(0.0, abs=1e-6) and float(neg) == pytest.approx(0.0, abs=1e-6)
    pos, neg = losses.ccsl_terms(p, -z, negative, positive)  # (1, 0): cos 0 -> l = 2; (0, 1): cos -1 -> 0
    assert float(pos) == pytest.approx(2.0, abs=1e-6) and float(neg) == 0.0
    zero = np.zeros((2, 2), "float32")
    assert [float(v) for v in losses.ccsl_terms(p, z, zero, zero)] == [0.0, 0.0]


def test_cssl_bce_never_below_minus_log_sigmoid_one():
    bound = -math.log(1 / (1 + math.exp(-1)))
    assert bound == pytest.approx(0.313262, abs=1e-6)
    p = np.array([[1, 0], [0, 1]], "float32")
    ones = np.ones((2, 2), "float32")
    best_pos, _ = losses.cssl_terms(p, p, np.eye(2, dtype="float32"), 0 * ones, 1.0)  # cos = 1
    _, best_neg = losses.cssl_terms(p, -p, 0 * ones, np.eye(2, dtype="float32"), 1.0)  # cos = -1
    assert float(best_pos) == pytest.approx(bound, abs=1e-6)
    assert float(best_neg) == pytest.approx(bound, abs=1e-6)
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 4)).astype("float32")
    pos, neg = losses.cssl_terms(a, b, ones[:1, :1] * np.ones((8, 8), "float32"), np.ones((8, 8), "float32"), 1.0)
    assert float(pos) >= bound and float(neg) >= bound
