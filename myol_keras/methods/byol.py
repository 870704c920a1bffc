"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020; docs/METHODS.md §2.1)."""

import keras

from myol_keras.methods.base import BootstrapMethod


@keras.saving.register_keras_serializable(package="myol_keras")
class BYOL(BootstrapMethod):
    """BYOL as in the MYOL reference code (`algo.py: BYOL`).

    Each view is its own forward pass (BatchNorm statistics per view); the
    target runs in training mode under stop-gradient; the loss sums both
    directions: `L = mean_i [l(p1_i, z'2_i) + l(p2_i, z'1_i)]`, in [0, 8].

    Args:
        backbone: `keras.Model` from normalised images to features.
        projector_hidden_dim: projector hidden width (reference: 2048).
        projection_dim: projection/prediction size (reference: 128).
        predictor_hidden_dim: predictor hidden width (reference: 2048).
        weight_decay: coupled L2 (reference: 1e-4).
        seed: seed of the step randomness (unused by BYOL itself).

    Example:
    ```python
    backbone = myol_keras.ResNet(depth=18, stem="cifar", width=16)
    model = myol_keras.BYOL(backbone, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    model.fit(two_view_dataset, epochs=10,
              callbacks=[myol_keras.EMATargetUpdate(tau=0.996)])
    ```
    """

    loss_term_names = ("byol_loss",)

    def compute_loss_terms(self, views, targets, seed):
        z1, _, _, byol = self.byol_terms(views, targets)
        return {"loss": byol, "byol_loss": byol, "z": z1}
