"""Loss functions and mixing primitives shared by the BYOL family.

Everything here is a pure function of its inputs (no layers, no state), so it
can be tested against the closed forms of `METHODS.md` and reused by every
method. Randomness is *stateless*: a method derives a seed from
(`seed`, `optimizer.iterations`, replica id) and passes it in, so a resumed or
distributed run draws exactly what it would have drawn (DESIGN §4.5, §4.11).
"""

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
    code (METHODS §2.1).
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


def sample_beta(seed, shape, alpha):
    """Beta(alpha, alpha) samples as `g1 / (g1 + g2)` of two Gamma draws."""
    seed_a, seed_b = split_seed(seed, 2)
    g1 = tf.random.stateless_gamma(shape, seed_a, alpha=alpha, dtype=tf.float32)
    g2 = tf.random.stateless_gamma(shape, seed_b, alpha=alpha, dtype=tf.float32)
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
    normalises the mixture afterwards (METHODS §2.2, the 0.452085 check).
    """
    z1 = tf.cast(z1, tf.float32)
    z2 = tf.cast(z2, tf.float32)
    lam = tf.reshape(tf.cast(lam, tf.float32), [-1, 1])
    return lam * z1 + (1.0 - lam) * tf.gather(z2, permutation)


def myol_mix_loss(p_mixed, z1, z2, lam, permutation):
    """`mean_i l(p~_i, lam_i z'1_i + (1 - lam_i) z'2_{pi(i)})` (METHODS §2.2)."""
    targets = mix_projections(z1, z2, lam, permutation)
    return tf.reduce_mean(normalized_mse(p_mixed, targets))


def embedding_std(z):
    """Collapse monitor: mean per-dimension std of `n(z)` over the batch.

    About `1/sqrt(d)` for well-spread embeddings, 0 when collapsed.
    """
    return tf.reduce_mean(tf.math.reduce_std(l2_normalize(z), axis=0))
