"""Representation mixing (Sharma et al., BDA 2024; docs/METHODS.md §2.6).

Follows the authors' code (`models/OurModel.py`, `Loss/loss.py`,
`data/OurModel_Data.py`); the paper text was not available.

Its flags (name, default, help, bounds, the constructor argument each feeds):
`repmix_settings.py`, importable without TensorFlow.
"""

import keras
import numpy as np
import tensorflow as tf

from myol_keras import augment
from myol_keras import losses
from myol_keras.methods.base import BootstrapMethod
from myol_keras.methods.family_heads import ContrastiveHead


@keras.saving.register_keras_serializable(package="myol_keras")
class AnisotropicGaussianBlur(keras.layers.Layer):
    """kornia `GaussianBlur2d((k, k), sigma=(0.1, 2.0))` as the RM code calls it.

    kornia reads `sigma` as per-axis stds, so this is a *fixed* blur with
    std `sigma[0]` along rows (H) and `sigma[1]` along columns (W), i.e. a
    horizontal blur — not a random sigma. Reflect padding (kornia default).

    Args:
        kernel_size: odd k (`floor(0.1 S)`, decremented if even).
        sigma: `(sigma_y, sigma_x)`.
    """

    def __init__(self, kernel_size=3, sigma=(0.1, 2.0), **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.kernel_size = int(kernel_size)
        self.sigma = tuple(float(s) for s in sigma)

    @staticmethod
    def kernel_1d(size, sigma):
        x = np.arange(size, dtype="float64") - (size - 1) / 2.0
        k = np.exp(-(x**2) / (2.0 * sigma**2))
        return (k / k.sum()).astype("float32")

    def call(self, images):
        k = self.kernel_size
        pad = k // 2
        x = tf.pad(tf.cast(images, tf.float32), [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        ky = self.kernel_1d(k, self.sigma[0])
        kx = self.kernel_1d(k, self.sigma[1])
        kernel = np.outer(ky, kx)[:, :, None, None] * np.ones((1, 1, 3, 1), "float32")
        return tf.nn.depthwise_conv2d(x, tf.constant(kernel, tf.float32), [1, 1, 1, 1], "VALID")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size, "sigma": self.sigma})
        return config


def blur_kernel_size(image_size):
    """`floor(0.1 S)`, minus one if even: 3 (32 px), 5 (64 px), 9 (96 px)."""
    k = int(0.1 * image_size)
    return max(k - 1 if k % 2 == 0 else k, 1)


def repmix_augment_recipe(image_size, mean, std, seed=None):
    """The RM augmentation A then normalisation, in the reference's order (kornia, per sample).

    ColorJitter(0.8, 0.8, 0.8, 0.2) p=0.8 → RandomGrayscale 0.2 →
    RandomResizedCrop(S, (0.08, 1)) → horizontal flip → the fixed
    anisotropic blur → Normalize.
    """
    rng = np.random.SeedSequence([0 if seed is None else int(seed), 77])
    seeds = [None] * 5 if seed is None else [int(s) % (2**31 - 1) for s in rng.generate_state(5)]
    return [
        augment.ToFloat(),
        augment.RandomApply(augment.ColorJitter(0.8, 0.8, 0.8, 0.2, seed=seeds[0]), rate=0.8, seed=seeds[1]),
        keras.layers.RandomGrayscale(factor=0.2, seed=seeds[2], dtype="float32"),
        augment.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=seeds[3]),
        keras.layers.RandomFlip("horizontal", seed=seeds[4], dtype="float32"),
        AnisotropicGaussianBlur(blur_kernel_size(image_size), (0.1, 2.0)),
        augment.Normalize(mean, std),
    ]


def counterpart_view_fn(image_size, mean, std, seed=None):
    """`(x, r) -> (N(x), N(r), A(r), A(x))` for batches of images and their counterparts.

    `N` is normalise-only (`augment.eval_recipe`), `A` the RM augmentation.
    """
    normalize = augment.eval_recipe(image_size, mean, std)
    strong = repmix_augment_recipe(image_size, mean, std, seed)

    def view_fn(x, r, seed=None):
        strong_r = strong_x = None
        if seed is not None:  # stateless: a pure function of the batch seed
            strong_r, strong_x = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
        return (
            augment.apply_recipe(normalize, x), augment.apply_recipe(normalize, r),
            augment.apply_recipe(strong, r, strong_r), augment.apply_recipe(strong, x, strong_x),
        )

    return view_fn


@keras.saving.register_keras_serializable(package="myol_keras")
class RepMix(BootstrapMethod):
    """Representation mixing: NT-Xent over sums of two embeddings (docs/METHODS.md §2.6).

    A batch holds, for each source image `x_b` and a counterpart `r_b` drawn
    from the whole training set, four views `(N(x), N(r), A(r), A(x))`
    (`N` normalise-only, `A` strong augmentation; the data pipeline builds
    them, see `needs_counterparts` and `make_view_fn`). With `D = [x0, r0, x1, r1, ...]` under `N` and
    `D' = [r0, x0, r1, x1, ...]` under `A`, one forward each (own BatchNorm
    statistics), `M = e(D) + e(D')` (un-normalised projections summed), so
    `m_2b = e(N(x_b)) + e(A(r_b))` and `m_2b+1 = e(N(r_b)) + e(A(x_b))` are
    the positive pair. The loss is the reference `xent_loss` with
    `temperature` 0.5 and `reduction` `"log_mean"` (official,
    `-log mean rho`) or `"mean_log"` (standard NT-Xent). The head is
    `Linear(4d)-BN-LeakyReLU(0.01)-Linear(d)` (`projector_hidden_dim` = 512
    for d = 128). K = 1 counterpart per image. No predictor, no target.
    """

    loss_term_names = ()
    num_views = 4
    needs_counterparts = True
    uses_predictor = False
    uses_target = False

    def __init__(self, backbone, temperature=0.5, reduction="log_mean", **kwargs):
        if reduction not in ("log_mean", "mean_log"):
            raise ValueError(f"Expected `reduction` in ('log_mean', 'mean_log'). Received: reduction={reduction!r}")
        if not temperature > 0:
            raise ValueError(f"Expected `temperature` > 0. Received: temperature={temperature}")
        super().__init__(backbone, **kwargs)
        self.temperature = float(temperature)
        self.reduction = reduction

    @classmethod
    def make_view_fn(cls, image_size, mean, std, seed=0):
        """`(batch, counterparts, seed) -> (N(x), N(r), A(r), A(x))`: each image
        with a counterpart `r` from an independent shuffle of the whole training
        set (uniform marginal; the reference samples with replacement)."""
        return counterpart_view_fn(image_size, mean, std, seed=seed)

    def make_projector(self, name):
        return ContrastiveHead(
            self.projector_hidden_dim, self.projection_dim, batch_norm=True, negative_slope=0.01, name=name
        )

    def compute_targets(self, views):
        return []

    def mixed_representations(self, views):
        n_x, n_r, a_r, a_x = views
        e_n, _ = self.online_forward(losses.interleave(n_x, n_r))
        e_a, _ = self.online_forward(losses.interleave(a_r, a_x))
        return e_n + e_a, e_n

    def compute_loss_terms(self, views, targets, seed):
        m, e_n = self.mixed_representations(views)
        loss = losses.repmix_xent_loss(m, self.temperature, self.reduction)
        return {"loss": loss, "z": m}

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "reduction": self.reduction})
        return config
