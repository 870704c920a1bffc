"""Nearest-neighbour retrieval: the training images an encoder puts next to a few test images.

`nearest_neighbours(query_emb, gallery_emb, k)` ranks a gallery by the cosine
similarity of L2-normalised embeddings. `retrieval_sample` picks a fixed set
of queries (`pick_queries`: the first test image of each class, in class
order, up to `max_queries`; the first test images when there are no labels),
finds each one's top-k neighbours among the training images and keeps their
pixels, similarities and labels, marking the neighbours whose class differs
from the query's. The evaluations that extract features keep it in the run
directory (`retrieval_sample.npz`, beside the embedding sample) and
`myol_keras.report` draws it as a grid next to the embedding map.

Example:
```python
index, similarity = nearest_neighbours(test_features[:8], train_features, k=5)
sample = retrieval_sample(x_test, test_features, x_train, train_features,
                          query_labels=y_test, gallery_labels=y_train)
sample["wrong"]  # [10, 5] bool (CIFAR-10): a neighbour of another class than its query
```
"""

import io
import numbers
import os

import numpy as np

from myol_keras import rundir

SAMPLE_FILE = "retrieval_sample.npz"


def l2_normalize(x, eps=1e-12):
    """Rows of `x` scaled to unit L2 norm (all-zero rows stay zero), float32."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def _check_k(k, gallery_size):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"Expected `k` to be an int >= 1. Received: k={k!r}")
    if k > gallery_size:
        raise ValueError(f"Expected `k` to be at most the gallery size ({gallery_size}). Received: k={k}")


def nearest_neighbours(query_emb, gallery_emb, k=5, chunk=256):
    """The `k` gallery embeddings most similar (cosine) to each query, best first.

    Args:
        query_emb: `[Q, D]` query embeddings.
        gallery_emb: `[N, D]` gallery embeddings (N >= k).
        k: neighbours per query.
        chunk: queries per similarity block (bounds memory at `chunk * N` floats).

    Returns:
        `(index, similarity)`: int64 `[Q, k]` gallery indices and float32
        `[Q, k]` cosine similarities, in decreasing similarity; equal
        similarities keep the lower gallery index first.

    Raises:
        ValueError: not two 2-D arrays of the same width, or a bad `k`.
    """
    query = np.asarray(query_emb)
    gallery = np.asarray(gallery_emb)
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError("Expected `query_emb` [Q, D] and `gallery_emb` [N, D] with the same D. "
                         f"Received: shapes {query.shape} and {gallery.shape}")
    _check_k(k, len(gallery))
    query, gallery = l2_normalize(query), l2_normalize(gallery)
    index = np.zeros((len(query), k), np.int64)
    similarity = np.zeros((len(query), k), np.float32)
    for start in range(0, len(query), chunk):
        sim = query[start:start + chunk] @ gallery.T
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        index[start:start + chunk] = top
        similarity[start:start + chunk] = np.take_along_axis(sim, top, axis=1)
    return index, similarity


def pick_queries(labels=None, count=None, max_queries=10):
    """A fixed choice of query indices: the first item of each class, in class order, up to `max_queries`.

    Args:
        labels: `[N]` int labels, or None (then the first `min(count, max_queries)` items).
        count: the number of items when there are no labels.
        max_queries: the most queries returned.
    """
    if isinstance(max_queries, bool) or not isinstance(max_queries, numbers.Integral) or max_queries < 1:
        raise ValueError(f"Expected `max_queries` to be an int >= 1. Received: max_queries={max_queries!r}")
    if labels is None:
        if count is None:
            raise ValueError("pass `labels` or the item `count`")
        return np.arange(min(int(count), max_queries), dtype=np.int64)
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)  # classes in order; the first item of each
    return first[:max_queries].astype(np.int64)


def retrieval_sample(query_images, query_emb, gallery_images, gallery_emb, *, query_labels=None,
                     gallery_labels=None, k=5, max_queries=10):
    """A few queries with their top-k gallery neighbours, ready to draw.

    Args:
        query_images: `[Nq, H, W, 3]` images the queries are picked from (the test split).
        query_emb: their `[Nq, D]` embeddings.
        gallery_images: `[N, H, W, 3]` gallery images (the training split).
        gallery_emb: their `[N, D]` embeddings.
        query_labels, gallery_labels: `[Nq]` and `[N]` int labels, or None (no marks).
        k: neighbours per query (capped at the gallery size).
        max_queries: queries (`pick_queries`).

    Returns:
        dict of numpy arrays: `query_index [Q]`, `query_images [Q, H, W, 3]`,
        `query_labels [Q]` (-1 without labels), `neighbour_index [Q, k]`,
        `neighbour_images [Q, k, H, W, 3]`, `neighbour_labels [Q, k]`,
        `similarity [Q, k]`, `wrong [Q, k]` (neighbour of another class; all
        False without labels), `has_labels` (bool) and `gallery_size`.

    Raises:
        ValueError: images and embeddings of different lengths, a label array
            given for one side only, or bad `k` / `max_queries`.
    """
    if len(query_images) != len(query_emb) or len(gallery_images) != len(gallery_emb):
        raise ValueError("Expected one embedding per image. Received: "
                         f"{len(query_images)} query images, {len(query_emb)} query embeddings, "
                         f"{len(gallery_images)} gallery images, {len(gallery_emb)} gallery embeddings")
    if (query_labels is None) != (gallery_labels is None):
        raise ValueError("pass labels for both the queries and the gallery, or for neither")
    has_labels = query_labels is not None
    queries = pick_queries(query_labels, len(query_images), max_queries)
    if isinstance(k, numbers.Integral) and not isinstance(k, bool):
        k = min(int(k), len(gallery_emb))
    neighbours, similarity = nearest_neighbours(np.asarray(query_emb)[queries], gallery_emb, k)
    if has_labels:
        q_labels = np.asarray(query_labels, np.int64)[queries]
        n_labels = np.asarray(gallery_labels, np.int64)[neighbours]
        wrong = n_labels != q_labels[:, None]
    else:
        q_labels = np.full(len(queries), -1, np.int64)
        n_labels = np.full(neighbours.shape, -1, np.int64)
        wrong = np.zeros(neighbours.shape, bool)
    return {
        "query_index": queries,
        "query_images": np.asarray(query_images)[queries],
        "query_labels": q_labels,
        "neighbour_index": neighbours,
        "neighbour_images": np.asarray(gallery_images)[neighbours],
        "neighbour_labels": n_labels,
        "similarity": similarity,
        "wrong": wrong,
        "has_labels": np.asarray(has_labels),
        "gallery_size": np.asarray(len(gallery_emb), np.int64),
    }


def save_retrieval_sample(run_dir, sample):
    """Write `sample` to `<run_dir>/retrieval_sample.npz` atomically; returns the path (None without a run dir)."""
    if not run_dir or sample is None:
        return None
    os.makedirs(run_dir, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **sample)
    return rundir.atomic_write(os.path.join(run_dir, SAMPLE_FILE), buffer.getvalue())


def load_retrieval_sample(run_dir):
    """The sample `save_retrieval_sample` wrote, as a dict of arrays (None if there is none)."""
    path = os.path.join(run_dir, SAMPLE_FILE)
    if not os.path.exists(path):
        return None
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
