"""The shared base of the BYOL family: online/target networks and one `train_step`.

A method subclass adds only its loss terms (`compute_loss_terms`), the way
each section of `docs/METHODS.md` adds a term to BYOL. The base owns:

* the online encoder (backbone + projector) and the predictor;
* the target encoder, an EMA copy of backbone + projector with no predictor.
  It stays *trainable* (so its BatchNorm normalises with batch statistics and
  updates its own moving statistics, as in the reference) but is never in the
  optimizer: the optimizer is built explicitly on `optimized_variables` in
  `compile` (docs/DECISIONS.md §4.3). The EMA itself is `EMATargetUpdate`'s job;
* coupled L2 weight decay (`grad += wd * w` on every optimized parameter,
  as torch's SGD `weight_decay`), loss scaling for `mixed_float16`, and
  stateless per-step seeds for the mixing randomness;
* loss trackers and the collapse monitor `z_std`.

**Stacked views** (`stack_views=True`, opt-in): the views of a step go
through each network in one forward pass, stacked along the batch axis, with
BatchNorm statistics per view (`batchnorm.view_groups`): the same outputs,
gradients and moving statistics as one pass per view (docs/METHODS.md §1.4, tested to
float tolerance), in half the convolution calls or fewer. The default,
`stack_views=False`, runs one pass per view, as the reference code does: on
the 2-core avx512_bf16 CPU of issue 17 the stacked pass did not measurably
speed the step up (docs/PERFORMANCE.md); it is there for hardware where
larger convolutions pay.

**Gradient pass**: `train_step` marks the forward passes under its
`GradientTape` with `scoped.GRADIENT_PASS`. Layers with a training-only fast
path read it and their lever themselves (a process-wide scoped setting an
entry point opens around `fit`, never an argument of the model), so the step
names none of them and a saved config carries no speed switch.

Two optional fast paths leave the algorithm unchanged:

* **in-step EMA** (`set_in_step_ema`, or `EMATargetUpdate(in_step=True)`): the
  target update runs inside `train_step`, right after the optimizer step, with
  the same tau, instead of in a callback. Keras runs batch callbacks once per
  *execution*, so this is what makes `compile(steps_per_execution=k)` exact;
* **on-device augmentation** (`set_device_augmentation`): the dataset yields
  raw `uint8` batches with their stateless batch seed
  (`data.epoch_pipeline(images, None, ...)`) and the views are computed inside
  the training step, on the accelerator, with the very same view function.
"""

import keras
import tensorflow as tf

from myol_keras import augment
from myol_keras import batchnorm
from myol_keras import distribute
from myol_keras import ema
from myol_keras import heads as heads_lib
from myol_keras import losses
from myol_keras import scoped

#: constructor arguments that older versions stored in `get_config` and that
#: are no longer arguments (performance levers moved to scoped settings):
#: `from_config` drops them, so their saved models and configs still load.
RETIRED_ARGUMENTS = ("gemm_weight_gradient_side",)


def clone_layer(layer):
    """A fresh copy of `layer` with the same architecture and weights."""
    clone = layer.__class__.from_config(layer.get_config())
    return clone


