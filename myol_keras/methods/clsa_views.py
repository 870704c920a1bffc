"""CLSA's views (METHODS §2.10): the crop sizes scaled from the code's ImageNet ones, and the view function.

The CLSA code crops for 224 px training; this library trains on 16-96 px
images, so every crop side is scaled by `S / 224` (S the training size),
rounded to the nearest pixel and raised to the backbone's minimum input
(`backbones.minimum_image_size`: 9 px for the CIFAR stem, 17 for the 64-px
one). The crop scales are areas relative to the image, so they carry over
unchanged.

* **Single-crop** (`run_single.sh`: `--size_crops 224 96 --pick_weak 0
  --pick_strong 1`): views `(weak query, key, strong query)`; the weak query
  and the key at S with scale (0.2, 1), the strong query at
  `strong_crop_size` (96/224 of S) with scale (0.086, 0.429).
* **Multi-crop** (`run_multi.sh`: `--size_crops 224 192 160 128 96
  --min_scale_crops 0.2 0.172 0.143 0.114 0.086 --max_scale_crops 1.0 0.86
  0.715 0.571 0.429`, every crop picked as weak and as strong): views
  `(w_0, key, w_1, ..., w_4, s_0, ..., s_4)`, where `w_i` and `s_i` are at
  side `multi_crop_sizes(S)[i]` with crop scale `MULTI_SCALES[i]`, `w_i`
  through the weak recipe and `s_i` through the weak recipe and RandAugment
  (`augment.clsa_strong_recipe`). The code's weak and strong crops of one
  size share a `RandomResizedCrop` *object*, but each call draws its own
  crop, so they are independent crops here too. The key is the weak recipe
  at S with scale (0.2, 1), as `w_0`.

**Sizes that collide after the floor** (16 px with the CIFAR stem: 16, 14,
11, 9, 9) are kept as they are: five weak and five strong views, each crop
with its own scale range, so the loss keeps its 5 + 25 terms and its scale
at every training size. Two views of one side are still two batches (each
normalised with its own BatchNorm statistics), as in the code.

Views of different sides are separate tensors of the view tuple (never
stacked). Each view `i` is drawn from `fold_in(seed, i)` of the batch seed
(`augment.make_view_fn`), so a seeded pipeline is resumable like any other.
The code's Gaussian blur is left out, as in every small-image recipe of this
library (METHODS §1.6).
"""

from myol_keras import augment
from myol_keras import backbones

#: the CLSA code's single-crop setting: weak 224 px, strong 96 px at scale (0.086, 0.429).
CODE_WEAK_SIZE, CODE_STRONG_SIZE = 224, 96
KEY_SCALE = (0.2, 1.0)
STRONG_SCALE = (0.086, 0.429)
#: the CLSA code's multi-crop setting (`cmd/run_multi.sh`): sides and crop scales of the five crops.
MULTI_CODE_SIZES = (224, 192, 160, 128, 96)
MULTI_SCALES = ((0.2, 1.0), (0.172, 0.86), (0.143, 0.715), (0.114, 0.571), (0.086, 0.429))
CROPS = ("single", "multi")


def auto_stem(image_size):
    """The stem `--stem=auto` picks for `image_size` (`training.plan_run`'s rule)."""
    return "64px" if image_size >= 64 else "cifar"


def scaled_crop_size(image_size, code_size, stem=None):
    """`round(image_size * code_size / 224)`, at least the minimum input of the stem (None: the auto rule)."""
    minimum = backbones.minimum_image_size(stem or auto_stem(image_size))
    return max(minimum, int(round(image_size * code_size / CODE_WEAK_SIZE)))


