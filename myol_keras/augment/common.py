"""What every augmentation layer of `myol_keras.augment` shares.

Argument checks that raise `ValueError` with the Keras wording (`Expected
... Received: name=value`), rank handling for batched and unbatched images,
stateless seeds, and `RandomAugmentation`, the base class of the random
layers. Internal to the package: the public names are re-exported by
`myol_keras.augment`.
"""

import numbers

import keras
import tensorflow as tf


def is_number(value):
    """True for a real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value):
    """True for an integer that is not a bool (NumPy integers included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def validate_seed(seed):
    """Raises `ValueError` unless `seed` is None or an int."""
    if seed is not None and not is_int(seed):
        raise ValueError(
            f"Expected `seed` to be None or an int. Received: seed={seed}"
        )


def validate_pair(name, value, high=None):
    """Checks `value` is a pair `0 < a <= b` (and `b <= high` if given)."""
    bound = f" <= {high}" if high is not None else ""
    message = (
        f"Expected `{name}` to be a pair 0 < a <= b{bound}. "
        f"Received: {name}={value}"
    )
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(message)
    low, up = value
    if not (is_number(low) and is_number(up)):
        raise ValueError(message)
    if not (low > 0 and low <= up) or (high is not None and up > high):
        raise ValueError(message)
    return (float(low), float(up))


def as_batch(images):
    """Returns `(batched_images, was_unbatched)` for rank-3 or rank-4 input."""
    images = tf.convert_to_tensor(images)
    rank = images.shape.rank
    if rank == 3:
        return images[tf.newaxis], True
    if rank == 4:
        return images, False
    raise ValueError(
        "Expected images of rank 3 (height, width, channels) or rank 4 "
        f"(batch, height, width, channels). Received: images.shape={images.shape}"
    )


def restore_rank(images, was_unbatched):
    """Undoes `as_batch`: drops the batch axis of one image."""
    return images[0] if was_unbatched else images


def base_seed(generator, seed):
    """A `[2]` int64 stateless seed: from `seed` if given, else `generator`."""
    if seed is None:
        seed = generator.next()
    elif isinstance(seed, keras.random.SeedGenerator):
        seed = seed.next()
    elif is_int(seed):
        seed = [int(seed), 0]
    return tf.cast(tf.convert_to_tensor(seed), tf.int64)


def split_seed(seed, num):
    """`num` independent `[2]` stateless seeds from one."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


class RandomAugmentation(keras.layers.Layer):
    """Base of the random layers: the Keras split of the draw from the maths.

    A subclass validates its arguments, calls `super().__init__(seed=seed,
    **kwargs)` and implements two methods, as Keras' image preprocessing
    layers do:

    - `get_random_transformation(images, training=True, seed=None)` draws the
      per-sample parameters, from `seed` if given (a `[2]` stateless seed, an
      int or a `SeedGenerator`), else from the layer's own `self.generator`
      (one `next()` per call, then stateless TF ops; see `base_seed`);
    - `transform_images(images, transformation, training=True)` applies them
      deterministically.

    `call` does both, and `seeded_call(images, seed)` does both in training
    mode with every draw taken from `seed`: that is how `apply_recipe` makes a
    view a pure function of a batch seed (`myol_keras.augment.view`). A layer
    whose randomness does not fit one transformation (`RandomApply`)
    overrides `call` and `seeded_call` instead. The layers compute in float32
    unless given another `dtype`.

    Args:
        seed: optional int, seed of the layer's `SeedGenerator`.
        **kwargs: standard layer arguments (`name`, ...).

    Example:

    >>> class Invert(RandomAugmentation):
    ...     def get_random_transformation(self, images, training=True, seed=None):
    ...         return None
    ...     def transform_images(self, images, transformation, training=True):
    ...         return 1.0 - images
    >>> Invert(seed=0)(tf.zeros([2, 4, 4, 3]))[0, 0, 0].numpy()
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, seed=None, **kwargs):
        validate_seed(seed)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.seed = None if seed is None else int(seed)
        self.generator = keras.random.SeedGenerator(self.seed)

    def get_random_transformation(self, images, training=True, seed=None):
        raise NotImplementedError(
            f"{type(self).__name__} must implement get_random_transformation"
        )

    def transform_images(self, images, transformation, training=True):
        raise NotImplementedError(
            f"{type(self).__name__} must implement transform_images"
        )

    def call(self, images, training=True):
        transformation = self.get_random_transformation(
            images, training=training
        )
        return self.transform_images(images, transformation, training=training)

    def seeded_call(self, images, seed):
        """`call` in training mode with the randomness drawn from `seed` (`[2]` ints)."""
        transformation = self.get_random_transformation(
            images, training=True, seed=seed
        )
        return self.transform_images(images, transformation, training=True)

    def compute_output_shape(self, input_shape):
        return input_shape
