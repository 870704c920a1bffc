"""i-Mix (Lee et al., ICLR 2021) in its BYOL form (docs/METHODS.md §2.4a).

Its flags (name, default, help, bounds, the constructor argument each feeds):
`imix_settings.py`, importable without TensorFlow.
"""

import keras
import tensorflow as tf

from myol_keras import losses
from myol_keras.methods.base import BootstrapMethod


@keras.saving.register_keras_serializable(package="myol_keras")
class IMix(BootstrapMethod):
    """i-Mix, BYOL variant: identical in MYOL `algo.py: IMIX` and `kibok90/imix` `builder.py`.

    Per sample `lam_i ~ Beta(alpha, alpha)` then `lam_i <- max(lam_i, 1 - lam_i)`
    (so `lam >= 0.5`), a random permutation `pi`, and
    `x~_i = lam_i x1_i + (1 - lam_i) x1_{pi(i)}` (both sources from view 1).
    With `q = p(x~)` online and `k = z'(x2)` from the target,
    `L = mean_i [lam_i l(q_i, k_i) + (1 - lam_i) l(q_i, k_{pi(i)})]`:
    one direction, no un-mixed BYOL term; `x2` is only seen by the target.

    Args:
        backbone: `keras.Model` from normalised images to features.
        alpha: Beta(alpha, alpha) (reference: 1.0).
        **kwargs: the `BootstrapMethod` arguments.
    """

    loss_term_names = ("imix_loss",)

    def __init__(self, backbone, alpha=1.0, **kwargs):
        if not alpha > 0:
            raise ValueError(f"Expected `alpha` > 0. Received: alpha={alpha}")
        super().__init__(backbone, **kwargs)
        self.alpha = float(alpha)

    def draw_mixing(self, batch_size, seed):
        """`(lam, pi)`: the raw per-sample Beta(alpha, alpha) draws (before the max), a permutation."""
        lam_seed, perm_seed = losses.split_seed(seed, 2)
        return losses.sample_beta(lam_seed, [batch_size], self.alpha), losses.sample_permutation(perm_seed, batch_size)

    def sample_mixing(self, batch_size, seed):
        """`(lam, pi)`: per-sample max(lam, 1 - lam) of `draw_mixing`'s Beta draws, its permutation."""
        lam, permutation = self.draw_mixing(batch_size, seed)
        return losses.imix_lambda(lam), permutation

    def compute_targets(self, views):
        """Only view 2 goes through the target (the keys)."""
        return [self.target_forward(views[1])]

    def compute_loss_terms(self, views, targets, seed):
        x1 = views[0]
        (k,) = targets
        lam, permutation = self.sample_mixing(tf.shape(x1)[0], seed)
        z, q = self.online_forward(losses.mix_images(x1, x1, lam, permutation))
        loss = losses.imix_byol_loss(q, k, lam, permutation)
        return {"loss": loss, "imix_loss": loss, "z": z}

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha})
        return config
