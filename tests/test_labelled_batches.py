"""Tests for `myol_keras.labelled_batches`: SuNCEt's class-balanced labelled batches (docs/METHODS.md §2.11)."""

import numpy as np
import pytest

from myol_keras.labelled_batches import ClassBalancedSampler, labelled_subset

LABELS = np.repeat(np.arange(20), 50)[np.random.default_rng(0).permutation(1000)]


def test_subset_is_ten_percent_of_every_class_and_deterministic():
    subset = labelled_subset(LABELS, 0.1, seed=3)
    assert np.array_equal(np.bincount(LABELS[subset]), np.full(20, 5))
    assert np.array_equal(subset, labelled_subset(LABELS, 0.1, seed=3))
    assert not np.array_equal(subset, labelled_subset(LABELS, 0.1, seed=4))
    assert np.all(np.diff(subset) > 0)


def test_batch_holds_c_classes_times_s_images_in_the_code_layout():
    sampler = ClassBalancedSampler(LABELS, classes_per_batch=10, images_per_class=3, seed=1)
    for step in range(20):
        batch = sampler.batch(step)
        assert batch.shape == (30,) and len(set(batch)) == 30
        assert set(batch) <= set(sampler.indices)  # only labelled images
        classes = LABELS[batch].reshape(3, 10)  # row j: image j of each class
        assert np.all(classes == classes[0]) and len(set(classes[0])) == 10
        counts = np.bincount(LABELS[batch], minlength=20)
        assert sorted(set(counts)) == [0, 3]


def test_batches_are_a_function_of_seed_and_step():
    a = ClassBalancedSampler(LABELS, 5, 2, seed=7)
    b = ClassBalancedSampler(LABELS, 5, 2, seed=7)
    assert np.array_equal(a.batch(12), b.batch(12))
    assert not np.array_equal(a.batch(12), a.batch(13))
    assert not np.array_equal(a.batch(12), ClassBalancedSampler(LABELS, 5, 2, seed=8).batch(12))


@pytest.mark.parametrize("replicas", [2, 3])
def test_every_replica_gets_its_own_class_balanced_block_of_the_same_classes(replicas):
    sampler = ClassBalancedSampler(LABELS, classes_per_batch=4, images_per_class=2, fraction=0.2, seed=1)  # 10 a class
    for step in range(10):
        batch = sampler.batch(step, replicas)
        assert batch.shape == (replicas * 8,) and len(set(batch)) == replicas * 8  # no image on two replicas
        assert set(batch) <= set(sampler.indices)
        blocks = LABELS[batch].reshape(replicas, 2, 4)  # [replica, image j, class i]
        assert np.all(blocks == blocks[0, 0])  # every block: the same 4 classes in the same order, 2 images each
        assert len(set(blocks[0, 0])) == 4
    one = ClassBalancedSampler(LABELS, 4, 2, 0.2, seed=1)
    assert np.array_equal(one.batch(5, 1), one.batch(5))  # one replica: the batches it always drew
    assert np.array_equal(sampler.batch(5, replicas), sampler.batch(5, replicas))  # a pure function of the step
    with pytest.raises(ValueError, match="replicas"):
        sampler.batch(0, 0)


def test_a_class_too_small_for_every_replica_is_shared_yet_each_block_keeps_s_distinct_images():
    labels = np.repeat(np.arange(3), [3, 20, 20])  # class 0: 3 labelled images (fraction 1), 2 replicas x s = 2 need 4
    sampler = ClassBalancedSampler(labels, classes_per_batch=3, images_per_class=2, fraction=1.0, seed=0)
    batch = sampler.batch(0, 2).reshape(2, 2, 3)  # [replica, image j, class i]
    for block in batch:
        assert sorted(np.bincount(labels[block.reshape(-1)], minlength=3).tolist()) == [2, 2, 2]
        assert len(set(block.reshape(-1))) == 6
    small = batch[:, :, labels[batch[0, 0]] == 0].reshape(-1)
    assert len(set(small)) == 3  # all of class 0, one image on both replicas


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"classes_per_batch": 21, "images_per_class": 2}, "classes_per_batch"),
        ({"classes_per_batch": 5, "images_per_class": 6}, "images_per_class"),
        ({"classes_per_batch": 5, "images_per_class": 2, "fraction": 0.0}, "fraction"),
    ],
)
def test_bad_arguments_raise(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ClassBalancedSampler(LABELS, **kwargs)
    with pytest.raises(ValueError, match="labels"):
        labelled_subset(np.zeros([2, 2], int))
