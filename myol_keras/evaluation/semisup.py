"""Semi-supervised fine-tuning on 1% / 10% class-balanced labels (docs/METHODS.md §3.2, the MYOL repo's `semisup.py`).

    python -m myol_keras.evaluation.semisup --saved_model=saved_models/byol-cifar10 --dataset=cifar10 \
        --label_fraction=0.01

Protocol: a class-balanced labelled subset of `floor(n_c * ratio)` images per
class, chosen after shuffling with the seed; the whole encoder plus
`Linear(D, C)` is trained with BatchNorm in training mode (batch statistics),
starting from the export's `backbone.keras` (`myol_keras.load_backbone`) —
the SavedModel endpoints would keep BatchNorm in inference mode. Test
transform: `myol_keras.preprocessing.evaluation_transform` (centre square
crop, antialiased resize to the export's image size — STL-10: 64 —,
normalise); train transform: a random horizontal flip, then the same. Batch 32 (64 for Tiny-ImageNet),
20 epochs, SGD momentum 0.9, no weight decay, cosine per iteration; learning
rates (from VICReg) 10%: encoder 0.01 / head 0.1, 1%: encoder 0.03 / head
0.08. Tested every epoch; the epoch-20 (last) value is reported.
"""

import math
import time

import numpy as np
from absl import flags

from myol_keras import cli
from myol_keras.evaluation import common

PROG = "myol_keras.evaluation.semisup"

# docs/METHODS.md §3.2: (encoder lr, head lr) per label fraction.
LEARNING_RATES = {0.01: (0.03, 0.08), 0.1: (0.01, 0.1)}

FLAGS = flags.FlagValues()
cli.define_evaluation_flags(FLAGS, "saved_model", "Encoder export: saved_models/<name>[/<version>].",
                            "an encoder export, saved_models/<name>")
cli.DEFINE_list_of("label_fraction", ["0.01", "0.1"], "Fractions of labels per class (0.01 and 0.1 in the paper).",
                   cli.FractionParser(0, 1), FLAGS)
flags.register_validator("label_fraction", lambda fractions: fractions and all(f > 0 for f in fractions),
                         message="every fraction must be in (0, 1]", flag_values=FLAGS)
