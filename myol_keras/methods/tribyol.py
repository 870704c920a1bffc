"""TriBYOL (Li et al., ICASSP 2022) as in the MYOL reference `algo.py: TRIBYOL` (docs/METHODS.md §2.5)."""

import keras
import tensorflow as tf

from myol_keras import ema
from myol_keras import losses
from myol_keras.methods.base import BootstrapMethod, clone_layer


@keras.saving.register_keras_serializable(package="myol_keras")
class TriBYOL(BootstrapMethod):
    """One online network, two EMA targets A and B, three views.

    `L = mean_i [(l(p1, zA(x2)) + l(p2, zA(x1))) / 2 + (l(p1, zB(x3)) + l(p3, zB(x1))) / 2]`,
    in [0, 8]; 3 online and 4 target forwards per step. The targets start
    as copies of the online encoder + projector and are updated
    **alternately**: the update after step 1 moves A, after step 2 moves B,
    and so on (`update_targets`, called by `EMATargetUpdate`). No official
    TriBYOL code was found; whether the paper alternates is unverified, this
    follows the MYOL reference whose comparison numbers use it.

    `ema_pairs` lists the pairs of both targets (A first); a plain EMA over
    it would move both every step, so use `update_targets`.
    """

    loss_term_names = ("tribyol_loss",)
    num_views = 3

    def __init__(self, backbone, **kwargs):
        super().__init__(backbone, **kwargs)
        self.target_backbone_b = clone_layer(backbone)
        self.target_projector_b = self.make_projector("target_projector_b")
        if not self.target_backbone_b.built:
            self.target_backbone_b.build(backbone.input_shape)
        self.target_projector_b.build((None, self._feature_dim()))
        for target, online in self.ema_pairs_b:
            target.assign(online)

    @property
    def ema_pairs_a(self):
        return super().ema_pairs

    @property
    def ema_pairs_b(self):
        online = self.backbone.trainable_variables + self.projector.trainable_variables
        target = self.target_backbone_b.trainable_variables + self.target_projector_b.trainable_variables
        return list(zip(target, online))

    @property
    def ema_pairs(self):
        if getattr(self, "target_projector_b", None) is None or not self.target_projector_b.built:
            return self.ema_pairs_a  # during base construction
        return self.ema_pairs_a + self.ema_pairs_b

    def update_targets(self, tau, step):
        """Even steps (0-based) move target A, odd steps target B.

        The idle target gets `tau = 1`, i.e. `1 * xi + 0 * theta`: exactly unchanged.
        """
        even = tf.equal(tf.math.floormod(tf.cast(step, tf.int64), 2), 0)
        tau = tf.cast(tau, tf.float32)
        for pairs, active in ((self.ema_pairs_a, even), (self.ema_pairs_b, tf.logical_not(even))):
            tau_eff = tf.where(active, tau, 1.0)
            for target, online in pairs:
                ema.ema_assign(target, online, tau_eff)

    def target_forward_b(self, images):
        h = self.target_backbone_b(images, training=True)
        return tf.stop_gradient(self.target_projector_b(h, training=True))

    def compute_targets(self, views):
        # The official order (MYOL algo.py: TRIBYOL runs target A on x2 then x1, target B on x3 then x1): the
        # outputs do not depend on it, the targets' BatchNorm moving statistics do (tests/test_parity.py).
        x1, x2, x3 = views
        za2, za1 = self.target_forward(x2), self.target_forward(x1)
        zb3, zb1 = self.target_forward_b(x3), self.target_forward_b(x1)
        return [za1, za2, zb1, zb3]

    def compute_loss_terms(self, views, targets, seed):
        x1, x2, x3 = views
        za1, za2, zb1, zb3 = targets
        z1, p1 = self.online_forward(x1)
        _, p2 = self.online_forward(x2)
        _, p3 = self.online_forward(x3)
        loss = losses.tribyol_loss(p1, p2, p3, za1, za2, zb1, zb3)
        return {"loss": loss, "tribyol_loss": loss, "z": z1}
