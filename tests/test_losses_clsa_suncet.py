"""Tests for CLSA's and SuNCEt's losses in `myol_keras.losses` (docs/METHODS.md §2.10, §2.11).

Closed forms from METHODS, and parity with the official PyTorch code on fixed
tensors: `tests/fixtures/clsa_suncet/*.npz` were written by
`benchmarks/clsa_suncet_reference.py` (official `facebookresearch/suncet`
`src/losses.py` imported as is; CLSA's loss lines transcribed there from
`model/CLSA.py` and `training/train.py`). Tolerance: float32 round-off,
`rtol=1e-5, atol=1e-6` for losses and `atol=1e-6` for gradients (largest
entries ~1e-1).
"""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from myol_keras import losses

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "clsa_suncet"


def _same_everywhere(rows, dim=8):
    return tf.tile(tf.one_hot([0], dim), [rows, 1])


@pytest.mark.parametrize("form,expected", [("code", 8.378391), ("paper", 8.318010)])
def test_ddm_all_logits_equal_is_log_columns(form, expected):
    # B = 256 queries, keys and K = 4096 queue rows all along e1: every logit is 1/T.
    q, queue = _same_everywhere(256), _same_everywhere(4096)
    loss = losses.ddm_loss(q, q, q, queue, temperature=0.2, form=form)
    # float32: the softmax weights of 4352 columns sum to 1 within ~1e-6 relative.
    np.testing.assert_allclose(float(loss), expected, rtol=2e-6)
    assert expected == pytest.approx(np.log(256 + 4096 if form == "code" else 4096 + 1), abs=1e-6)


def test_clsa_logits_shapes_and_labels():
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((2, 6, 8)).astype(np.float32)
    queue = rng.standard_normal((10, 8)).astype(np.float32)
    logits, labels = losses.clsa_logits(q, k, queue, form="code")
    assert logits.shape == (6, 16) and list(np.asarray(labels)) == list(range(6))
    logits, labels = losses.clsa_logits(q, k, queue, form="paper")
    assert logits.shape == (6, 11) and not np.any(np.asarray(labels))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    kn = k / np.linalg.norm(k, axis=1, keepdims=True)
    np.testing.assert_allclose(logits[:, 0], np.sum(qn * kn, axis=1) / 0.2, rtol=1e-5)
    np.testing.assert_allclose(logits[:, 1:], qn @ queue.T / 0.2, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="form"):
        losses.clsa_logits(q, k, queue, form="both")


def test_paper_form_contrastive_loss_is_moco_cross_entropy():
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((2, 5, 8)).astype(np.float32)
    queue = rng.standard_normal((12, 8)).astype(np.float32)
    queue /= np.linalg.norm(queue, axis=1, keepdims=True)
    logits = np.asarray(losses.clsa_logits(q, k, queue, form="paper")[0], np.float64)
    expected = np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[:, 0])
    np.testing.assert_allclose(float(losses.clsa_contrastive_loss(q, k, queue, form="paper")), expected, rtol=1e-5)


