"""Loss functions and mixing primitives shared by the BYOL family.

Everything here is a pure function of its inputs (no layers, no state), so it
can be tested against the closed forms of `docs/METHODS.md` and reused by every
method. Randomness is *stateless*: a method derives a seed from
(`seed`, `optimizer.iterations`, replica id) and passes it in, so a resumed or
distributed run draws exactly what it would have drawn (docs/DECISIONS.md §4.5, §4.11).
"""

import keras
import numpy as np
import tensorflow as tf

L2_EPSILON = 1e-12  # torch.nn.functional.normalize default


def l2_normalize(x, axis=-1, epsilon=L2_EPSILON):
    """Row-wise `x / max(||x||, epsilon)` in float32 (torch `F.normalize`)."""
    x = tf.cast(x, tf.float32)
    norm = tf.norm(x, axis=axis, keepdims=True)
    return x / tf.maximum(norm, epsilon)


def normalized_mse(predictions, targets):
    """Per-sample BYOL regression loss `2 - 2 <n(p), n(z)>`, in [0, 4].

    Args:
        predictions: `[B, d]` online predictions.
        targets: `[B, d]` target projections (stop-gradient is the caller's).

    Returns:
        A float32 `[B]` tensor.

    Example:
    >>> float(normalized_mse([[1.0, 0.0]], [[-2.0, 0.0]])[0])
    4.0
    """
    p = l2_normalize(predictions)
    z = l2_normalize(targets)
    return 2.0 - 2.0 * tf.reduce_sum(p * z, axis=-1)


def byol_loss(p1, p2, z1, z2):
    """Symmetrised BYOL loss `mean_i [l(p1_i, z2_i) + l(p2_i, z1_i)]`, in [0, 8].

    The two directions are summed, not averaged, as in the MYOL reference
    code (docs/METHODS.md §2.1).
    """
    return tf.reduce_mean(normalized_mse(p1, z2) + normalized_mse(p2, z1))


def step_seed(seed, step, replica_id=0):
    """A stateless `[2]` int64 seed for one training step.

    Args:
        seed: the run's integer seed.
        step: the global step (`optimizer.iterations`), a scalar tensor.
        replica_id: folded in so replicas draw different mixing values.
    """
    base = tf.stack(
        [tf.cast(seed, tf.int64), tf.cast(step, tf.int64)], axis=0
    )
    return tf.random.experimental.stateless_fold_in(
        base, tf.cast(replica_id, tf.int64)
    )


