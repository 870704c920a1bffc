"""Un-Mix (Shen et al., AAAI 2022) in the BYOL form of the MYOL reference (docs/METHODS.md §2.3a).

Its flags (name, default, help, bounds, the constructor argument each feeds):
`unmix_settings.py`, importable without TensorFlow.
"""

import keras
import tensorflow as tf

from myol_keras import losses
from myol_keras.methods.base import BootstrapMethod


@keras.saving.register_keras_serializable(package="myol_keras")
class UnMix(BootstrapMethod):
    """BYOL plus Un-Mix's batch-reversal mixtures (MYOL `algo.py: UNMIX`).

    Per step, one scalar `lam ~ U(0, 1)` (Beta(1, 1), no max) and a coin
    `r ~ U(0, 1)`: if `r < mix_prob` the mixture is global mixup
    `x~ = lam x1 + (1 - lam) R(x1)`, otherwise CutMix (the `rand_bbox(lam)`
    box of `R(x1)` pasted into `x1`, and `lam` recomputed as
    `1 - area / HW`). `R` reverses the batch. `x~` and `x~R = R(x~)` are two
    separate online forwards, and
    `L = L_BYOL + lam mean l(p~, z't) + (1 - lam) mean l(p~R, z't)`
    with `z't = z'1` (the mixed view's own target, the MYOL reference) or
    `z'2` (`target_view="x2"`, the pairing of the official README recipe).

    Args:
        backbone: `keras.Model` from normalised images to features.
        mix_prob: probability of global mixup vs CutMix (reference: 0.5).
        target_view: `"x1"` (MYOL reference) or `"x2"`.
        **kwargs: the `BootstrapMethod` arguments.
    """

    loss_term_names = ("byol_loss", "unmix_loss")

    def __init__(self, backbone, mix_prob=0.5, target_view="x1", **kwargs):
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"Expected `mix_prob` in [0, 1]. Received: mix_prob={mix_prob}")
        if target_view not in ("x1", "x2"):
            raise ValueError(f"Expected `target_view` in ('x1', 'x2'). Received: target_view={target_view!r}")
        super().__init__(backbone, **kwargs)
        self.mix_prob = float(mix_prob)
        self.target_view = target_view

    def sample_mixing(self, images, seed):
        """`(use_mixup, lam, cx, cy)` for this step (per batch)."""
        shape = tf.shape(images)
        return losses.sample_unmix(seed, shape[1], shape[2], self.mix_prob)

    def compute_loss_terms(self, views, targets, seed):
        x1, _ = views
        z1_target, z2_target = targets
        z1, _, _, byol = self.byol_terms(views, targets)

        use_mixup, lam, cx, cy = self.sample_mixing(x1, seed)
        mixed, lam = losses.unmix_images(x1, use_mixup, lam, cx, cy)
        _, p_mixed = self.online_forward(mixed)
        _, p_reversed = self.online_forward(losses.reverse_batch(mixed))
        z_target = z1_target if self.target_view == "x1" else z2_target
        unmix = losses.unmix_loss(p_mixed, p_reversed, z_target, lam)
        return {"loss": byol + unmix, "byol_loss": byol, "unmix_loss": unmix, "z": z1}

    def get_config(self):
        config = super().get_config()
        config.update({"mix_prob": self.mix_prob, "target_view": self.target_view})
        return config
