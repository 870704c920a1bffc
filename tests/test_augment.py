"""Tests for the `myol_keras.augment` package as a whole (docs/METHODS.md §1.6, docs/DECISIONS.md §4.4).

One test file per module of the package (`tests/test_augment_<module>.py`, shared
cases in `tests/augment_cases.py`); this file covers what spans them: the public
names, the registered serialization names and configs written before the
package was split, the docstring examples, and the base class a new random
operation subclasses.
"""

import doctest
import importlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import myol_keras
from augment_cases import CIFAR_MEAN, CIFAR_STD, uint8_images
from myol_keras import augment
from myol_keras.augment.common import RandomAugmentation

# `myol_keras.augment.__all__` before the split into a package: every name must stay.
PUBLIC_NAMES = [
    "ToFloat", "RandomResizedCrop", "RandomApply", "ColorJitter", "Normalize",
    "EvaluationTransform", "adjust_brightness", "adjust_contrast",
    "adjust_saturation", "adjust_hue", "myol_view_recipe", "eval_recipe",
    "apply_recipe", "stateless_layer_call", "make_view_fn",
]
# Added since (issue 27): CLSA's strong augmentation.
NEW_NAMES = ["RandAugment", "clsa_strong_recipe"]
MODULES = [
    "common", "color", "to_float", "normalize", "random_resized_crop",
    "color_jitter", "random_apply", "evaluation_transform", "recipes", "view",
    "randaugment_ops", "rand_augment",
]
LAYERS = ["ToFloat", "RandomResizedCrop", "RandomApply", "ColorJitter", "Normalize", "EvaluationTransform",
          "RandAugment"]

# A RandomApply(ColorJitter) as `keras.saving.serialize_keras_object` wrote it
# when `augment` was one module (the commit before this package).
CONFIG_BEFORE_THE_SPLIT = json.loads("""
{"build_config": {"input_shape": [6, 24, 24, 3]}, "class_name": "RandomApply", "config": {"dtype": {"class_name": "DTypePolicy", "config": {"name": "float32"}, "module": "keras", "registered_name": null}, "layer": {"build_config": {"input_shape": [6, 24, 24, 3]}, "class_name": "ColorJitter", "config": {"brightness": 0.4, "contrast": 0.4, "dtype": {"class_name": "DTypePolicy", "config": {"name": "float32"}, "module": "keras", "registered_name": null}, "hue": 0.1, "jit_compile": true, "name": "color_jitter_2", "saturation": 0.4, "seed": 2, "trainable": true}, "module": "myol_keras.augment", "registered_name": "myol_keras>ColorJitter"}, "name": "random_apply", "rate": 0.6, "seed": 3, "trainable": true}, "module": "myol_keras.augment", "registered_name": "myol_keras>RandomApply"}
""")


def test_public_names_are_kept():
    assert sorted(augment.__all__) == sorted(PUBLIC_NAMES + NEW_NAMES)
    for name in PUBLIC_NAMES:
        assert callable(getattr(augment, name))
    exported = [n for n, m in myol_keras._EXPORTS.items() if m == "myol_keras.augment"]
    assert len(exported) == 9
    for name in exported:
        assert getattr(myol_keras, name) is getattr(augment, name)


@pytest.mark.parametrize("name", LAYERS)
def test_registered_names_are_unchanged(name):
    cls = getattr(augment, name)
    assert keras.saving.get_registered_name(cls) == f"myol_keras>{name}"
    assert keras.saving.get_registered_object(f"myol_keras>{name}") is cls


def test_config_written_before_the_split_still_loads():
    layer = keras.saving.deserialize_keras_object(CONFIG_BEFORE_THE_SPLIT)
    assert type(layer) is augment.RandomApply and layer.rate == 0.6 and layer.seed == 3
    assert type(layer.layer) is augment.ColorJitter and layer.layer.seed == 2
    images = tf.random.uniform([4, 8, 8, 3], seed=23)
    np.testing.assert_array_equal(
        layer.seeded_call(images, [1, 2]), augment.RandomApply(
            augment.ColorJitter(seed=2), 0.6, seed=3).seeded_call(images, [1, 2])
    )


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    module = importlib.import_module(f"myol_keras.augment.{module}")
    globs = {name: getattr(augment, name) for name in augment.__all__}
    globs["tf"] = tf
    result = doctest.testmod(
        module,
        extraglobs=globs,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert result.failed == 0 and result.attempted > 0


class _Invert(RandomAugmentation):
    """A random op written as a new module would: invert each sample with probability 1/2."""

    def get_random_transformation(self, images, training=True, seed=None):
        from myol_keras.augment.common import as_batch, base_seed

        batch = tf.shape(as_batch(images)[0])[0]
        return tf.random.stateless_uniform([batch], base_seed(self.generator, seed)) < 0.5

    def transform_images(self, images, transformation, training=True):
        images = tf.convert_to_tensor(images)
        mask = tf.reshape(transformation, [-1, 1, 1, 1])
        return tf.where(mask, 1.0 - images, images) if training else images


def test_a_new_random_op_is_reproducible_in_a_seeded_recipe():
    recipe = [augment.ToFloat(), _Invert(), augment.Normalize(CIFAR_MEAN, CIFAR_STD)]
    images = uint8_images(16, size=4)
    seed = tf.constant([3, 1], tf.int64)
    first = augment.apply_recipe(recipe, images, seed)
    np.testing.assert_array_equal(augment.apply_recipe(recipe, images, seed), first)
    assert not np.array_equal(augment.apply_recipe(recipe, images), augment.apply_recipe(recipe, images))
    # The seeded call draws from fold_in(seed, 1) for the layer in slot 1.
    inverted = recipe[1].seeded_call(
        augment.ToFloat()(images), tf.random.experimental.stateless_fold_in(seed, 1)
    )
    np.testing.assert_allclose(first, recipe[2](inverted), atol=1e-6)


def test_random_augmentation_names_what_a_subclass_lacks():
    class Incomplete(RandomAugmentation):
        pass

    layer = Incomplete()
    with pytest.raises(NotImplementedError, match="Incomplete must implement get_random_transformation"):
        layer(tf.zeros([1, 2, 2, 3]))
    with pytest.raises(NotImplementedError, match="Incomplete must implement transform_images"):
        layer.transform_images(tf.zeros([1, 2, 2, 3]), None)