class BootstrapMethod(distribute.MultiWorkerFitWorkaround, keras.Model):
    """Base class of BYOL-family methods (not registered; use a subclass).

    Args:
        backbone: a `keras.Model` from normalised images to features, e.g.
            `myol_keras.ResNet(18, stem="cifar")`. It becomes the online
            backbone; the target is a copy with the same initial weights.
        projector_hidden_dim: hidden width of the projector MLP.
        projection_dim: output size of projector and predictor.
        predictor_hidden_dim: hidden width of the predictor MLP.
        weight_decay: coupled L2 coefficient (added to the gradients).
        seed: integer seed of the stateless mixing randomness.
        stack_views: run the views of a step through each network in one
            forward pass with per-view BatchNorm statistics (same results as
            one pass per view); False (the default): one pass per view.
    """

    #: names of the loss terms a subclass returns besides "loss".
    loss_term_names = ()
    #: how many augmented views a training batch must hold.
    num_views = 2
    #: whether each image comes with a counterpart drawn from the whole
    #: training set (representation mixing, §2.6); `training.build_dataset`
    #: reads it, and `make_view_fn` turns (image, counterpart) into views.
    needs_counterparts = False
    #: whether the online branch has a predictor (SimCLR and MoCo have none).
    uses_predictor = True
    #: whether there is an EMA target encoder (SimCLR has none).
    uses_target = True

    def __init__(
        self,
        backbone,
        projector_hidden_dim=2048,
        projection_dim=128,
        predictor_hidden_dim=2048,
        weight_decay=0.0,
        seed=0,
        stack_views=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("projector_hidden_dim", projector_hidden_dim),
            ("projection_dim", projection_dim),
            ("predictor_hidden_dim", predictor_hidden_dim),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"Expected `{name}` to be a positive integer. Received: {name}={value!r}"
                )
        if weight_decay < 0:
            raise ValueError(
                f"Expected `weight_decay` >= 0. Received: weight_decay={weight_decay}"
            )
        if not isinstance(backbone, keras.Model):
            raise ValueError(
                "Expected `backbone` to be a keras.Model mapping images to features. "
                f"Received: backbone={backbone!r}"
            )
        self.backbone = backbone
        self.projector_hidden_dim = projector_hidden_dim
        self.projection_dim = projection_dim
        self.predictor_hidden_dim = predictor_hidden_dim
        self.weight_decay = float(weight_decay)
        self.seed = int(seed)
        self.stack_views = bool(stack_views)

        self.projector = self.make_projector("projector")
        self.predictor = self.make_predictor() if self.uses_predictor else None
        if self.uses_target:
            self.target_backbone = clone_layer(backbone)
            self.target_projector = self.make_projector("target_projector")
        else:
            self.target_backbone = self.target_projector = None
        self._build_networks()

        self._in_step_ema = None  # (tau, schedule, total_steps) when the EMA runs in train_step
        self._device_view_fn = None  # views computed in train_step from raw batches

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.term_trackers = [
            keras.metrics.Mean(name=name) for name in self.loss_term_names
        ]
        self.z_std_tracker = keras.metrics.Mean(name="z_std")

    # --- what the method trains on ------------------------------------------

    @classmethod
    def make_view_fn(cls, image_size, mean, std, seed=0):
        """The augmentation the method trains on: `(batch, seed) -> num_views views`.

        The default is `num_views` MYOL-recipe views (docs/METHODS.md §1.6), view `i`
        seeded with `seed + 1000 i`; a method with other needs overrides it.

        Args:
            image_size: output size of every view.
            mean, std: normalisation statistics (three floats each).
            seed: the run's seed.
        """
        recipes = [augment.myol_view_recipe(image_size, mean, std, seed=seed + 1000 * i) for i in range(cls.num_views)]
        return augment.make_view_fn(recipes)

    # --- construction -----------------------------------------------------

    def make_projector(self, name):
        """The projector g (online and target); override for other heads."""
        return heads_lib.projection_head(self.projector_hidden_dim, self.projection_dim, name=name)

    def make_predictor(self):
        """The predictor q (only when `uses_predictor`)."""
        return heads_lib.prediction_head(self.predictor_hidden_dim, self.projection_dim)

    def _build_networks(self):
        """Build every sub-network and copy online weights into the target."""
        feature_dim = self._feature_dim()
        self.projector.build((None, feature_dim))
        if self.predictor is not None:
            self.predictor.build((None, self.projection_dim))
        if self.target_backbone is not None:
            if not self.target_backbone.built:
                self.target_backbone.build(self.backbone.input_shape)
            self.target_projector.build((None, feature_dim))
        for target, online in self.ema_pairs:
            target.assign(online)
        self.built = True

    def _feature_dim(self):
        feature_dim = getattr(self.backbone, "feature_dim", None)
        if feature_dim is None:
            feature_dim = self.backbone.output_shape[-1]
        return int(feature_dim)

    @property
    def optimized_variables(self):
        """What the optimizer updates: online backbone, projector, predictor."""
        variables = self.backbone.trainable_variables + self.projector.trainable_variables
        if self.predictor is not None:
            variables = variables + self.predictor.trainable_variables
        return variables

    @property
    def ema_pairs(self):
        """`(target, online)` parameter pairs for the EMA (no BN statistics)."""
        if self.target_backbone is None:
            return []
        online = self.backbone.trainable_variables + self.projector.trainable_variables
        target = (
            self.target_backbone.trainable_variables
            + self.target_projector.trainable_variables
        )
        if len(online) != len(target):
            raise ValueError(
                "Online and target networks differ in structure "
                f"({len(online)} vs {len(target)} parameters)."
            )
        return list(zip(target, online))

    def update_targets(self, tau, step):
        """The EMA after optimizer step `step` (0-based); `EMATargetUpdate` calls it.

        The default moves every pair of `ema_pairs`; TriBYOL overrides it to
        alternate its two targets.
        """
        del step
        ema.ema_update(self.ema_pairs, tau)

    def set_in_step_ema(self, tau=0.996, schedule="constant", total_steps=None):
        """Run the EMA target update inside `train_step`, after the optimizer step.

        Same update and tau as `EMATargetUpdate` (tau a function of the step
        just taken), but in the step's graph: exact with
        `compile(steps_per_execution=k)`, where a batch callback would run only
        once every k steps. `EMATargetUpdate(in_step=True)` calls this for you.
        `set_in_step_ema(None)` goes back to the callback.

        Args:
            tau: base EMA momentum, or None to turn the in-step update off.
            schedule: `"constant"` or `"cosine"`.
            total_steps: total optimizer steps (needed for `cosine`).

        Example:
            model.set_in_step_ema(0.996)
            model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), steps_per_execution=8)
        """
        config = None
        if tau is not None:
            ema.ema_tau(0, tau, schedule, total_steps)  # validates
            config = (float(tau), schedule, total_steps)
        if config != self._in_step_ema:
            self._in_step_ema = config
            self.train_function = None  # the next fit traces the step again

    @property
    def in_step_ema(self):
        """`(tau, schedule, total_steps)` when the EMA runs in `train_step`, else None."""
        return self._in_step_ema

    def set_device_augmentation(self, view_fn):
        """Compute the views inside `train_step` from raw batches.

        The dataset then yields `{"images": uint8 batch, "seed": [batch, 2]}`
        (`myol_keras.data.epoch_pipeline(images, None, ...)`), so the
        augmentation runs where the step runs (a GPU, say) instead of in
        tf.data's CPU threads. With one replica the views equal the host
        pipeline's for the same seed; each extra replica folds its id into
        the batch seed.

        Args:
            view_fn: `(batch, seed) -> tuple of views`, e.g.
                `augment.make_view_fn(recipes)`; None turns it off.

        Example:
            model.set_device_augmentation(augment.make_view_fn([recipe1, recipe2]))
            model.fit(data.epoch_pipeline(images, None, 256), steps_per_epoch=195)
        """
        if view_fn is not None and not callable(view_fn):
            raise ValueError(f"Expected `view_fn` to be callable or None. Received: view_fn={view_fn!r}")
        if view_fn is not self._device_view_fn:
            self._device_view_fn = view_fn
            self.train_function = None

    def compile(self, optimizer="sgd", **kwargs):
        """Compile, then build the optimizer on `optimized_variables` only.

        Building it explicitly keeps target variables out of the optimizer and
        lets `BackupAndRestore` restore `iterations` and the momentum slots.
        """
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.optimized_variables)

    # --- forward passes ---------------------------------------------------

    def call(self, inputs, training=False):
        """The online backbone's features (what gets exported)."""
        return self.backbone(inputs, training=training)

    def online_forward(self, images, training=True):
        """`(z, p)`: online projection and prediction (None without predictor)."""
        with tf.name_scope("online"):  # names the ops in traces (benchmarks/profile_step.py)
            z = self.projector(self.backbone(images, training=training), training=training)
            if self.predictor is None:
                return z, None
            p = self.predictor(z, training=training)
            return z, p

    def target_forward(self, images):
        """Target projection of one view: training-mode BN, no gradient."""
        with tf.name_scope("target"):
            h = self.target_backbone(images, training=True)
            return tf.stop_gradient(self.target_projector(h, training=True))

    def _per_view(self, forward, images):
        """`forward` of each batch in `images`: one stacked pass with per-view BN, or one pass each."""
        images = list(images)
        if not self.stack_views or len(images) == 1:
            return [forward(x) for x in images]
        k = len(images)
        with batchnorm.view_groups(k):
            out = forward(tf.concat(images, axis=0))
        if isinstance(out, tuple):
            parts = [tf.split(o, k, axis=0) if o is not None else [None] * k for o in out]
            return list(zip(*parts))
        return tf.split(out, k, axis=0)

    def online_forward_views(self, images):
        """`[(z, p), ...]`: `online_forward` of each batch in `images` (views of equal size).

        With `stack_views` one forward pass over the stacked batches, each
        normalised with its own BatchNorm statistics, the moving statistics
        moving in list order — what one `online_forward` per batch gives.
        """
        return self._per_view(self.online_forward, images)

    def target_forward_views(self, images):
        """`target_forward` of each batch in `images`, stacked like `online_forward_views`."""
        return self._per_view(self.target_forward, images)

    # --- the step -----------------------------------------------------------

    def mixing_seed(self):
        """The stateless seed of this step: (seed, iterations, replica id)."""
        replica = tf.distribute.get_replica_context()
        replica_id = 0 if replica is None else replica.replica_id_in_sync_group
        return losses.step_seed(self.seed, self.optimizer.iterations, replica_id)

    def byol_terms(self, views, targets):
        """BYOL's per-view online passes and loss (docs/METHODS.md §2.1), shared by the family.

        Returns:
            `(z1, p1, p2, byol_loss)`: the online projection of view 1 (for the
            collapse monitor), both predictions and the symmetrised loss.
        """
        (z1, p1), (_, p2) = self.online_forward_views(views[:2])
        return z1, p1, p2, losses.byol_loss(p1, p2, targets[0], targets[1])

    def compute_targets(self, views):
        """Target projections of every view, computed outside the tape (no gradient is recorded)."""
        return self.target_forward_views(views)

    def compute_loss_terms(self, views, targets, seed):
        """Return a dict with "loss", each of `loss_term_names`, and "z" (for the monitor)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement compute_loss_terms()."
        )

    def after_step(self, views, targets, terms):
        """Runs after the optimizer update (MoCo enqueues its keys here)."""

    def _device_views(self, data):
        """The views of a raw batch `{"images", "seed"}`, computed here (on the device)."""
        if self._device_view_fn is None:
            raise ValueError(
                f"{type(self).__name__} received raw image batches (a dataset built with "
                "`view_fn=None`) but has no view function: call "
                "`model.set_device_augmentation(view_fn)` first, or augment in tf.data."
            )
        seed = tf.cast(data["seed"][0], tf.int64)  # every row holds the batch seed
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            seed = tf.random.experimental.stateless_fold_in(seed, replica.replica_id_in_sync_group)
        images = data["images"]
        if isinstance(images, (tuple, list)):
            return self._device_view_fn(*images, seed=seed)
        return self._device_view_fn(images, seed=seed)

    def _unpack_views(self, data):
        if isinstance(data, dict) and "images" in data:
            data = self._device_views(data)
        elif isinstance(data, dict):
            data = data["views"]
        views = list(data) if isinstance(data, (tuple, list)) else [data]
        if len(views) < self.num_views:
            raise ValueError(
                f"{type(self).__name__} needs {self.num_views} views per batch; "
                f"the dataset yields {len(views)}. Build it with "
                "myol_keras.augment.make_view_fn([recipe] * num_views)."
            )
        return views[: self.num_views]

    def train_step(self, data):
        views = self._unpack_views(data)
        seed = self.mixing_seed()
        targets = self.compute_targets(views)
        variables = self.optimized_variables
        # Under a tf.distribute strategy the optimizer *sums* the replicas'
        # gradients, so each replica's loss is divided by the replica count
        # (a mean over the global batch), as Keras' own train_step does.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape, scoped.GRADIENT_PASS.set(True):
            terms = self.compute_loss_terms(views, targets, seed)
            loss = tf.cast(terms["loss"], tf.float32)
            scaled_loss = self.optimizer.scale_loss(loss / replicas)
        gradients = tape.gradient(scaled_loss, variables)
        if self.weight_decay:
            # Coupled L2 (torch SGD weight_decay), scaled like the loss so the
            # LossScaleOptimizer's unscaling leaves exactly wd * w. Each
            # replica adds wd * w / R: every replica holds the same mirrored
            # w, so the cross-replica sum adds wd * w once (not R * wd * w).
            decay = self.optimizer.scale_loss(self.weight_decay) / replicas
            gradients = [
                g + tf.cast(decay, g.dtype) * tf.cast(v, g.dtype)
                for g, v in zip(gradients, variables)
            ]
        self.optimizer.apply(gradients, variables)
        self.after_step(views, targets, terms)
        if self._in_step_ema is not None:
            self._update_targets_in_step()

        self.loss_tracker.update_state(loss)
        for tracker in self.term_trackers:
            tracker.update_state(terms[tracker.name])
        self.z_std_tracker.update_state(losses.embedding_std(terms["z"]))
        return {m.name: m.result() for m in self.metrics}

    def _update_targets_in_step(self):
        """The EMA of `EMATargetUpdate`, inside the step (see `set_in_step_ema`)."""
        # Like Keras' optimizer: under a strategy this runs in replica context
        # (each replica moves its own copy of the mirrored targets, see
        # `ema.ema_assign`) or, where the strategy needs it, in a merge
        # call; plain merge_call fails inside the steps_per_execution loop.
        tf.__internal__.distribute.interim.maybe_merge_call(
            lambda _: ema.ema_after_step(self, *self._in_step_ema), tf.distribute.get_strategy()
        )

    def test_step(self, data):
        views = self._unpack_views(data)
        targets = self.compute_targets(views)
        terms = self.compute_loss_terms(views, targets, self.mixing_seed())
        self.loss_tracker.update_state(terms["loss"])
        for tracker in self.term_trackers:
            tracker.update_state(terms[tracker.name])
        self.z_std_tracker.update_state(losses.embedding_std(terms["z"]))
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [self.loss_tracker, *self.term_trackers, self.z_std_tracker]

    # --- serialisation ------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "projector_hidden_dim": self.projector_hidden_dim,
                "projection_dim": self.projection_dim,
                "predictor_hidden_dim": self.predictor_hidden_dim,
                "weight_decay": self.weight_decay,
                "seed": self.seed,
                "stack_views": self.stack_views,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = {k: v for k, v in config.items() if k not in RETIRED_ARGUMENTS}
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
