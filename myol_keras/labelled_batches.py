"""Class-balanced labelled batches for SuNCEt (docs/METHODS.md §2.11), in NumPy.

SuNCEt adds a supervised term on a small labelled batch of C classes x s
images per class, drawn from a labelled fraction of the training set (10 % in
the paper). `facebookresearch/suncet` reads the labelled subset from a file
and cycles through a class permutation (`ClassStratifiedSampler`); here the
subset is drawn per class from a seed, and every step's batch is a pure
function of `(seed, step)`, so a resumed run draws the batches it would have
drawn. The layout is the code's: position `j * C + i` holds image `j` of the
step's class `i`, so the classes repeat every C rows. On R replicas a step's
batch is R such blocks, one per replica (`ClassBalancedSampler.batch`).
"""

import numpy as np

_SUBSET_KEY, _BATCH_KEY = 0, 1


def _rng(seed, *key):
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def labelled_subset(labels, fraction=0.1, seed=0):
    """Indices of a per-class labelled subset: `max(1, round(fraction * n_c))` of each class.

    Args:
        labels: `[N]` int class ids.
        fraction: float in (0, 1], the labelled share of every class.
        seed: int; the same seed gives the same subset.

    Returns:
        Sorted int64 indices into `labels`.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Expected `labels` to be a non-empty 1-D int array. Received: shape={labels.shape}, dtype={labels.dtype}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"Expected `fraction` in (0, 1]. Received: fraction={fraction}")
    rng = _rng(seed, _SUBSET_KEY)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, int(round(fraction * members.size)))
        chosen.append(rng.choice(members, count, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


class ClassBalancedSampler:
    """Batches of `classes_per_batch` classes x `images_per_class` labelled images.

    Each step draws C distinct classes and s distinct images of each from the
    labelled subset (`labelled_subset`), with a generator seeded by
    `(seed, step)`.

    Args:
        labels: `[N]` int class ids of the whole training set.
        classes_per_batch: C, classes per batch (SuNCEt ImageNet: 20).
        images_per_class: s, images per class (SuNCEt: 2).
        fraction: labelled share of every class (10 %).
        seed: int, seeds both the subset and the batches.

    Example:

    >>> sampler = ClassBalancedSampler(np.repeat(np.arange(10), 50), 10, 2)
    >>> sampler.batch(0).shape
    (20,)
    """

    def __init__(self, labels, classes_per_batch, images_per_class, fraction=0.1, seed=0):
        self.labels = np.asarray(labels)
        self.indices = labelled_subset(self.labels, fraction, seed)
        self.seed = int(seed)
        subset_labels = self.labels[self.indices]
        self.classes = np.unique(subset_labels)
        self._members = [self.indices[subset_labels == c] for c in self.classes]
        if not (isinstance(classes_per_batch, (int, np.integer)) and 1 <= classes_per_batch <= self.classes.size):
            raise ValueError(
                f"Expected `classes_per_batch` to be an int in [1, {self.classes.size}]. "
                f"Received: classes_per_batch={classes_per_batch}"
            )
        smallest = min(m.size for m in self._members)
        if not (isinstance(images_per_class, (int, np.integer)) and 1 <= images_per_class <= smallest):
            raise ValueError(
                f"Expected `images_per_class` to be an int in [1, {smallest}] (the smallest labelled "
                f"class; raise `fraction` for more). Received: images_per_class={images_per_class}"
            )
        self.classes_per_batch = int(classes_per_batch)
        self.images_per_class = int(images_per_class)

    def batch(self, step, replicas=1):
        """Int64 `[R * C * s]` dataset indices of step `step` for `replicas` = R.

        Replica r's block is rows `r*C*s ... (r+1)*C*s - 1`; in it, row
        `j * C + i` is image j of class i. Every block has the same C classes
        in the same order (the code's `unique_classes_per_rank: false`) and
        its own s images of each: the R blocks take R*s distinct images of a
        class, or, for a class with fewer labelled images, all of them in
        turn (the code shards each class between the ranks, and a class too
        small to shard goes to every rank whole). R = 1 draws what it always did.
        """
        replicas = int(replicas)
        if replicas < 1:
            raise ValueError(f"Expected `replicas` >= 1. Received: replicas={replicas}")
        rng = _rng(self.seed, _BATCH_KEY, int(step))
        picked = rng.choice(self.classes.size, self.classes_per_batch, replace=False)
        s = self.images_per_class
        blocks = []
        for c in picked:
            members = self._members[c]
            drawn = rng.choice(members, min(replicas * s, members.size), replace=False)
            blocks.append(drawn[np.arange(replicas * s) % drawn.size].reshape(replicas, s))
        # [C, R, s] -> [R, s, C]: replica-major, then image j, then class i
        return np.stack(blocks).transpose(1, 2, 0).reshape(-1).astype(np.int64)