flags.DEFINE_integer("epochs", 20, "Fine-tuning epochs (20).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 0, "Batch size (0: 32, or 64 for Tiny-ImageNet).", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_float("encoder_lr", 0.0, "Encoder learning rate (0: the paper's value for the fraction).", lower_bound=0,
                   flag_values=FLAGS)
flags.DEFINE_float("head_lr", 0.0, "Head learning rate (0: the paper's value for the fraction).", lower_bound=0,
                   flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the subset, the head and shuffling.", flag_values=FLAGS)


def class_balanced_subset(labels, ratio, seed=0):
    """Indices of floor(n_c * ratio) images of every class c, drawn after a seeded shuffle.

    Example: CIFAR-10 train (5,000 per class), ratio 0.01 -> 50 per class, 500 in all.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1]. Received: ratio={ratio}")
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    chosen = []
    for c in np.unique(labels):
        members = order[labels[order] == c]
        chosen.append(members[: int(math.floor(len(members) * ratio + 1e-9))])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _transform_fn(image_size, mean, std):
    """(images, labels) -> (evaluation_transform(images), labels), for `ds.map`."""
    from myol_keras.preprocessing import evaluation_transform

    def fn(images, labels):
        return evaluation_transform(images, image_size, mean, std), labels

    return fn


def _flip_fn():
    """((images, labels), draw) -> (images with each one mirrored when its draw says so, labels), for `ds.map`.

    `draw` is one int64 of `tf.data.Dataset.random(seed)` per batch: the flips
    are a function of the seed and the batch's place in the epoch, whatever the
    order in which a parallel `map` runs its calls.
    """
    import tensorflow as tf

    def fn(batch, draw):
        images, labels = batch
        key = tf.stack([draw, tf.constant(0, tf.int64)])
        flips = tf.random.stateless_uniform((tf.shape(images)[0], 1, 1, 1), seed=key) < 0.5
        return tf.where(flips, tf.reverse(images, axis=[2]), images), labels

    return fn


def make_dataset(images, labels, batch_size, *, image_size, mean, std, flip, shuffle, seed=0):
    """Batched (transformed float images, labels); the last batch is dropped only if it would hold one image.

    The transform is `preprocessing.evaluation_transform`, after a random
    horizontal flip when `flip` (the train transform). The order and the flips
    depend on `seed` alone, and change from one epoch to the next.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, np.asarray(labels, np.int64)))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    drop = shuffle and len(images) % batch_size == 1
    ds = ds.batch(batch_size, drop_remainder=drop)
    if flip:
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, draws)).map(_flip_fn(), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(_transform_fn(image_size, mean, std), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _finetune_model_class():
    import keras
    import tensorflow as tf

    class FineTuneClassifier(keras.Model):
        """Backbone + linear head trained with two SGD optimisers (encoder lr, head lr).

        Args:
            backbone: the Keras backbone (trainable; BatchNorm uses batch statistics in `fit`).
            head: `Dense(C)`.
            encoder_optimizer: optimiser of the backbone variables.
        """

        def __init__(self, backbone, head, encoder_optimizer, **kwargs):
            super().__init__(**kwargs)
            self.backbone = backbone
            self.head = head
            self.encoder_optimizer = encoder_optimizer
            self.loss_tracker = keras.metrics.Mean(name="loss")

        def call(self, images, training=False):
            return self.head(tf.cast(self.backbone(images, training=training), tf.float32))

        @property
        def metrics(self):
            return [self.loss_tracker]

        def train_step(self, data):
            images, labels = data
            with tf.GradientTape() as tape:
                logits = self(images, training=True)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
            enc_vars = self.backbone.trainable_variables
            head_vars = self.head.trainable_variables
            grads = tape.gradient(loss, enc_vars + head_vars)
            self.encoder_optimizer.apply(grads[:len(enc_vars)], enc_vars)
            self.optimizer.apply(grads[len(enc_vars):], head_vars)
            self.loss_tracker.update_state(loss)
            return {"loss": self.loss_tracker.result()}

    return FineTuneClassifier


def finetune(backbone, train_images, train_labels, test_images, test_labels, num_classes, *,
             image_size, mean, std, epochs=20, batch_size=32, encoder_lr=0.03, head_lr=0.08,
             momentum=0.9, flip=True, seed=0, verbose=True, description="fine-tune"):
    """Fine-tune `backbone` + a linear head; test every epoch; returns the result dict.

    Both learning rates follow a cosine to 0 over all iterations; no weight decay.

    Raises:
        ValueError: a non-positive epoch count, batch size or learning rate.
    """
    import keras

    common.check_positive_ints(epochs=epochs, batch_size=batch_size)
    common.check_positive(encoder_lr=encoder_lr, head_lr=head_lr)
    keras.utils.set_random_seed(seed)
    backbone.trainable = True
    feature_dim = int(backbone.output_shape[-1])
    head = common.build_linear_head(feature_dim, num_classes, seed=seed)
    train_ds = make_dataset(train_images, train_labels, batch_size, image_size=image_size, mean=mean, std=std,
                            flip=flip, shuffle=True, seed=seed)
    test_ds = make_dataset(test_images, test_labels, 256, image_size=image_size, mean=mean, std=std,
                           flip=False, shuffle=False)
    steps = int(train_ds.cardinality())
    total = max(steps * epochs, 1)
    model = _finetune_model_class()(
        backbone, head, keras.optimizers.SGD(common.cosine_schedule(encoder_lr, total), momentum=momentum))
    model.compile(optimizer=keras.optimizers.SGD(common.cosine_schedule(head_lr, total), momentum=momentum))
    head.build((None, feature_dim))
    model.encoder_optimizer.build(backbone.trainable_variables)
    model.optimizer.build(head.trainable_variables)
    test_labels = np.asarray(test_labels, np.int64)
    history = []

    class _Test(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            common.record_test(history, epoch + 1, epochs, logs, model.predict(test_ds, verbose=0), test_labels,
                               description, verbose)

    start = time.perf_counter()
    model.fit(train_ds, epochs=epochs, callbacks=[_Test()], verbose=0, shuffle=False)
    return {"top1": history[-1]["top1"], "top5": history[-1]["top5"], "history": history,
            "train_seconds": time.perf_counter() - start, "model": model}


def semisup_evaluate(saved_model, dataset="", data_dir=None, *, label_fraction=0.01, epochs=20, batch_size=0,
                     encoder_lr=None, head_lr=None, seed=0, download=True, max_test_images=0, verbose=True):
    """§3.2 fine-tuning of an encoder export on a fraction of the labels; appends to results.json.

    Args:
        saved_model: encoder export (`saved_models/<name>` or a version directory).
        dataset, data_dir: labelled data (default: the export's pre-training dataset).
        label_fraction: fraction of the labels per class, in (0, 1].
        epochs: fine-tuning epochs (20).
        batch_size: 0 for the protocol's (32; 64 for Tiny-ImageNet).
        encoder_lr, head_lr: None for the paper's values for the fraction (`LEARNING_RATES`).
        seed: seed of the subset, the head and the shuffling.
        max_test_images: cap on test images (0: all).

    Raises:
        ValueError: a bad argument (checked before anything is loaded), a classifier
            export, or a fraction that leaves fewer than two labelled images.

    Example:
    ```python
    semisup_evaluate("saved_models/byol-cifar10", "cifar10", label_fraction=0.1)["top1"]
    ```
    """
    from myol_keras import export as export_lib
    from myol_keras.evaluation import features

    ratio = float(label_fraction)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"Expected `label_fraction` to be in (0, 1]. Received: label_fraction={label_fraction!r}")
    common.check_positive_ints(epochs=epochs)
    if batch_size:
        common.check_positive_ints(batch_size=batch_size)
    start = time.perf_counter()
    default_enc, default_head = LEARNING_RATES.get(round(ratio, 6), LEARNING_RATES[0.1])
    encoder_lr = encoder_lr or default_enc
    head_lr = head_lr or default_head
    version_dir, meta = features.read_export_metadata(saved_model, expect="encoder")
    dataset, data_dir = common.resolve_dataset(meta, dataset, data_dir)
    batch_size = batch_size or (64 if dataset == "tiny_imagenet" else 32)
    x_train, y_train, info = features.load_labelled_arrays(dataset, "train", data_dir, download)
    x_test, y_test, _ = features.load_labelled_arrays(dataset, "test", data_dir, download, max_test_images or None)
    index = class_balanced_subset(y_train, ratio, seed)
    if len(index) < 2:
        raise ValueError(f"label fraction {ratio:g} leaves {len(index)} labelled images; use a larger fraction")
    num_classes = common.count_classes(info, y_train, y_test)
    backbone = export_lib.load_backbone(version_dir, trainable=True)
    trained = finetune(
        backbone, x_train[index], y_train[index], x_test, y_test, num_classes,
        image_size=int(meta["image_size"]), mean=tuple(meta["mean"]), std=tuple(meta["std"]),
        epochs=epochs, batch_size=batch_size, encoder_lr=encoder_lr, head_lr=head_lr, flip=True, seed=seed,
        verbose=verbose, description=f"semi-supervised {ratio:g}",
    )
    result = {
        "evaluation": "semisup",
        "encoder": version_dir,
        "dataset": dataset,
        "label_fraction": ratio,
        "num_labelled": int(len(index)),
        "top1": trained["top1"],
        "top5": trained["top5"],
        "history": trained["history"],
        "protocol": {"epochs": epochs, "batch_size": batch_size, "encoder_lr": encoder_lr, "head_lr": head_lr,
                     "momentum": 0.9, "schedule": "cosine per iteration", "seed": seed},
        "seconds": time.perf_counter() - start,
    }
    result["results_file"] = features.append_result(meta.get("run_dir"), result)
    return result


def _run():
    for ratio in FLAGS.label_fraction:
        result = cli.call_with_flags(semisup_evaluate, FLAGS, label_fraction=ratio)
        print(f"{PROG}: {ratio:g} labels ({result['num_labelled']} images): top-1 {result['top1']:.4f} "
              f"top-5 {result['top5']:.4f} ({result['seconds']:.1f} s)")


main = cli.entry_point(PROG, FLAGS, _run, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
