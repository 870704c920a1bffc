"""Applying recipes: `apply_recipe`, `stateless_layer_call` and `make_view_fn`.

A recipe is a list of Keras layers applied in order (`myol_keras.augment.recipes`).
Called without a seed, every random layer draws from its own
`SeedGenerator`; with a stateless `[2]` seed, every draw is a pure function of
it, which is what a resumable pipeline needs (Keras does not checkpoint
`SeedGenerator` state; `myol_keras.data.epoch_pipeline`).
"""

import keras
import tensorflow as tf

from myol_keras.augment.common import RandomAugmentation


def apply_recipe(layers, images, seed=None):
    """Applies `layers` to `images` in order.

    Args:
        layers: a list of Keras-compatible layers (keras-cv layers work too).
        images: `(N, H, W, 3)` or `(H, W, 3)` images.
        seed: optional stateless seed (`[2]` int tensor). None: every random
            layer draws from its own `SeedGenerator` (fresh randomness per
            call). Given: the randomness is a pure function of `seed` (layer
            `j` uses `fold_in(seed, j)`, see `stateless_layer_call`), which is
            what a resumable, deterministic pipeline needs (Keras does not
            checkpoint `SeedGenerator` state).

    Returns:
        The output of the last layer.

    Example:

    >>> recipe = eval_recipe(8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    >>> apply_recipe(recipe, tf.zeros([8, 8, 3], tf.uint8)).shape
    TensorShape([8, 8, 3])
    """
    if not isinstance(layers, (list, tuple)) or not all(
        callable(layer) for layer in layers
    ):
        raise ValueError(
            "Expected `layers` to be a list of Keras layers. "
            f"Received: layers={layers!r}"
        )
    if seed is None:
        for layer in layers:
            images = layer(images)
        return images
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    for j, layer in enumerate(layers):
        images = stateless_layer_call(
            layer, images, tf.random.experimental.stateless_fold_in(seed, j)
        )
    return images


def stateless_layer_call(layer, images, seed):
    """`layer(images)` in training mode with its randomness drawn from `seed`.

    Supports this package's random layers (every `RandomAugmentation`:
    `RandomResizedCrop`, `RandomApply`, `ColorJitter`, ..., through their
    `seeded_call`) and Keras core `RandomFlip` and `RandomGrayscale` (their
    transformation is drawn here with stateless ops of the same law and
    applied with the layer's own `transform_images`). Deterministic layers are
    simply called. Any other random layer (e.g. keras-cv) is called as is and
    keeps drawing from its own generator: not reproducible across a resume.

    Args:
        layer: a Keras layer.
        images: a batch `(N, H, W, C)` (or one image).
        seed: `[2]` int stateless seed.
    """
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if isinstance(layer, RandomAugmentation):
        return layer.seeded_call(images, seed)
    if isinstance(layer, keras.layers.RandomFlip):
        images = tf.convert_to_tensor(images)
        shape = tf.shape(images)
        batch = shape[0] if images.shape.rank == 4 else 1
        flips_shape = [batch, 1, 1, 1] if images.shape.rank == 4 else [1, 1, 1]
        flips = tf.random.stateless_uniform(flips_shape, seed) <= 0.5
        return layer.transform_images(images, {"flips": flips, "input_shape": shape}, training=True)
    if isinstance(layer, keras.layers.RandomGrayscale):
        images = tf.convert_to_tensor(images)
        batch = tf.shape(images)[0] if images.shape.rank == 4 else 1
        should_apply = tf.random.stateless_uniform([batch], seed) < layer.factor
        should_apply = tf.reshape(should_apply, [-1, 1, 1, 1])
        if images.shape.rank == 3:
            should_apply = should_apply[0]
        return layer.transform_images(images, should_apply, training=True)
    return layer(images)


def make_view_fn(recipes):
    """Returns `images -> tuple(views)`, one view per recipe, for `ds.map`.

    Args:
        recipes: a non-empty list of recipes (lists of layers), one per view.
            Passing the same recipe twice (`[recipe, recipe]`) draws the two
            views independently, because every call draws fresh randomness.

    Returns:
        A function `(images, seed=None)` from a batch of (uint8) images to a
        tuple of views, to use as `ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)`.
        With a stateless `seed` (`[2]` int tensor) the views are a pure
        function of it (view `i` uses `fold_in(seed, i)`); see
        `myol_keras.data.epoch_pipeline`.

    Example:

    >>> recipe = myol_view_recipe(32, (0.5,) * 3, (0.25,) * 3)
    >>> ds = tf.data.Dataset.from_tensor_slices(
    ...     tf.zeros([8, 32, 32, 3], tf.uint8)).batch(4)
    >>> ds = ds.map(make_view_fn([recipe, recipe]),
    ...             num_parallel_calls=tf.data.AUTOTUNE)
    >>> [v.shape for v in next(iter(ds))]
    [TensorShape([4, 32, 32, 3]), TensorShape([4, 32, 32, 3])]
    """
    if (
        not isinstance(recipes, (list, tuple))
        or not recipes
        or not all(isinstance(recipe, (list, tuple)) for recipe in recipes)
    ):
        raise ValueError(
            "Expected `recipes` to be a non-empty list of recipes (lists of "
            f"layers), one per view. Received: recipes={recipes!r}"
        )
    recipes = [list(recipe) for recipe in recipes]

    def view_fn(images, seed=None):
        if seed is None:
            return tuple(apply_recipe(recipe, images) for recipe in recipes)
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        return tuple(
            apply_recipe(recipe, images, tf.random.experimental.stateless_fold_in(seed, i))
            for i, recipe in enumerate(recipes)
        )

    return view_fn
