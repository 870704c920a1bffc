"""View recipes: each is a factory that returns a list of Keras layers.

A recipe is a plain list of layers applied in order by `apply_recipe` /
`make_view_fn` (`myol_keras.augment.view`); it may mix this package's layers,
Keras core layers and keras-cv layers (docs/DECISIONS.md §4.4). A new recipe is a new
factory here, with the paper's defaults and one seed per random layer derived
with `layer_seed`; a new operation is a new layer module in this package.

- `myol_view_recipe`: the MYOL / i-Mix / BYOL-on-small-images pre-training
  view (docs/METHODS.md §1.6);
- `clsa_strong_recipe`: CLSA's strong view, the weak view plus RandAugment
  (docs/METHODS.md §2.10);
- `eval_recipe`: the evaluation transform, shared with the export and every
  evaluation (`myol_keras.preprocessing`).
"""

import keras
import numpy as np

from myol_keras.augment.color_jitter import ColorJitter
from myol_keras.augment.common import is_int
from myol_keras.augment.evaluation_transform import EvaluationTransform
from myol_keras.augment.normalize import Normalize
from myol_keras.augment.rand_augment import RandAugment
from myol_keras.augment.random_apply import RandomApply
from myol_keras.augment.random_resized_crop import RandomResizedCrop
from myol_keras.augment.to_float import ToFloat


def layer_seed(seed, offset):
    """The seed of a recipe's random layer number `offset`, or None if `seed` is.

    Well separated per layer (NumPy `SeedSequence([seed, offset])`), so that
    recipes with nearby seeds (0, 1, ...) do not share streams between layers.
    Derived at construction, in Python.
    """
    if seed is None:
        return None
    state = np.random.SeedSequence([int(seed), offset]).generate_state(1)
    return int(state[0]) % (2**31 - 1)


def _validate_image_size(image_size):
    if not is_int(image_size) or image_size < 1:
        raise ValueError(
            "Expected `image_size` to be an int >= 1. "
            f"Received: image_size={image_size}"
        )


def myol_view_recipe(image_size, mean, std, seed=None, scale=(0.2, 1.0)):
    """The MYOL pre-training view (docs/METHODS.md §1.6) as a list of layers.

    In order: `ToFloat`, `RandomResizedCrop(image_size, scale, (3/4, 4/3))`,
    `keras.layers.RandomFlip("horizontal")`,
    `RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8)`,
    `keras.layers.RandomGrayscale(factor=0.2)` and `Normalize(mean, std)`.
    The same recipe is used for both views (symmetric). All layers compute in
    float32 whatever the global dtype policy.

    Args:
        image_size: int, output size (32 for CIFAR, 64 for STL-10 and
            Tiny-ImageNet).
        mean: 3 floats, normalisation mean.
        std: 3 floats, normalisation std.
        seed: optional int. Each random layer gets its own seed derived from
            it (at construction, in Python). Two recipes meant to be
            independent need different seeds (or `None`); one recipe used for
            both views (`[recipe, recipe]`) is independent per call anyway.
        scale: crop area range; (0.2, 1) for every method's views (CLSA's
            smaller multi-crop views use smaller ranges, docs/METHODS.md §2.10).

    Returns:
        A list of `keras.layers.Layer`, for `apply_recipe` / `make_view_fn`.

    Example:

    >>> recipe = myol_view_recipe(
    ...     32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    >>> images = tf.zeros([4, 32, 32, 3], tf.uint8)
    >>> apply_recipe(recipe, images).shape
    TensorShape([4, 32, 32, 3])
    """
    _validate_image_size(image_size)
    return [
        ToFloat(),
        RandomResizedCrop(
            image_size, scale=scale, ratio=(3 / 4, 4 / 3), seed=layer_seed(seed, 0)
        ),
        keras.layers.RandomFlip(
            "horizontal", seed=layer_seed(seed, 1), dtype="float32"
        ),
        RandomApply(
            ColorJitter(0.4, 0.4, 0.4, 0.1, seed=layer_seed(seed, 2)),
            rate=0.8,
            seed=layer_seed(seed, 3),
        ),
        keras.layers.RandomGrayscale(
            factor=0.2, seed=layer_seed(seed, 4), dtype="float32"
        ),
        Normalize(mean, std),
    ]


def clsa_strong_recipe(image_size, mean, std, scale=(0.2, 1.0), num_ops=5, magnitude=10, seed=None):
    """CLSA's strong view (docs/METHODS.md §2.10): the weak view, then `RandAugment`, as a list of layers.

    In order: `ToFloat`, `RandomResizedCrop(image_size, scale, (3/4, 4/3))`,
    horizontal flip, `ColorJitter(0.4, 0.4, 0.4, 0.1)` with p = 0.8,
    grayscale with p = 0.2, `RandAugment(num_ops, magnitude, rate=0.5)` and
    `Normalize(mean, std)`. CLSA's code (`Multi_FixTransform.py`) also blurs
    with p = 0.5 before its flip; the small-image views of this library have
    no blur (docs/METHODS.md §1.6), and neither does this recipe. The flip commutes
    with the colour operations, so its place does not matter. RandAugment
    works on the 256 grey levels, as PIL does on the code's uint8 images.

    Args:
        image_size: int, output size (CLSA's multi-crop uses smaller strong
            crops than the weak one; see `scale`).
        mean: 3 floats, normalisation mean.
        std: 3 floats, normalisation std.
        scale: crop area range; CLSA's crops use (0.2, 1.0) at 224 px down to
            (0.086, 0.429) at 96 px.
        num_ops: RandAugment operations per image (CLSA: 5).
        magnitude: levels drawn in `1 .. magnitude - 1` (CLSA: 10).
        seed: optional int; each random layer gets its own derived seed.

    Returns:
        A list of `keras.layers.Layer`, for `apply_recipe` / `make_view_fn`.

    Example:

    >>> recipe = clsa_strong_recipe(32, (0.5,) * 3, (0.25,) * 3, seed=0)
    >>> apply_recipe(recipe, tf.zeros([2, 32, 32, 3], tf.uint8)).shape
    TensorShape([2, 32, 32, 3])
    """
    weak = myol_view_recipe(image_size, mean, std, seed=seed, scale=scale)
    strong = RandAugment(num_ops=num_ops, magnitude=magnitude, rate=0.5, seed=layer_seed(seed, 5))
    return [*weak[:-1], strong, weak[-1]]


def eval_recipe(image_size, mean, std):
    """The evaluation transform as a recipe: `[EvaluationTransform(image_size, mean, std)]`.

    The same transform as the export's endpoints and every evaluation
    (`myol_keras.preprocessing`): centre square crop, bilinear resize with
    antialiasing (as PIL's, used by the reference's `Resize`; exactly the
    identity when the image already has size `(image_size, image_size)`),
    normalisation.

    Args:
        image_size: int, output height and width.
        mean: 3 floats, normalisation mean.
        std: 3 floats, normalisation std.

    Returns:
        A list of `keras.layers.Layer`.

    Example:

    >>> recipe = eval_recipe(64, (0.4467, 0.4398, 0.4066),
    ...                      (0.2603, 0.2565, 0.2712))
    >>> apply_recipe(recipe, tf.zeros([2, 96, 96, 3], tf.uint8)).shape
    TensorShape([2, 64, 64, 3])
    """
    return [EvaluationTransform(image_size, mean, std)]
