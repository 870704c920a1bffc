"""MYOL: Mixup Your Own Latent (Yang, Chen & Kang, ECAI 2024; docs/METHODS.md §2.2).

Its flags (name, default, help, bounds, the constructor argument each feeds):
`myol_settings.py`, importable without TensorFlow.
"""

import keras
import tensorflow as tf

from myol_keras import losses
from myol_keras.methods.base import BootstrapMethod


@keras.saving.register_keras_serializable(package="myol_keras")
class MYOL(BootstrapMethod):
    """BYOL plus a mixup regression term, as in the MYOL reference `algo.py`.

    Per step: `lam_i ~ Beta(alpha, alpha)` per sample (no `max(lam, 1-lam)`)
    and a random permutation `pi`; the mixed image
    `x~_i = lam_i x1_i + (1 - lam_i) x2_{pi(i)}` goes through the online
    network in its own forward pass, and its prediction regresses onto the
    same mixture of the *raw* target projections,
    `t~_i = lam_i z'1_i + (1 - lam_i) z'2_{pi(i)}`:
    `L = L_BYOL + gamma * mean_i l(p~_i, t~_i)`, in [0, 12]. The randomness
    is stateless, keyed on (seed, step, replica), so a resumed run draws the
    same lam and pi it would have drawn.

    Args:
        backbone: `keras.Model` from normalised images to features.
        alpha: Beta(alpha, alpha) parameter (reference: 2.0).
        gamma: weight of the mixup term (reference: 1.0).
        **kwargs: the `BYOL` arguments (heads, weight_decay, seed).

    Example:
    ```python
    model = myol_keras.MYOL(myol_keras.ResNet(18, width=16), alpha=2.0, gamma=1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    model.fit(two_view_dataset, callbacks=[myol_keras.EMATargetUpdate()])
    ```
    """

    loss_term_names = ("byol_loss", "mix_loss")

    def __init__(self, backbone, alpha=2.0, gamma=1.0, **kwargs):
        if not alpha > 0:
            raise ValueError(f"Expected `alpha` > 0. Received: alpha={alpha}")
        if gamma < 0:
            raise ValueError(f"Expected `gamma` >= 0. Received: gamma={gamma}")
        super().__init__(backbone, **kwargs)
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def sample_mixing(self, batch_size, seed):
        """`(lam, pi)` for one step: per-sample Beta(alpha, alpha), a permutation."""
        lam_seed, perm_seed = losses.split_seed(seed, 2)
        lam = losses.sample_beta(lam_seed, [batch_size], self.alpha)
        permutation = losses.sample_permutation(perm_seed, batch_size)
        return lam, permutation

    def compute_loss_terms(self, views, targets, seed):
        x1, x2 = views
        z1_target, z2_target = targets
        lam, permutation = self.sample_mixing(tf.shape(x1)[0], seed)
        mixed = losses.mix_images(x1, x2, lam, permutation)
        # The two views and the mixture: three online passes in the reference's
        # order (one stacked pass with per-view BatchNorm under `stack_views`).
        (z1, p1), (_, p2), (_, p_mixed) = self.online_forward_views([x1, x2, mixed])
        byol = losses.byol_loss(p1, p2, z1_target, z2_target)
        mix = losses.myol_mix_loss(p_mixed, z1_target, z2_target, lam, permutation)
        loss = byol + self.gamma * mix
        return {"loss": loss, "byol_loss": byol, "mix_loss": mix, "z": z1}

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "gamma": self.gamma})
        return config