def strong_crop_size(image_size, stem=None, requested=0):
    """Side of single-crop CLSA's strong view for training images of side `image_size`.

    `requested` (> 0) is taken as is; 0 scales the code's 96 px strong crop of a
    224 px weak one to `image_size` (`scaled_crop_size`). Raises `ValueError`
    for a requested size below the stem's minimum.

    Args:
        image_size: the training (weak view) size.
        stem: the ResNet stem, `"cifar"` or `"64px"`; None: the `auto` rule.
        requested: the `--clsa_strong_size` setting (0: scaled).

    Example:
    >>> strong_crop_size(32), strong_crop_size(64), strong_crop_size(16)
    (14, 27, 9)
    """
    stem = stem or auto_stem(image_size)
    minimum = backbones.minimum_image_size(stem)
    if requested:
        if requested < minimum:
            raise ValueError(f"--clsa_strong_size={requested} is below the minimum of {minimum} px for the {stem!r} "
                             f"stem; use --clsa_strong_size={minimum} or more (0: {CODE_STRONG_SIZE}/{CODE_WEAK_SIZE} "
                             "of the training size)")
        return int(requested)
    return scaled_crop_size(image_size, CODE_STRONG_SIZE, stem)


def multi_crop_sizes(image_size, stem=None):
    """Sides of multi-crop CLSA's five weak/strong crop pairs: the code's 224, 192, 160, 128, 96 scaled to `image_size`.

    Each is `round(image_size * size / 224)`, raised to the stem's minimum
    input (`scaled_crop_size`); the first is `image_size` itself. Sides that
    coincide after the floor are kept (see the module docstring).

    Args:
        image_size: the training size S (the key's and `w_0`'s side).
        stem: the ResNet stem, `"cifar"` or `"64px"`; None: the `auto` rule.

    Example:
    >>> multi_crop_sizes(32), multi_crop_sizes(16)
    ([32, 27, 23, 18, 14], [16, 14, 11, 9, 9])
    >>> multi_crop_sizes(64), multi_crop_sizes(96)
    ([64, 55, 46, 37, 27], [96, 82, 69, 55, 41])
    """
    return [scaled_crop_size(image_size, size, stem) for size in MULTI_CODE_SIZES]


def num_views(crops):
    """Views per batch: 3 single-crop (weak, key, strong), 11 multi-crop (5 weak, key, 5 strong)."""
    check_crops(crops)
    return 3 if crops == "single" else 2 * len(MULTI_CODE_SIZES) + 1


def check_crops(crops):
    if crops not in CROPS:
        raise ValueError(f"Expected `crops` in {CROPS}. Received: crops={crops!r}")


def view_recipes(image_size, mean, std, seed=0, crops="single", strong_size=0, stem=None):
    """CLSA's recipes (lists of layers), one per view, in the order of the module docstring.

    Args:
        image_size: the training size S.
        mean, std: normalisation statistics.
        seed: the run's seed (the recipe of view `i` of the tuple seeded with
            `seed + 1000 i`, as single-crop CLSA has always done).
        crops: `"single"` or `"multi"`.
        strong_size: single-crop strong side; 0: `strong_crop_size`. Multi-crop
            takes no strong size (its five sides are `multi_crop_sizes`).
        stem: the backbone's stem (for the minimum side); None: the auto rule.
    """
    check_crops(crops)
    if crops == "single":
        specs = [(False, image_size, KEY_SCALE), (False, image_size, KEY_SCALE),
                 (True, strong_crop_size(image_size, stem, strong_size), STRONG_SCALE)]
    elif strong_size:
        raise ValueError("Expected `strong_size` 0 with crops='multi' (its sides are `multi_crop_sizes`). "
                         f"Received: strong_size={strong_size!r}")
    else:
        pairs = list(zip(multi_crop_sizes(image_size, stem), MULTI_SCALES))
        weak = [(False, size, scale) for size, scale in pairs]
        specs = [weak[0], (False, image_size, KEY_SCALE), *weak[1:], *((True, size, scale) for size, scale in pairs)]
    recipes = []
    for i, (is_strong, size, scale) in enumerate(specs):
        factory = augment.clsa_strong_recipe if is_strong else augment.myol_view_recipe
        recipes.append(factory(size, mean, std, scale=scale, seed=seed + 1000 * i))
    return recipes


def make_view_fn(image_size, mean, std, seed=0, crops="single", strong_size=0, stem=None):
    """`(batch, seed) -> views` for `ds.map` or the device: `augment.make_view_fn(view_recipes(...))`."""
    return augment.make_view_fn(view_recipes(image_size, mean, std, seed, crops, strong_size, stem))
