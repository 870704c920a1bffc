"""SuNCEt: SimCLR plus a supervised NCE term on a small class-balanced labelled batch (METHODS §2.11).

Its flags (name, default, help, bounds, the constructor argument each feeds):
`suncet_settings.py`, importable without TensorFlow.

The labelled batch of every step (`LabelledBatches`): C classes x s images,
drawn from a labelled share (`labels_fraction`, 10 %) of every class of the
**training split** — chosen per class with the run's seed — so no labelled
image comes from an evaluation split. Each is augmented once with the
pre-training view recipe (the official config's one supervised view). Which
images a step sees and how they are augmented are pure functions of
`(seed, step)`, so a resumed run sees what it would have seen.

On R replicas (`--strategy=mirrored` / `multi_worker`) each replica gets its
own C x s block over the step's same C classes (the stream carries R blocks,
which `tf.distribute` splits one per replica), and the term compares each
replica's anchors with the labelled rows all-gathered from every replica,
gradient included (`gathered_suncet_loss`), as the official code on R ranks.
"""

import keras
import numpy as np
import tensorflow as tf

from myol_keras import augment
from myol_keras import labelled_batches
from myol_keras import losses
from myol_keras.methods.contrastive import SimCLR

#: classes per labelled batch when `classes_per_batch=0`: every class, at most the official ImageNet config's 20.
MAX_AUTO_CLASSES = 20
_LABELLED_SEED = 0x5C7  # folded with the step into the labelled batch's augmentation seed


def resolve_classes_per_batch(classes_per_batch, num_classes):
    """C: `classes_per_batch`, or for 0 every class up to `MAX_AUTO_CLASSES`."""
    return int(classes_per_batch) if classes_per_batch else min(int(num_classes), MAX_AUTO_CLASSES)


