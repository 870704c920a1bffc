"""Representation health of a feature matrix: collapse measures (numpy, no TensorFlow).

* `embedding_std`: lightly's `std_of_l2_normalized`, the per-dimension std of
  the L2-normalised features averaged over dimensions: about 1/sqrt(d) for
  features spread over the sphere in d dimensions, 0 when they collapse to one point;
* `rankme`: the effective rank RankMe of Garrido et al. 2023, between 1 and min(n, d);
* `collapse_reasons`: which of the two crossed its collapse threshold.

`myol_keras.monitors.HealthMonitor` logs them during pre-training; they apply
as well to the features of an export (`myol_keras.embed`).

Example:
```python
features = np.load("embeddings.npy")
embedding_std(features), rankme(features), collapse_reasons(embedding_std(features), rankme(features), 512)
```
"""

import math

import numpy as np

from myol_keras.evaluation import retrieval

#: the RankMe epsilon of Garrido et al. 2023 (their reference code).
RANKME_EPS = 1e-7


def _check_features(features, least=1):
    features = np.asarray(features)
    if features.ndim != 2 or len(features) < least or features.shape[1] < 1:
        raise ValueError(f"Expected features shaped [n, d] with n >= {least}. Received: shape={features.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError("Expected finite features. Received: NaN or Inf values (a diverged encoder?)")
    return features.astype(np.float64)


def embedding_std(features):
    """Mean over dimensions of the per-dimension std of the L2-normalised rows (lightly's `std_of_l2_normalized`).

    The std is the sample std (n - 1 in the denominator, as torch's
    `std`). About 1/sqrt(d) for features spread evenly over the sphere
    in d dimensions (SimSiam, arXiv:2011.10566), 0 for a constant (collapsed) one.

    Args:
        features: `[n, d]` features, n >= 2.
    """
    z = retrieval.l2_normalize(_check_features(features, least=2)).astype(np.float64)
    return float(np.mean(np.std(z, axis=0, ddof=1)))


def rankme(features, eps=RANKME_EPS):
    """The effective rank RankMe of a feature matrix (Garrido et al. 2023, arXiv:2210.02885).

    `exp(-sum_k p_k log p_k)` with `p_k = sigma_k / ||sigma||_1 + eps`, sigma
    the singular values of the (uncentred) `[n, d]` matrix: d for n >= d
    orthonormal-like rows, about 1 for a rank-1 matrix; at most min(n, d).

    Args:
        features: `[n, d]` features.
        eps: the paper's smoothing constant (1e-7).
    """
    singular = np.linalg.svd(_check_features(features), compute_uv=False)
    total = singular.sum()
    if total <= 0:  # an all-zero matrix: nothing spread, rank 1 by convention (p = eps everywhere)
        return 1.0
    p = singular / total + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def collapse_reasons(embed_std, rank, dim, std_factor=0.1, min_rank=2.0):
    """Why these values mean a collapse (empty when they do not).

    Args:
        embed_std: `embedding_std` of the features.
        rank: `rankme` of the features.
        dim: the feature dimension d.
        std_factor: collapse when `embed_std < std_factor / sqrt(d)`.
        min_rank: collapse when `rank < min_rank`.
    """
    reasons = []
    threshold = std_factor / math.sqrt(dim)
    if embed_std < threshold:
        reasons.append(f"embed_std {embed_std:.4g} < {std_factor:g}/sqrt({dim}) = {threshold:.4g}")
    if rank < min_rank:
        reasons.append(f"rankme {rank:.3g} < {min_rank:g}")
    return reasons


def one_blas_thread():
    """numpy's BLAS on one thread for small matrices (a context manager).

    On the 2-core machine of issue 28, loaded by training, OpenBLAS' two
    threads took 50-670 ms for the SVD of a 256 x 128 matrix, one thread
    1.5 ms. threadpoolctl comes with scikit-learn; without it, nothing changes.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