def test_ddm_is_at_least_weak_entropy_with_equality_iff_equal():
    rng = np.random.default_rng(2)
    weak = rng.standard_normal((16, 40)).astype(np.float32) * 3
    p = np.exp(weak - weak.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    entropy = -np.mean(np.sum(p * np.log(p), axis=1))
    np.testing.assert_allclose(float(losses.distribution_divergence(weak, weak)), entropy, rtol=1e-5)
    shifted = weak + rng.standard_normal((16, 1)).astype(np.float32)  # same softmax
    np.testing.assert_allclose(float(losses.distribution_divergence(weak, shifted)), entropy, rtol=1e-5)
    for _ in range(5):
        strong = weak + rng.standard_normal(weak.shape).astype(np.float32)
        assert float(losses.distribution_divergence(weak, strong)) > entropy + 1e-3


def test_ddm_gradient_reaches_only_the_strong_query():
    rng = np.random.default_rng(3)
    q_w, q_s, k = (tf.Variable(rng.standard_normal((4, 8)).astype(np.float32)) for _ in range(3))
    queue = tf.constant(rng.standard_normal((8, 8)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = losses.ddm_loss(q_w, q_s, k, queue)
    grad_w, grad_s, grad_k = tape.gradient(loss, [q_w, q_s, k])
    assert grad_w is None or not np.any(grad_w)
    assert np.any(grad_s)


def test_clsa_matches_official_code_losses_and_gradients():
    data = np.load(FIXTURES / "clsa_code_form.npz")
    q_w, q_s = tf.Variable(data["q_weak"]), tf.Variable(data["q_strong"])
    queue = data["queue_dim_by_k"].T  # the code stores [dim, K]
    with tf.GradientTape(persistent=True) as tape:
        loss_c = losses.clsa_contrastive_loss(q_w, data["k"], queue, temperature=0.2)
        loss_ddm = losses.ddm_loss(q_w, q_s, data["k"], queue, temperature=0.2)
        total = loss_c + 1.0 * loss_ddm
    np.testing.assert_allclose(float(loss_c), data["loss_contrastive"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(loss_ddm), data["loss_ddm"], rtol=1e-5, atol=1e-6)
    grad_w, grad_s = tape.gradient(total, [q_w, q_s])
    np.testing.assert_allclose(grad_w, data["grad_total_q_weak"], atol=1e-6)
    np.testing.assert_allclose(grad_s, data["grad_total_q_strong"], atol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss_ddm, q_s), data["grad_ddm_q_strong"], atol=1e-6)


@pytest.mark.parametrize("views,expected", [(1, 2.944439), (2, 2.564949)])
def test_suncet_identical_embeddings(views, expected):
    classes, per_class = 10, 2
    labels = np.tile(np.arange(classes), per_class * views)
    z = _same_everywhere(classes * per_class * views, dim=16)
    np.testing.assert_allclose(float(losses.suncet_loss(z, labels, 0.1)), expected, atol=1e-6)
    s_v = per_class * views
    assert expected == pytest.approx(-np.log((s_v - 1) / (classes * s_v - 1)), abs=1e-6)


@pytest.mark.parametrize(
    "name", ["suncet_views1_smoothing0.0", "suncet_views2_smoothing0.0", "suncet_views1_smoothing0.1"]
)
def test_suncet_matches_official_loss_and_gradient(name):
    data = np.load(FIXTURES / f"{name}.npz")
    z = tf.Variable(data["z"])
    with tf.GradientTape() as tape:
        loss = losses.suncet_loss(z, data["labels"], temperature=0.1)
    np.testing.assert_allclose(float(loss), data["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, z), data["grad_z"], atol=1e-6)
    if "smoothing0.0" in name:  # int class ids give the same as the one-hot matrix
        ids = np.argmax(data["labels"], axis=1)
        np.testing.assert_allclose(float(losses.suncet_loss(data["z"], ids)), data["loss"], rtol=1e-5)


def test_suncet_gradient_flows_through_the_other_rows():
    rng = np.random.default_rng(4)
    z = tf.Variable(rng.standard_normal((6, 8)).astype(np.float32))
    labels = np.array([0, 1, 2, 0, 1, 2])
    with tf.GradientTape() as tape:
        full = losses.suncet_loss(z, labels)
    with tf.GradientTape() as tape_detached:  # anchors only: what a detached gather would give
        zn = losses.l2_normalize(z)
        others = tf.stop_gradient(zn)
        exp = tf.exp(zn @ tf.transpose(others) / 0.1) * (1 - tf.eye(6))
        probs = (exp / tf.reduce_sum(exp, 1, keepdims=True)) @ tf.one_hot(labels, 3)
        detached = -tf.reduce_mean(tf.reduce_sum(tf.one_hot(labels, 3) * tf.math.log(probs), 1))
    np.testing.assert_allclose(float(full), float(detached), rtol=1e-6)
    assert not np.allclose(tape.gradient(full, z), tape_detached.gradient(detached, z), atol=1e-4)


def test_suncet_per_replica_anchors_against_the_gathered_rows_average_to_the_whole_batch_loss():
    # Two "ranks" of 6 rows each: anchors of rank r vs all 12 rows, row r*6 + i excluded (the code's diag_mask).
    rng = np.random.default_rng(7)
    z = rng.standard_normal((12, 8)).astype(np.float32)
    targets = np.tile(np.eye(3, dtype=np.float32), (4, 1))
    ranks = [float(losses.suncet_loss(z[r * 6:(r + 1) * 6], targets[r * 6:(r + 1) * 6], 0.1, z, targets, r * 6))
             for r in range(2)]
    assert abs(ranks[0] - ranks[1]) > 1e-3
    assert np.mean(ranks) == pytest.approx(float(losses.suncet_loss(z, targets, 0.1)), rel=1e-6)
    wrong_row = float(losses.suncet_loss(z[6:], targets[6:], 0.1, z, targets, 0))  # excludes another image
    assert wrong_row != pytest.approx(ranks[1], rel=1e-3)
    ids = np.argmax(targets, 1)  # int class ids give the same
    assert float(losses.suncet_loss(z[6:], ids[6:], 0.1, z, ids, 6)) == pytest.approx(ranks[1], rel=1e-6)
