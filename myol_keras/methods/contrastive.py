"""The contrastive baselines of the MYOL reference: SimCLR and MoCo (docs/METHODS.md §2.8-2.9).

Its flags (name, default, help, bounds, the constructor argument each feeds):
`contrastive_settings.py`, importable without TensorFlow.
"""

import keras
import tensorflow as tf

from myol_keras import losses
from myol_keras.methods.base import BootstrapMethod
from myol_keras.methods.family_heads import ContrastiveHead


@keras.saving.register_keras_serializable(package="myol_keras")
class SimCLR(BootstrapMethod):
    """SimCLR as in MYOL `algo.py: SIMCLR` (docs/METHODS.md §2.8).

    `z = n(g(f([x1; x2])))` in **one** forward of 2B images (BatchNorm over
    2B); the head is `Linear-ReLU-Linear` with no BatchNorm; NT-Xent with
    `temperature` 0.07, the self-similarity excluded, averaged over the 2B
    anchors. No predictor, no target, no EMA (`ema_pairs` is empty).
    `predictor_hidden_dim` is accepted for a uniform interface and unused.

    Args:
        backbone: `keras.Model` from normalised images to features.
        temperature: softmax temperature (reference: 0.07; standard SimCLR 0.5 on CIFAR).
        **kwargs: the `BootstrapMethod` arguments.
    """

    loss_term_names = ()
    uses_predictor = False
    uses_target = False

    def __init__(self, backbone, temperature=0.07, **kwargs):
        if not temperature > 0:
            raise ValueError(f"Expected `temperature` > 0. Received: temperature={temperature}")
        super().__init__(backbone, **kwargs)
        self.temperature = float(temperature)

    def make_projector(self, name):
        return ContrastiveHead(self.projector_hidden_dim, self.projection_dim, batch_norm=False, name=name)

    def compute_targets(self, views):
        return []

    def compute_loss_terms(self, views, targets, seed):
        x1, x2 = views
        z, _ = self.online_forward(tf.concat([x1, x2], axis=0))
        loss = losses.simclr_loss(z, self.temperature)
        return {"loss": loss, "z": z[: tf.shape(x1)[0]]}

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config


@keras.saving.register_keras_serializable(package="myol_keras")
class MoCo(BootstrapMethod):
    """MoCo ("v2-style") as in MYOL `algo.py: MOCO` (docs/METHODS.md §2.9).

    `q = n(enc_q(x1))`, `k = n(sg(enc_k(x2)))` with `enc = f + Linear-ReLU-Linear`
    (no BatchNorm in the head) and `enc_k` the EMA target (tau from
    `EMATargetUpdate`, 0.996 in the reference; the reference's update at the
    start of the forward is the same ordering as after the step). Logits
    `[q.k, q Q^T] / temperature`, cross-entropy with label 0, then `k` is
    enqueued FIFO. One direction, no shuffle-BN. The queue (`[K, d]`,
    N(0, 1) rows L2-normalised) and its pointer are non-trainable model
    variables, so `BackupAndRestore` checkpoints them.

    Args:
        backbone: `keras.Model` from normalised images to features.
        queue_size: K (reference: 4096; K mod B = 0 keeps batches contiguous,
            otherwise the write wraps around).
        temperature: 0.07 in the reference.
        **kwargs: the `BootstrapMethod` arguments.
    """

    loss_term_names = ()
    uses_predictor = False

    def __init__(self, backbone, queue_size=4096, temperature=0.07, **kwargs):
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"Expected `queue_size` to be a positive integer. Received: queue_size={queue_size!r}")
        if not temperature > 0:
            raise ValueError(f"Expected `temperature` > 0. Received: temperature={temperature}")
        super().__init__(backbone, **kwargs)
        self.queue_size = queue_size
        self.temperature = float(temperature)
        initial = losses.l2_normalize(
            tf.random.stateless_normal([queue_size, self.projection_dim], seed=[self.seed, 4096])
        )
        self.queue = self.add_weight(
            shape=(queue_size, self.projection_dim), initializer=keras.initializers.Constant(0.0),
            trainable=False, name="queue", dtype="float32",
        )
        self.queue.assign(initial)
        self.queue_pointer = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="queue_pointer", dtype="int32"
        )

    def make_projector(self, name):
        return ContrastiveHead(self.projector_hidden_dim, self.projection_dim, batch_norm=False, name=name)

    def compute_targets(self, views):
        """The keys: normalised target projections of view 2."""
        return [losses.l2_normalize(self.target_forward(views[1]))]

    def compute_loss_terms(self, views, targets, seed):
        (k,) = targets
        q, _ = self.online_forward(views[0])
        loss = losses.moco_loss(q, k, self.queue, self.temperature)
        return {"loss": loss, "z": q}

    def after_step(self, views, targets, terms):
        queue, pointer = losses.enqueue(self.queue, targets[0], self.queue_pointer)
        self.queue.assign(queue)
        self.queue_pointer.assign(pointer)

    def get_config(self):
        config = super().get_config()
        config.update({"queue_size": self.queue_size, "temperature": self.temperature})
        return config