def split_seed(seed, num):
    """`num` independent stateless seeds derived from `seed`."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


def _sample_gamma(seed, shape, alpha):
    """Gamma(alpha, 1) draws; exact and XLA-compilable for integer alpha.

    For an integer `alpha = k` (MYOL's 2, i-Mix's 1) Gamma(k) is the sum of k
    unit exponentials, `-sum log U_i`, built from uniform draws that XLA can
    compile (`tf.random.stateless_gamma` has no XLA CPU kernel, so
    `--jit_compile` failed for MYOL). Other alphas use `stateless_gamma`.
    """
    if float(alpha).is_integer() and 1 <= alpha <= 16:
        k = int(alpha)
        uniform = tf.random.stateless_uniform(
            [k, *shape], seed, minval=float(np.finfo(np.float32).tiny), maxval=1.0, dtype=tf.float32
        )
        return -tf.reduce_sum(tf.math.log(uniform), axis=0)
    return tf.random.stateless_gamma(shape, seed, alpha=alpha, dtype=tf.float32)


def sample_beta(seed, shape, alpha):
    """Beta(alpha, alpha) samples as `g1 / (g1 + g2)` of two Gamma draws."""
    seed_a, seed_b = split_seed(seed, 2)
    g1 = _sample_gamma(seed_a, shape, alpha)
    g2 = _sample_gamma(seed_b, shape, alpha)
    return g1 / (g1 + g2)


def sample_permutation(seed, n):
    """A uniformly random permutation of `range(n)` (int32 `[n]`)."""
    keys = tf.random.stateless_uniform([n], seed, dtype=tf.float32)
    return tf.argsort(keys, stable=True)


def mix_images(x1, x2, lam, permutation):
    """Per-sample mixup `lam_i * x1_i + (1 - lam_i) * x2_{pi(i)}`.

    Args:
        x1: `[B, H, W, C]` images (view 1).
        x2: `[B, H, W, C]` images (view 2, or view 1 again for i-Mix).
        lam: `[B]` mixing coefficients.
        permutation: `[B]` partner indices `pi`.
    """
    lam = tf.cast(tf.reshape(lam, [-1, 1, 1, 1]), x1.dtype)
    return lam * x1 + (1.0 - lam) * tf.gather(x2, permutation)


def mix_projections(z1, z2, lam, permutation):
    """MYOL's regression target `lam_i * z1_i + (1 - lam_i) * z2_{pi(i)}`.

    Mixes the *raw* (un-normalised) target projections; `normalized_mse`
    normalises the mixture afterwards (docs/METHODS.md §2.2, the 0.452085 check).
    """
    z1 = tf.cast(z1, tf.float32)
    z2 = tf.cast(z2, tf.float32)
    lam = tf.reshape(tf.cast(lam, tf.float32), [-1, 1])
    return lam * z1 + (1.0 - lam) * tf.gather(z2, permutation)


def myol_mix_loss(p_mixed, z1, z2, lam, permutation):
    """`mean_i l(p~_i, lam_i z'1_i + (1 - lam_i) z'2_{pi(i)})` (docs/METHODS.md §2.2)."""
    targets = mix_projections(z1, z2, lam, permutation)
    return tf.reduce_mean(normalized_mse(p_mixed, targets))


def embedding_std(z):
    """Collapse monitor: mean per-dimension std of `n(z)` over the batch.

    About `1/sqrt(d)` for well-spread embeddings, 0 when collapsed.
    """
    return tf.reduce_mean(tf.math.reduce_std(l2_normalize(z), axis=0))


# ---------------------------------------------------------------------------
# The method family (docs/METHODS.md §1.7, §2.3-2.9): Un-Mix, i-Mix, TriBYOL,
# representation mixing, CCSL/CSSL (reconstruction), SimCLR, MoCo.
# ---------------------------------------------------------------------------


def reverse_batch(x):
    """Batch reversal `R(x)_i = x_{B-1-i}` (Un-Mix's partner; docs/METHODS.md §0.1)."""
    return tf.reverse(x, axis=[0])


def cutmix_box(lam, center_x, center_y, height, width):
    """`rand_bbox` of the Un-Mix/MYOL code as an iota-grid mask (docs/METHODS.md §1.7).

    `r = sqrt(1 - lam)`, `cw = floor(W r)`, `ch = floor(H r)`; the box is
    `[cx - cw//2, cx + cw//2) x [cy - ch//2, cy + ch//2)` clipped to the image.

    Args:
        lam: scalar mixing coefficient in [0, 1].
        center_x, center_y: integer box centre (uniform on pixels in the code).
        height, width: image size.

    Returns:
        `(mask, lam_box)`: a float32 `[H, W]` mask, 1 inside the box (the
        region pasted from the partner), and `1 - area(box) / (H W)`, the
        recomputed coefficient.
    """
    lam = tf.cast(lam, tf.float32)
    ratio = tf.sqrt(1.0 - lam)
    cut_w = tf.cast(tf.floor(tf.cast(width, tf.float32) * ratio), tf.int32)
    cut_h = tf.cast(tf.floor(tf.cast(height, tf.float32) * ratio), tf.int32)
    center_x = tf.cast(center_x, tf.int32)
    center_y = tf.cast(center_y, tf.int32)
    x0 = tf.clip_by_value(center_x - cut_w // 2, 0, width)
    x1 = tf.clip_by_value(center_x + cut_w // 2, 0, width)
    y0 = tf.clip_by_value(center_y - cut_h // 2, 0, height)
    y1 = tf.clip_by_value(center_y + cut_h // 2, 0, height)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    mask = tf.cast(inside, tf.float32)
    area = tf.cast((x1 - x0) * (y1 - y0), tf.float32)
    lam_box = 1.0 - area / tf.cast(height * width, tf.float32)
    return mask, lam_box


def sample_unmix(seed, height, width, mix_prob=0.5):
    """Un-Mix's per-batch draws: `(use_mixup, lam, center_x, center_y)`.

    `lam ~ Beta(1, 1) = U(0, 1)` (one scalar, no max), mixup when
    `r ~ U(0, 1)` is below `mix_prob`, else CutMix with a centre uniform on
    integer pixels.
    """
    seeds = split_seed(seed, 4)
    r = tf.random.stateless_uniform([], seeds[0])
    lam = tf.random.stateless_uniform([], seeds[1])
    cx = tf.random.stateless_uniform([], seeds[2], minval=0, maxval=width, dtype=tf.int32)
    cy = tf.random.stateless_uniform([], seeds[3], minval=0, maxval=height, dtype=tf.int32)
    return r < mix_prob, lam, cx, cy


def unmix_images(x, use_mixup, lam, center_x, center_y):
    """Un-Mix's mixture of `x` with `R(x)` (docs/METHODS.md §2.3a step 2).

    Mixup: `lam x + (1 - lam) R(x)`. CutMix: `x` with the box pasted from
    `R(x)`, and `lam` recomputed from the box. Both are written as one
    per-pixel weight map `w` with `x~ = w x + (1 - w) R(x)`.

    Returns:
        `(x_mixed, lam_effective)`.
    """
    shape = tf.shape(x)
    mask, lam_box = cutmix_box(lam, center_x, center_y, shape[1], shape[2])
    lam = tf.cast(lam, tf.float32)
    weight = tf.where(use_mixup, tf.fill(tf.shape(mask), lam), 1.0 - mask)
    lam_effective = tf.where(use_mixup, lam, lam_box)
    weight = tf.cast(weight[None, :, :, None], x.dtype)
    return weight * x + (1.0 - weight) * reverse_batch(x), lam_effective


def unmix_loss(p_mixed, p_mixed_reversed, z_target, lam):
    """`lam mean_i l(p~_i, z_i) + (1 - lam) mean_i l(p~R_i, z_i)` (docs/METHODS.md §2.3a)."""
    lam = tf.cast(lam, tf.float32)
    return lam * tf.reduce_mean(normalized_mse(p_mixed, z_target)) + (1.0 - lam) * tf.reduce_mean(
        normalized_mse(p_mixed_reversed, z_target)
    )


def imix_lambda(lam):
    """i-Mix's `max(lam, 1 - lam)`, so every coefficient is in [0.5, 1]."""
    return tf.maximum(lam, 1.0 - lam)


def imix_byol_loss(q, k, lam, permutation):
    """i-Mix, BYOL form: `mean_i [lam_i l(q_i, k_i) + (1 - lam_i) l(q_i, k_{pi(i)})]`.

    Written through the cosine matrix `S = n(q) n(k)^T` as in the reference
    (docs/METHODS.md §2.4a); one direction, no plain BYOL term.
    """
    s = tf.matmul(l2_normalize(q), l2_normalize(k), transpose_b=True)
    lam = tf.cast(lam, tf.float32)
    diag = tf.linalg.diag_part(s)
    mixed = tf.gather(s, permutation, axis=1, batch_dims=1)
    return tf.reduce_mean(2.0 - 2.0 * (lam * diag + (1.0 - lam) * mixed))


def tribyol_loss(p1, p2, p3, za1, za2, zb1, zb3):
    """TriBYOL (MYOL `algo.py: TRIBYOL`; docs/METHODS.md §2.5), in [0, 8].

    `mean_i [(l(p1, zA2) + l(p2, zA1)) / 2 + (l(p1, zB3) + l(p3, zB1)) / 2]`.
    """
    a = normalized_mse(p1, za2) + normalized_mse(p2, za1)
    b = normalized_mse(p1, zb3) + normalized_mse(p3, zb1)
    return tf.reduce_mean(0.5 * a + 0.5 * b)


def interleave(a, b):
    """`[a_0, b_0, a_1, b_1, ...]` along the batch axis."""
    stacked = tf.stack([a, b], axis=1)
    shape = tf.shape(a)
    return tf.reshape(stacked, tf.concat([[2 * shape[0]], shape[1:]], axis=0))


def repmix_xent_loss(m, temperature=0.5, reduction="log_mean"):
    """Representation mixing's `xent_loss` over interleaved pairs (docs/METHODS.md §2.6).

    Rows `(2b, 2b+1)` are positives; every other row is a negative.
    `rho_j = exp(s_{P(j), j} / t) / sum_{k != j} exp(s_{kj} / t)` with cosine
    similarities `s`; the self term is masked out (not subtracted as
    `exp(1/t)`).

    Args:
        m: `[2N, d]` summed projections, pairs interleaved.
        temperature: `t` (0.5 in the reference).
        reduction: `"log_mean"`, the official `-log(mean_j rho_j)`, or
            `"mean_log"`, the standard NT-Xent `mean_j(-log rho_j)`. By
            Jensen, log_mean <= mean_log.
    """
    if reduction not in ("log_mean", "mean_log"):
        raise ValueError(
            f"Expected `reduction` in ('log_mean', 'mean_log'). Received: reduction={reduction!r}"
        )
    z = l2_normalize(m)
    n = tf.shape(z)[0]
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    eye = tf.eye(n, dtype=tf.bool)
    denominator = tf.reduce_logsumexp(tf.where(eye, tf.constant(-1e9, tf.float32), logits), axis=0)
    index = tf.range(n)
    partner = tf.bitwise.bitwise_xor(index, 1)  # 2b <-> 2b+1
    positive = tf.gather_nd(logits, tf.stack([partner, index], axis=1))
    log_rho = positive - denominator
    if reduction == "mean_log":
        return -tf.reduce_mean(log_rho)
    return -(tf.reduce_logsumexp(log_rho) - tf.math.log(tf.cast(n, tf.float32)))


def simclr_loss(z, temperature=0.07):
    """NT-Xent of the MYOL-repo SimCLR (docs/METHODS.md §2.8).

    `z` is `[2B, d]` = projections of `[x1; x2]`; row `i` is positive with
    row `(i + B) mod 2B`, the other `2B - 2` rows are negatives, the self
    similarity is excluded; cross-entropy averaged over the `2B` anchors.
    All-identical embeddings give `log(2B - 1)`.
    """
    z = l2_normalize(z)
    n = tf.shape(z)[0]
    half = n // 2
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    logits = tf.where(tf.eye(n, dtype=tf.bool), tf.constant(-1e9, tf.float32), logits)
    index = tf.range(n)
    positive_index = tf.math.floormod(index + half, n)
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positive_index, logits=logits)
    )


def moco_logits(q, k, queue, temperature=0.07):
    """`[q.k, q Q^T] / t` for normalised `q`, `k` `[B, d]` and a `[K, d]` queue."""
    q = l2_normalize(q)
    k = l2_normalize(k)
    positive = tf.reduce_sum(q * k, axis=-1, keepdims=True)
    negative = tf.matmul(q, tf.cast(queue, tf.float32), transpose_b=True)
    return tf.concat([positive, negative], axis=1) / temperature


def moco_loss(q, k, queue, temperature=0.07):
    """MoCo InfoNCE: cross-entropy with label 0 over `[q.k, q Q^T] / t` (docs/METHODS.md §2.9)."""
    logits = moco_logits(q, k, queue, temperature)
    # CE with label 0 = log(1 + sum_j e^{l_j - l_0}) = softplus(logsumexp_j(l_j - l_0)):
    # the same value, but the K tiny negative terms are summed among themselves
    # before meeting the 1, so float32 keeps the closed form 0.0025562 to 1e-7
    # (the fused cross-entropy is off by 4e-6).
    negatives = logits[:, 1:] - logits[:, :1]
    return tf.reduce_mean(tf.nn.softplus(tf.reduce_logsumexp(negatives, axis=1)))


def enqueue(queue, keys, pointer):
    """FIFO: write `keys` `[B, d]` into `queue` `[K, d]` from row `pointer`, wrapping.

    Returns `(new_queue, new_pointer)`; with `K mod B = 0` (the reference's
    drop_last requirement) it never wraps inside one batch.
    """
    size = tf.shape(queue)[0]
    batch = tf.shape(keys)[0]
    rows = tf.math.floormod(tf.cast(pointer, tf.int32) + tf.range(batch), size)
    updated = tf.tensor_scatter_nd_update(queue, rows[:, None], tf.cast(keys, queue.dtype))
    return updated, tf.math.floormod(tf.cast(pointer, tf.int32) + batch, size)


def cosine_matrix(a, b):
    """`[B, B]` cosine similarities `cos(a_i, b_j)` in float32."""
    return tf.matmul(l2_normalize(a), l2_normalize(b), transpose_b=True)


def pseudo_pair_masks(z1, z2, theta_pos=0.8, theta_neg=0.2):
    """[RECON] CCSL/CSSL pseudo-labels from `c_ij = cos(z'1_i, z'2_j)` (docs/METHODS.md §2.7).

    Returns float32 `(positive, negative)` `[B, B]` masks: `i != j` and
    `c_ij > theta_pos`, resp. `i != j` and `c_ij < theta_neg`. The diagonal
    (the BYOL pair itself) is in neither set.
    """
    c = tf.stop_gradient(cosine_matrix(z1, z2))
    off_diagonal = tf.logical_not(tf.eye(tf.shape(c)[0], dtype=tf.bool))
    positive = tf.cast((c > theta_pos) & off_diagonal, tf.float32)
    negative = tf.cast((c < theta_neg) & off_diagonal, tf.float32)
    return positive, negative


def _masked_mean(values, mask):
    """Mean of `values` over `mask`; 0 when the mask is empty."""
    count = tf.reduce_sum(mask)
    return tf.math.divide_no_nan(tf.reduce_sum(values * mask), count)


def ccsl_terms(p, z, positive, negative):
    """[RECON] CCSL extra terms for one direction (docs/METHODS.md §2.7).

    `(mean_{P} l(p_i, z_j), mean_{N} max(0, cos(p_i, z_j)))`; empty sets give 0.
    """
    cos = cosine_matrix(p, z)
    return _masked_mean(2.0 - 2.0 * cos, positive), _masked_mean(tf.nn.relu(cos), negative)


def cssl_terms(p, z, positive, negative, temperature=1.0):
    """[RECON] CSSL extra terms for one direction (docs/METHODS.md §2.7).

    Binary cross-entropy on `sigmoid(cos(p_i, z_j) / T)`: label 1 on P, 0 on N,
    each averaged over its set (0 when empty). With T = 1 a pair's BCE is at
    least `-log sigmoid(1) = 0.313262`, so the loss never reaches 0.
    """
    logits = cosine_matrix(p, z) / temperature
    bce_pos = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(logits), logits=logits)
    bce_neg = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros_like(logits), logits=logits)
    return _masked_mean(bce_pos, positive), _masked_mean(bce_neg, negative)


def clsa_logits(q, k, queue, temperature=0.2, form="code"):
    """CLSA's similarity logits and labels (docs/METHODS.md §2.10); returns `(logits, labels)`.

    `form="code"` (the default, CLSA's `model/CLSA.py`): `[q k^T, q Q^T] / t`,
    `B x (B + K)`, the batch's other keys being extra negatives, labels
    `arange(B)`. `form="paper"`: `[q.k, q Q^T] / t`, `B x (1 + K)`, labels 0.
    `q`, `k` `[B, d]` are normalised here; `queue` `[K, d]` holds unit rows.
    """
    if form not in ("code", "paper"):
        raise ValueError(f"Expected `form` in ('code', 'paper'). Received: form={form!r}")
    q, k = l2_normalize(q), l2_normalize(k)
    batch = keras.ops.shape(q)[0]
    if form == "code":
        positive, labels = keras.ops.matmul(q, keras.ops.transpose(k)), keras.ops.arange(batch)
    else:
        positive = keras.ops.sum(q * k, axis=-1, keepdims=True)
        labels = keras.ops.zeros([batch], "int32")
    negative = keras.ops.matmul(q, keras.ops.transpose(keras.ops.cast(queue, "float32")))
    return keras.ops.concatenate([positive, negative], axis=1) / temperature, labels


def clsa_contrastive_loss(q, k, queue, temperature=0.2, form="code"):
    """CLSA's `L_c`: cross-entropy of `clsa_logits` with their labels, batch mean (docs/METHODS.md §2.10)."""
    logits, labels = clsa_logits(q, k, queue, temperature, form)
    return keras.ops.mean(
        keras.ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    )


def distribution_divergence(weak_logits, strong_logits):
    """`-mean_i sum_c softmax(weak)_ic log softmax(strong)_ic`, the weak side detached (docs/METHODS.md §2.10).

    A cross-entropy: at least the entropy `H(p_w)`, with equality iff the two
    distributions are equal; all-equal logits over n columns give `log n`.
    """
    target = keras.ops.softmax(keras.ops.stop_gradient(weak_logits), axis=-1)
    log_p = keras.ops.log_softmax(keras.ops.cast(strong_logits, "float32"), axis=-1)
    return -keras.ops.mean(keras.ops.sum(target * log_p, axis=-1))


def ddm_loss(q_weak, q_strong, k, queue, temperature=0.2, form="code"):
    """CLSA's `L_DDM` for one weak and one strong query batch, T2 = `temperature` (docs/METHODS.md §2.10).

    Both distributions are over `clsa_logits` at `temperature` (the code scales
    the weak logits from T to T2, i.e. uses T2 for both); the code's form has
    `B + K` columns, the paper's `1 + K`. CLSA's training sums this over every
    (chosen weak, chosen strong) pair, added with weight alpha = 1 to `L_c`.
    """
    weak, _ = clsa_logits(q_weak, k, queue, temperature, form)
    strong, _ = clsa_logits(q_strong, k, queue, temperature, form)
    return distribution_divergence(weak, strong)


def suncet_loss(z, labels, temperature=0.1, support=None, support_labels=None, offset=0):
    """SuNCEt's supervised contrastive loss as `facebookresearch/suncet` computes it (docs/METHODS.md §2.11).

    `prob_i = (sum_{j != i} e^{z_i.s_j/t} y_j) / sum_{j != i} e^{z_i.s_j/t}`,
    loss `-mean_i sum_c y_ic log prob_ic`, over normalised `z` and supports
    `s`; the gradient flows through every row (anchor and support alike,
    nothing detached). The supports are `z` itself, or, on several replicas,
    every replica's rows gathered (the code's `AllGather` of `z`): anchor i is
    then support row `offset + i`, the one it excludes.

    Args:
        z: `[N, d]` embeddings of the (local) labelled batch (all views stacked).
        labels: `[N]` int class ids, or `[N, C]` float targets (one-hot or
            smoothed, as the code's `make_labels_matrix`, tiled per view).
            Every class needs two rows or more, else its loss is infinite.
        temperature: tau (0.1).
        support, support_labels: `[M, d]` and `[M, C]` (or `[M]`): the
            gathered rows and their targets; None: `z` and `labels`.
        offset: the row of `support` that holds `z[0]`.
    """
    def targets(y, depth=None):
        y = keras.ops.convert_to_tensor(y)
        if len(y.shape) == 1:
            y = keras.ops.cast(y, "int32")
            y = keras.ops.one_hot(y, keras.ops.max(y) + 1 if depth is None else depth)
        return keras.ops.cast(y, "float32")

    z = l2_normalize(z)
    support_labels = targets(labels if support is None else support_labels)
    labels = targets(labels, keras.ops.shape(support_labels)[1])
    support = z if support is None else l2_normalize(support)
    n = keras.ops.shape(z)[0]
    rows = keras.ops.arange(n, dtype="int32") + keras.ops.cast(offset, "int32")
    exp = keras.ops.exp(keras.ops.matmul(z, keras.ops.transpose(support)) / temperature)
    exp = exp * (1.0 - keras.ops.one_hot(rows, keras.ops.shape(support)[0], dtype="float32"))
    probs = keras.ops.matmul(exp / keras.ops.sum(exp, axis=1, keepdims=True), support_labels)
    # The code's log(probs ** -labels): a zero target contributes 0 even where probs is 0.
    terms = keras.ops.where(labels > 0, labels * keras.ops.log(probs), 0.0)
    return -keras.ops.mean(keras.ops.sum(terms, axis=1))