class LabelledBatches:
    """SuNCEt's labelled batch of every step, as a `tf.data` stream to zip with the pre-training one.

    Step `t`'s batch holds `C * s` images of the labelled subset
    (`labelled_batches.ClassBalancedSampler`: row `j * C + i` is image j of
    the step's class i), one augmented view of each, their targets `[C*s, C]`
    (one-hot over the step's classes, the official `make_labels_matrix`) and
    the epoch `t // steps_per_epoch` on every row (the model switches the term
    off after its `supervised_epochs`). For R replicas (`attach(...,
    replicas=R)`) it holds R such blocks over the same classes, one per replica.

    Args:
        images: `uint8 [N, H, W, 3]` training-split images (an array or `np.memmap`).
        labels: `int [N]` their class ids.
        classes_per_batch: C (0: every class, at most 20).
        images_per_class: s.
        fraction: labelled share of every class.
        seed: the run's seed (subset, batches and augmentation).
        steps_per_epoch: optimizer steps per epoch.
        image_size, mean, std: the view recipe's size and normalisation.

    Example:
    ```python
    batches = LabelledBatches(x_train, y_train, 10, 2, 0.1, seed=0, steps_per_epoch=195, image_size=32,
                              mean=mean, std=std)
    ds = batches.attach(pretraining_stream, start_epoch=0, replicas=strategy.num_replicas_in_sync)
    ```
    """

    def __init__(self, images, labels, classes_per_batch, images_per_class, fraction, seed, steps_per_epoch,
                 image_size, mean, std):
        labels = np.asarray(labels).astype(np.int64)
        if len(images) != len(labels):
            raise ValueError(f"Expected as many labels as images. Received: {len(labels)} labels, {len(images)} images")
        self.images = images
        self.labels = labels
        self.classes_per_batch = resolve_classes_per_batch(classes_per_batch, np.unique(labels).size)
        self.images_per_class = int(images_per_class)
        self.sampler = labelled_batches.ClassBalancedSampler(labels, self.classes_per_batch, self.images_per_class,
                                                             fraction, seed)
        self.seed = int(seed)
        self.steps_per_epoch = int(steps_per_epoch)
        self.image_size = int(image_size)
        recipe = augment.myol_view_recipe(image_size, mean, std, seed=seed + 3000)
        self._view_fn = augment.make_view_fn([recipe])

    @property
    def batch_size(self):
        """C * s: the labelled rows of one replica's step."""
        return self.classes_per_batch * self.images_per_class

    def raw_batch(self, step, replicas=1):
        """Step `step`'s `(uint8 images [R*C*s, H, W, 3], int64 labels [R*C*s], float32 targets [R*C*s, C])`.

        R = `replicas` blocks of C*s rows, one per replica, each class-balanced
        over the same C classes (`ClassBalancedSampler.batch`).
        """
        index = self.sampler.batch(int(step), replicas)
        labels = self.labels[index]
        order = np.argsort(index, kind="stable")  # a memory-mapped array reads best in file order
        images = np.empty((index.size, *self.images.shape[1:]), np.uint8)
        images[order] = np.asarray(self.images[index[order]])
        classes = labels[: self.classes_per_batch]  # row i holds the step's class i
        targets = (labels[:, None] == classes[None, :]).astype(np.float32)
        return images, labels, targets

    def dataset(self, start_step=0, replicas=1):
        """The stream of steps `start_step, start_step + 1, ...`: dicts `labelled`, `labelled_targets`, `epoch`.

        Each holds `replicas * C * s` rows: the global labelled batch, which
        `tf.distribute` splits into one class-balanced block per replica.
        """
        rows = int(replicas) * self.batch_size
        shape = (rows, *self.images.shape[1:])

        def load(step):
            images, targets = tf.numpy_function(lambda s: self.raw_batch(s, replicas)[::2], [step],
                                                [tf.uint8, tf.float32], stateful=False)
            images = tf.ensure_shape(images, shape)
            targets = tf.ensure_shape(targets, (rows, self.classes_per_batch))
            seed = tf.random.experimental.stateless_fold_in(tf.constant([self.seed, _LABELLED_SEED], tf.int64), step)
            (view,) = self._view_fn(images, seed=seed)
            epoch = tf.cast(step // self.steps_per_epoch, tf.int32)
            return {"labelled": view, "labelled_targets": targets,
                    "epoch": tf.fill([rows], epoch)}

        steps = tf.data.Dataset.range(int(start_step), np.iinfo(np.int64).max)
        return steps.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def attach(self, ds, start_epoch=0, replicas=1):
        """Zip the pre-training stream `ds` (views, or device-mode raw batches) with the labelled stream.

        `replicas`: the strategy's `num_replicas_in_sync`; every step then
        carries one C x s block per replica (`dataset`).
        """

        def merge(batch, extra):
            return {**(batch if isinstance(batch, dict) else {"views": batch}), **extra}

        labelled = self.dataset(int(start_epoch) * self.steps_per_epoch, replicas)
        return tf.data.Dataset.zip((ds, labelled)).map(merge).prefetch(tf.data.AUTOTUNE)


def gathered_suncet_loss(z, targets, temperature):
    """`losses.suncet_loss` of this replica's labelled rows against every replica's (the code's `AllGather`).

    On one replica the plain loss. On R, `z` and `targets` are all-gathered
    (`ReplicaContext.all_gather`, whose gradient sums the replicas' gradients
    and returns each its rows, as the code's `AllGather.backward`), each
    replica's anchors exclude only their own row, and the local mean is
    weighted by `R * n_local / n_global` (1 for the equal blocks of
    `LabelledBatches`), so the mean over replicas that the step's gradient
    follows is the mean over every labelled row: one replica's loss on the
    concatenated batch.
    """
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return losses.suncet_loss(z, targets, temperature)
    # `all_gather` sends each value to `tensor.device` (TF 2.21 distribute_lib `_batch_reduce_destination`),
    # which is empty for a tensor a multi-worker iterator feeds in ("ValueError: destinations can not be
    # empty"; no upstream issue found; MirroredStrategy gathers such tensors fine): tf.identity places a
    # copy on this replica's device. Tested by tests/test_multi_worker.py::test_the_chief_killed_both_restarted_
    # on_the_same_ports_resume_from_its_checkpoint (SuNCEt on two workers); drop the identities once that test
    # passes without them.
    z, targets = tf.identity(tf.cast(z, tf.float32)), tf.identity(tf.cast(targets, tf.float32))
    sizes = replica.all_gather(tf.shape(z)[:1], axis=0)
    support, support_targets = replica.all_gather([z, targets], axis=0)
    replica_id = tf.cast(replica.replica_id_in_sync_group, tf.int32)
    local = losses.suncet_loss(z, targets, temperature, support, support_targets, tf.reduce_sum(sizes[:replica_id]))
    weight = tf.cast(replica.num_replicas_in_sync * sizes[replica_id], tf.float32) / tf.cast(
        tf.reduce_sum(sizes), tf.float32)
    return weight * local


@keras.saving.register_keras_serializable(package="myol_keras")
class SuNCEt(SimCLR):
    """SuNCEt (Assran et al.) as in `facebookresearch/suncet` `src/suncet_train.py` (METHODS §2.11).

    SimCLR (this library's, §2.8: NT-Xent over `[x1; x2]`, head without
    BatchNorm) with one more term: `z = n(g(f([x1; x2; x_l])))` in one forward
    (BatchNorm over `2B + C*s` images, as the official code concatenates the
    labelled images to the unlabelled ones), `L = NT-Xent(z_u) +
    [epoch < supervised_epochs] * SuNCEt(z_l)` (`losses.suncet_loss`, the
    gradient through every labelled embedding, none detached, as the code).
    After `supervised_epochs` the labelled images still go through the
    forward and the term is still logged, only not added — as the code does.
    The official NT-Xent detaches its gathered copy of `z`; this one (the
    library's SimCLR) does not.

    On R replicas every replica draws its own class-balanced C x s block
    (the same C classes on all, as the official `unique_classes_per_rank:
    false`) and its SuNCEt term compares its anchors with all R*C*s labelled
    rows, all-gathered with their gradient, excluding only the anchor itself
    (`gathered_suncet_loss`, the official `init_suncet_loss`); the step
    follows the mean over replicas — one replica's loss on the concatenated
    R*C*s batch. The NT-Xent term stays within each replica (the library's
    SimCLR; the official code gathers its negatives from every rank), and
    BatchNorm is per replica unless `--sync_batchnorm` (the official code
    converts to SyncBatchNorm on several GPUs).

    Batches are dicts: `views` (x1, x2) (or device-mode raw images),
    `labelled` `[C*s, H, W, 3]`, `labelled_targets` `[C*s, C]` and `epoch`
    `[C*s]` per replica (`LabelledBatches.attach(ds, replicas=R)` builds them).

    Args:
        backbone: `keras.Model` from normalised images to features.
        temperature: of the NT-Xent term (0.1, the official code's one temperature).
        suncet_temperature: of the SuNCEt term (0.1).
        supervised_epochs: the term is added while `epoch < supervised_epochs`; 0: always.
        classes_per_batch, images_per_class, labels_fraction: the labelled
            batch's C (0: every class, at most 20), s and the labelled share of
            the training split (read by the data pipeline, recorded here).
        **kwargs: the `BootstrapMethod` arguments.

    Example:
    ```python
    path = myol_keras.pretrain(myol_keras.PretrainConfig(method="suncet", dataset="digits", labels_fraction=0.1))
    ```
    """

    loss_term_names = ("ntxent_loss", "suncet_loss")

    def __init__(self, backbone, temperature=0.1, suncet_temperature=0.1, supervised_epochs=0, classes_per_batch=0,
                 images_per_class=2, labels_fraction=0.1, **kwargs):
        if not suncet_temperature > 0:
            raise ValueError(f"Expected `suncet_temperature` > 0. Received: suncet_temperature={suncet_temperature}")
        for name, value, low in (("supervised_epochs", supervised_epochs, 0),
                                 ("classes_per_batch", classes_per_batch, 0), ("images_per_class", images_per_class, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"Expected `{name}` to be an int >= {low}. Received: {name}={value!r}")
        if not 0 < labels_fraction <= 1:
            raise ValueError(f"Expected `labels_fraction` in (0, 1]. Received: labels_fraction={labels_fraction}")
        super().__init__(backbone, temperature=temperature, **kwargs)
        self.suncet_temperature = float(suncet_temperature)
        self.supervised_epochs = supervised_epochs
        self.classes_per_batch = classes_per_batch
        self.images_per_class = images_per_class
        self.labels_fraction = float(labels_fraction)

    @classmethod
    def resolve_inputs(cls, config, plan):
        """The labelled training split and its batches (`methods.inputs`); `ValueError` without labels."""
        from myol_keras import data
        from myol_keras.methods import inputs

        try:
            images, labels, info = data.load_labelled_array(
                config.dataset, "train", config.data_dir, download=config.download, cache_dir=config.cache_dir or None)
        except data.DataUnavailableError:
            raise
        except ValueError as e:
            raise ValueError(f"--method=suncet needs labelled training images; --dataset={config.dataset} gives none: "
                             f"{e}") from None
        if info.num_classes is None or len(labels) == 0:
            raise ValueError(f"--method=suncet needs labelled training images; --dataset={config.dataset} has no "
                             "labels")
        labels = np.asarray(labels).astype(np.int64)
        subset = labels[labelled_batches.labelled_subset(labels, config.labels_fraction, config.seed)]
        classes, counts = np.unique(subset, return_counts=True)
        wanted = resolve_classes_per_batch(config.suncet_classes_per_batch, classes.size)
        if wanted > classes.size:
            raise ValueError(f"--suncet_classes_per_batch={wanted} is more than the {classes.size} classes of "
                             f"--dataset={config.dataset}; use at most {classes.size} (0: every class, at most 20)")
        if config.suncet_images_per_class > counts.min():
            raise ValueError(f"--suncet_images_per_class={config.suncet_images_per_class} is more than the "
                             f"{counts.min()} labelled images of the smallest class at --labels_fraction="
                             f"{config.labels_fraction}; lower it or raise --labels_fraction")
        batches = LabelledBatches(images, labels, wanted, config.suncet_images_per_class, config.labels_fraction,
                                  config.seed, plan.steps_per_epoch, plan.image_size, plan.mean, plan.std)
        return inputs.MethodInputs(attach=batches.attach, facts={
            "suncet_labelled_images": int(subset.size), "suncet_classes_per_batch": wanted})

    def _unpack_views(self, data):
        if not (isinstance(data, dict) and "labelled" in data):
            raise ValueError(
                "SuNCEt trains on dicts with `views` (x1, x2), `labelled`, `labelled_targets` and `epoch`; "
                "build them with `myol_keras.methods.suncet.LabelledBatches(...).attach(dataset)`."
            )
        views = super()._unpack_views(data)
        return [*views, data["labelled"], data["labelled_targets"], data["epoch"]]

    def supervised_weight(self, epoch):
        """1.0 while `epoch < supervised_epochs` (always with 0), else 0.0 (float32)."""
        if not self.supervised_epochs:
            return tf.constant(1.0)
        return tf.cast(tf.reshape(epoch, [-1])[0] < self.supervised_epochs, tf.float32)

    def compute_loss_terms(self, views, targets, seed):
        x1, x2, labelled, labelled_targets, epoch = views
        batch = tf.shape(x1)[0]
        z, _ = self.online_forward(tf.concat([x1, x2, tf.cast(labelled, x1.dtype)], axis=0))
        ntxent = losses.simclr_loss(z[: 2 * batch], self.temperature)
        supervised = gathered_suncet_loss(z[2 * batch:], labelled_targets, self.suncet_temperature)
        loss = ntxent + self.supervised_weight(epoch) * supervised
        return {"loss": loss, "ntxent_loss": ntxent, "suncet_loss": supervised, "z": z[:batch]}

    def get_config(self):
        config = super().get_config()
        config.update({"suncet_temperature": self.suncet_temperature, "supervised_epochs": self.supervised_epochs,
                       "classes_per_batch": self.classes_per_batch, "images_per_class": self.images_per_class,
                       "labels_fraction": self.labels_fraction})
        return config
