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
