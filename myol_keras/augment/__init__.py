"""Pre-training view augmentations (docs/METHODS.md §1.6, docs/DECISIONS.md §4.4).

The MYOL / i-Mix view recipe as Keras layers that run inside
`tf.data.Dataset.map` (TensorFlow backend):

0. uint8 → float32 in [0, 1] (`ToFloat`, the reference's `ToTensor`, moved
   first: the float ops differ from PIL's uint8 ones by a few 1/255 steps);
1. `RandomResizedCrop(S, scale=(0.2, 1.0), ratio=(3/4, 4/3))`, bilinear;
2. horizontal flip with p=0.5 (Keras core `RandomFlip`);
3. with p=0.8, `ColorJitter(0.4, 0.4, 0.4, 0.1)` with torchvision's formulas
   (multiplicative brightness / contrast / saturation, contrast towards the
   mean of the grey image, hue shift in HSV, the four ops in a random order);
4. grayscale with p=0.2 (Keras core `RandomGrayscale`);
5. per-channel normalisation (`Normalize`).

Every random layer draws its parameters **per sample** from its own
`keras.random.SeedGenerator` (one `next()` per call, then stateless TF ops),
so the randomness differs between the images of a batch, between calls and
between epochs, and is never frozen at trace time.

Random layers follow the Keras split between the random draw and the maths
(`common.RandomAugmentation`): `get_random_transformation(images,
training=True, seed=None)` returns the per-sample parameters, and
`transform_images(images, transformation)` applies them deterministically;
`call` does both, and `seeded_call(images, seed)` does both with every draw
taken from a stateless seed.

One layer per module, as Keras does:

- `to_float`, `normalize`: `ToFloat`, `Normalize`;
- `random_resized_crop`: `RandomResizedCrop`;
- `color`: torchvision's colour adjustments as pure functions;
- `color_jitter`: `ColorJitter`, built on them;
- `random_apply`: `RandomApply`, a layer applied with probability p;
- `randaugment_ops`: RandAugment's 14 operations as PIL computes them;
- `rand_augment`: `RandAugment`, CLSA's strong augmentation, built on them;
- `evaluation_transform`: `EvaluationTransform`;
- `recipes`: the view recipes, each a factory returning a list of layers;
- `view`: `apply_recipe`, `stateless_layer_call`, `make_view_fn`;
- `common`: argument checks, rank and seed helpers, `RandomAugmentation`.

A new augmentation is a new module with one layer (a `RandomAugmentation`
subclass if it is random, so seeded pipelines reproduce it), re-exported
here; a new recipe is a new factory in `recipes`.
"""

from myol_keras.augment.color import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
)
from myol_keras.augment.color_jitter import ColorJitter
from myol_keras.augment.evaluation_transform import EvaluationTransform
from myol_keras.augment.normalize import Normalize
from myol_keras.augment.random_apply import RandomApply
from myol_keras.augment.rand_augment import RandAugment
from myol_keras.augment.random_resized_crop import RandomResizedCrop
from myol_keras.augment.recipes import (
    clsa_strong_recipe,
    eval_recipe,
    myol_view_recipe,
)
from myol_keras.augment.to_float import ToFloat
from myol_keras.augment.view import (
    apply_recipe,
    make_view_fn,
    stateless_layer_call,
)

__all__ = [
    "ToFloat",
    "RandomResizedCrop",
    "RandomApply",
    "ColorJitter",
    "RandAugment",
    "Normalize",
    "EvaluationTransform",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "myol_view_recipe",
    "clsa_strong_recipe",
    "eval_recipe",
    "apply_recipe",
    "stateless_layer_call",
    "make_view_fn",
]
