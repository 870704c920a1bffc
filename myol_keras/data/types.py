"""What every part of `myol_keras.data` shares: `DatasetInfo`, `DataUnavailableError`, the normalisation
statistics and a few constants. Imports no TensorFlow.

Example:
    mean, std = resolve_normalization("imagenet", info)
"""

from __future__ import annotations

import dataclasses

SPLITS = ("train", "test")
CHUNK = 1024  # images per chunk: streaming arrays into tf.data, decoding into the cache
TEST_FRACTION = 0.2  # the held-out share of a source without a test split (folders, digits)


class DataUnavailableError(FileNotFoundError):
    """A dataset is not on this machine and cannot be fetched; the message names the offline routes."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the library needs to know about a dataset.

    Args:
        name: registry name (an entry of `DATASETS`).
        num_classes: number of classes, or `None` for unlabelled data.
        image_size: default training size (the RandomResizedCrop output and the evaluation resize);
            it may differ from the stored size (STL-10 is stored at 96 px and trained at 64).
        mean: per-channel mean of the [0, 1] pixels, used for normalisation.
        std: per-channel standard deviation of the [0, 1] pixels.
        num_pretrain_images: number of pre-training images, or `None` when unknown.

    Example:
        info = DatasetInfo("my_data", 10, 32, (0.5,) * 3, (0.25,) * 3, 1000)
    """

    name: str
    num_classes: int | None
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_pretrain_images: int | None


# docs/METHODS.md §1.6 (CIFAR-10/100, STL-10, Tiny-ImageNet) and the usual ImageNet statistics; the MNIST,
# Fashion-MNIST and SVHN rows are the commonly used values for those datasets.
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2565, 0.2712)),
    "tiny_imagenet": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "mnist": ((0.1307, 0.1307, 0.1307), (0.3081, 0.3081, 0.3081)),
    "fashion_mnist": ((0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530)),
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


def resolve_normalization(name_or_stats, info):
    """Normalisation statistics: `"auto"` (the dataset's own), a `NORMALIZATIONS` key, or `(mean, std)`.

    Returns:
        `(mean, std)`, each a tuple of three floats.

    Example:
        mean, std = resolve_normalization("imagenet", info)
    """
    if isinstance(name_or_stats, str):
        key = name_or_stats.strip().lower()
        if key == "auto":
            return tuple(map(float, info.mean)), tuple(map(float, info.std))
        if key in NORMALIZATIONS:
            mean, std = NORMALIZATIONS[key]
            return tuple(mean), tuple(std)
        choices = ", ".join(("auto",) + tuple(NORMALIZATIONS))
        raise ValueError(f"Unknown normalisation; choose one of: {choices}. Received: {name_or_stats!r}")
    try:
        mean, std = name_or_stats
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        mean = std = ()
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(
            "Normalisation must be 'auto', a name from NORMALIZATIONS or ((m, m, m), (s, s, s)) with s > 0. "
            f"Received: {name_or_stats!r}"
        )
    return mean, std
