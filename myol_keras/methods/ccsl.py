"""CCSL / CSSL (Jain & Garg, arXiv 2204.04545) — RECONSTRUCTIONS (docs/METHODS.md §2.7).

The official classes `BYOLContrastive` / `BYOLSigmoid` are imported but absent
from the authors' repository and the paper body could not be retrieved, so
these are "CCSL-like / CSSL-like" losses reconstructed from the abstract and
the scripts' arguments (theta+ = 0.8, theta- = 0.2). They are not the
official methods.

Its flags (name, default, help, bounds, the constructor argument each feeds):
`ccsl_settings.py`, importable without TensorFlow.
"""

import keras

from myol_keras import losses
from myol_keras.methods.base import BootstrapMethod


class _PseudoPairBYOL(BootstrapMethod):
    """Symmetric BYOL plus terms on pseudo-labelled cross-image pairs [RECON].

    Pseudo-labels (no gradient) from `c_ij = cos(z'1_i, z'2_j)`: positives
    `i != j, c_ij > theta_pos`, negatives `i != j, c_ij < theta_neg`. With
    `theta_pos > 1` and `theta_neg < -1` both sets are empty and the loss is
    exactly BYOL's.
    """

    loss_term_names = ("byol_loss", "pos_loss", "neg_loss")

    def __init__(self, backbone, theta_pos=0.8, theta_neg=0.2, pos_weight=1.0, neg_weight=1.0, **kwargs):
        super().__init__(backbone, **kwargs)
        self.theta_pos = float(theta_pos)
        self.theta_neg = float(theta_neg)
        self.pos_weight = float(pos_weight)
        self.neg_weight = float(neg_weight)

    def pair_terms(self, p, z, positive, negative):
        raise NotImplementedError

    def compute_loss_terms(self, views, targets, seed):
        z1_target, z2_target = targets
        z1, p1, p2, byol = self.byol_terms(views, targets)
        positive, negative = losses.pseudo_pair_masks(z1_target, z2_target, self.theta_pos, self.theta_neg)
        # direction 1: p1_i vs z'2_j uses c_ij; direction 2: p2_i vs z'1_j uses c_ji.
        pos_a, neg_a = self.pair_terms(p1, z2_target, positive, negative)
        pos_b, neg_b = self.pair_terms(p2, z1_target, keras.ops.transpose(positive), keras.ops.transpose(negative))
        pos, neg = pos_a + pos_b, neg_a + neg_b
        loss = byol + self.pos_weight * pos + self.neg_weight * neg
        return {"loss": loss, "byol_loss": byol, "pos_loss": pos, "neg_loss": neg, "z": z1}

    def get_config(self):
        config = super().get_config()
        config.update({
            "theta_pos": self.theta_pos, "theta_neg": self.theta_neg,
            "pos_weight": self.pos_weight, "neg_weight": self.neg_weight,
        })
        return config


@keras.saving.register_keras_serializable(package="myol_keras")
class CCSL(_PseudoPairBYOL):
    """CCSL-like (Cross-Cosine Similarity Loss) — a RECONSTRUCTION, not the official loss.

    `L = L_BYOL + w+ mean_P l(p1_i, z'2_j) + w- mean_N max(0, cos(p1_i, z'2_j))`,
    symmetrised over the views; empty sets contribute 0 (docs/METHODS.md §2.7).

    Args:
        backbone: `keras.Model` from normalised images to features.
        theta_pos: pseudo-positive threshold on the target cosine (0.8).
        theta_neg: pseudo-negative threshold (0.2).
        pos_weight, neg_weight: w+ and w- (1.0).
        **kwargs: the `BootstrapMethod` arguments.
    """

    def pair_terms(self, p, z, positive, negative):
        return losses.ccsl_terms(p, z, positive, negative)


@keras.saving.register_keras_serializable(package="myol_keras")
class CSSL(_PseudoPairBYOL):
    """CSSL-like (Cross-Sigmoid Similarity Loss) — a RECONSTRUCTION, not the official loss.

    Like `CCSL` but both extra terms are a binary cross-entropy on
    `sigmoid(cos(p_i, z'_j) / T)`, label 1 on pseudo-positives and 0 on
    pseudo-negatives. With T = 1 each pair's BCE is >= -log sigmoid(1) =
    0.313262, so these terms never reach 0.

    Args:
        temperature: T (1.0).
        Others as `CCSL`.
    """


    def __init__(self, backbone, temperature=1.0, **kwargs):
        if not temperature > 0:
            raise ValueError(f"Expected `temperature` > 0. Received: temperature={temperature}")
        super().__init__(backbone, **kwargs)
        self.temperature = float(temperature)

    def pair_terms(self, p, z, positive, negative):
        return losses.cssl_terms(p, z, positive, negative, self.temperature)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config
