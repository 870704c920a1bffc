"""Linear evaluation of a frozen encoder (METHODS §3.1, the MYOL repo's `eval.py`).

    python -m myol_keras.evaluation.linear_probe --saved_model=saved_models/myol_c10 \
        --dataset=cifar10

Protocol: features of the train and test splits are extracted once through the
encoder SavedModel (BatchNorm in inference mode, test-time transform: resize
to the export's image size and normalise, no augmentation); a `Linear(D, C)`
(torch initialisation) is trained on the cached, unnormalised features with
cross-entropy, batch 64 shuffled, SGD lr 0.2, momentum 0.9, Nesterov, no weight
decay, cosine annealing to 0 per iteration over all 100 epochs; test every 10
epochs; the reported top-1/top-5 are those of the last epoch.

Keras' SGD folds the learning rate into the velocity while torch applies it
after, so under a changing learning rate the trajectories differ slightly
(METHODS §5.6); with a constant rate they are identical.

The classifier (encoder + head) is exported beside the encoder, at
`saved_models/<name>-linear/<version>/` — never as a new version of the
encoder, which TF Serving would then serve — with `serving_default` (uint8)
and `serve_pixels` (float32 in [0, 1]) -> {"logits", "probabilities"}.
"""

import math
import os
import shutil
import tempfile
import time

from absl import flags

from myol_keras import cli

PROG = "myol_keras.evaluation.linear_probe"

FLAGS = flags.FlagValues()
flags.DEFINE_string("saved_model", None, "Encoder export: saved_models/<name>[/<version>].", flag_values=FLAGS)
flags.DEFINE_string("dataset", "", "Labelled dataset (default: the export's pre-training dataset).", flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "Data directory / file of the dataset (default: the export's, if any).", flag_values=FLAGS)
flags.DEFINE_bool("download", True, "Let tfds download a missing dataset.", flag_values=FLAGS)
flags.DEFINE_integer("epochs", 100, "Probe epochs (100 in the reference).", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 64, "Probe batch size (64 in the reference).", flag_values=FLAGS)
flags.DEFINE_float("lr", 0.2, "Peak learning rate (0.2), cosine-annealed to 0 per iteration.", flag_values=FLAGS)
flags.DEFINE_integer("eval_every", 10, "Test every N epochs (the last epoch is always tested).", flag_values=FLAGS)
flags.DEFINE_integer("feature_batch_size", 256, "Images per call during feature extraction.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the head initialisation and shuffling.", flag_values=FLAGS)
flags.DEFINE_integer("max_train_images", 0, "Cap on train images (0: all; for quick checks).", flag_values=FLAGS)
flags.DEFINE_integer("max_test_images", 0, "Cap on test images (0: all).", flag_values=FLAGS)
flags.DEFINE_bool("export", True, "Export the classifier to saved_models/<name>-linear/<version>/.", flag_values=FLAGS)

DEFAULTS = {"epochs": 100, "batch_size": 64, "lr": 0.2, "momentum": 0.9, "nesterov": True, "eval_every": 10}


def probe_learning_rate(step, total_steps, base_lr=0.2):
    """lr(t) = base_lr * (1 + cos(pi t / T)) / 2: cosine annealing to 0 per iteration (lr(T/2) = base_lr/2)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive. Received: total_steps={total_steps}")
    t = min(max(float(step), 0.0), float(total_steps))
    return base_lr * (1.0 + math.cos(math.pi * t / total_steps)) / 2.0


def cosine_schedule(base_lr, total_steps):
    """The Keras schedule of `probe_learning_rate` (CosineDecay to 0, no warm-up)."""
    import keras

    return keras.optimizers.schedules.CosineDecay(base_lr, decay_steps=int(total_steps), alpha=0.0)


def topk_accuracy(logits, labels, ks=(1, 5)):
    """{"top1": ..., "top5": ...} from numpy logits; k is capped at the number of classes."""
    import numpy as np

    order = np.argsort(-logits, axis=1)
    out = {}
    for k in ks:
        kk = min(k, logits.shape[1])
        out[f"top{k}"] = float(np.mean(np.any(order[:, :kk] == labels[:, None], axis=1)))
    return out


def build_linear_head(feature_dim, num_classes, seed=0, name="linear_head"):
    """`Dense(C)` with torch's `nn.Linear` initialisation U(-1/sqrt(D), 1/sqrt(D))."""
    import keras

    bound = 1.0 / math.sqrt(feature_dim)
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed + 1),
        name=name,
    )


def train_linear_classifier(
    train_features, train_labels, test_features, test_labels, num_classes, *,
    epochs=100, batch_size=64, lr=0.2, momentum=0.9, nesterov=True, eval_every=10, seed=0, verbose=True,
):
    """Train `Linear(D, C)` on cached features with the §3.1 protocol.

    Returns:
        dict with `top1`, `top5` (last epoch), `history` (one dict per tested epoch),
        `kernel`, `bias` (numpy) and `train_seconds`.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    train_features = np.asarray(train_features, np.float32)
    test_features = np.asarray(test_features, np.float32)
    train_labels = np.asarray(train_labels, np.int64)
    test_labels = np.asarray(test_labels, np.int64)
    steps_per_epoch = math.ceil(len(train_features) / batch_size)
    total_steps = steps_per_epoch * epochs
    keras.utils.set_random_seed(seed)
    head = build_linear_head(train_features.shape[1], num_classes, seed=seed)
    model = keras.Sequential([keras.Input((train_features.shape[1],)), head])
    model.compile(
        optimizer=keras.optimizers.SGD(cosine_schedule(lr, total_steps), momentum=momentum, nesterov=nesterov),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=steps_per_epoch,
    )
    ds = (
        tf.data.Dataset.from_tensor_slices((train_features, train_labels))
        .shuffle(len(train_features), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    history = []

    class _Test(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            done = epoch + 1
            if done % eval_every and done != epochs:
                return
            kernel, bias = head.get_weights()
            row = {"epoch": done, "loss": float((logs or {}).get("loss", float("nan")))}
            row.update(topk_accuracy(test_features @ kernel + bias, test_labels))
            history.append(row)
            if verbose:
                print(f"linear probe: epoch {done}/{epochs} loss {row['loss']:.4f} top-1 {row['top1']:.4f} top-5 {row['top5']:.4f}", flush=True)

    start = time.perf_counter()
    model.fit(ds, epochs=epochs, callbacks=[_Test()], verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    kernel, bias = head.get_weights()
    return {
        "top1": history[-1]["top1"],
        "top5": history[-1]["top5"],
        "history": history,
        "kernel": kernel,
        "bias": bias,
        "train_seconds": seconds,
    }


def classifier_root(encoder_version_dir, suffix="linear"):
    """`saved_models/<name>-<suffix>` for the encoder at `saved_models/<name>/<version>`."""
    base = os.path.dirname(os.path.abspath(encoder_version_dir))
    return os.path.join(os.path.dirname(base), f"{os.path.basename(base)}-{suffix}")


def export_classifier(encoder_version_dir, kernel, bias, *, metadata=None, export_root=None, version=None):
    """Export encoder + linear head as a classifier SavedModel beside the encoder.

    The encoder comes from the export's `backbone.keras` (BatchNorm in inference
    mode), preprocessed exactly as the encoder's own endpoints.

    Returns:
        The written version directory, `saved_models/<name>-linear/<version>/`.
    """
    import json

    import keras
    import numpy as np
    import tensorflow as tf

    from myol_keras import export as export_lib

    encoder_meta = export_lib.load_export_metadata(encoder_version_dir)
    backbone = export_lib.load_backbone(encoder_version_dir, trainable=False)
    kernel = np.asarray(kernel, np.float32)
    bias = np.asarray(bias, np.float32)
    head = keras.layers.Dense(kernel.shape[1], name="linear_head")
    head.build((None, kernel.shape[0]))
    head.set_weights([kernel, bias])
    image_size = int(encoder_meta["image_size"])
    mean, std = tuple(encoder_meta["mean"]), tuple(encoder_meta["std"])

    def classify(pixels):
        pixels = export_lib.check_image_batch(pixels)
        images = export_lib.preprocess_pixels(pixels, image_size, mean, std)
        features = tf.cast(backbone(images, training=False), tf.float32)
        logits = head(features)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    archive = keras.export.ExportArchive()
    archive.track(backbone)
    archive.track(head)
    archive.add_endpoint(
        "serving_default",
        lambda images: classify(tf.cast(images, tf.float32) / 255.0),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
    )
    archive.add_endpoint(
        "serve_pixels",
        classify,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels")],
    )
    export_root = export_root or classifier_root(encoder_version_dir)
    os.makedirs(export_root, exist_ok=True)
    version = export_lib.next_version(export_root) if version is None else int(version)
    final_dir = os.path.join(export_root, str(version))
    if os.path.exists(final_dir):
        raise FileExistsError(f"Export version directory already exists: {final_dir}")
    info = {k: v for k, v in encoder_meta.items() if k not in ("format", "signatures", "feature_dim")}
    info.update({
        "kind": "classifier",
        "format": "myol_keras classifier export, version 1",
        "signatures": {
            "serving_default": "uint8 [batch, H, W, 3] -> logits, probabilities float32 [batch, C]",
            "serve_pixels": "float32 [batch, H, W, 3] in [0, 1] -> logits, probabilities float32 [batch, C]",
        },
        "encoder": os.path.abspath(encoder_version_dir),
        "num_classes": int(kernel.shape[1]),
        "feature_dim": int(kernel.shape[0]),
        "versions": export_lib._library_versions(),
    })
    info.update(metadata or {})
    tmp_dir = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_root)
    try:
        archive.write_out(tmp_dir, verbose=False)
        extra = os.path.join(tmp_dir, export_lib.EXTRA_DIR)
        os.makedirs(extra, exist_ok=True)
        np.savez(os.path.join(extra, "linear_head.npz"), kernel=kernel, bias=bias)
        with open(os.path.join(extra, export_lib.METADATA_FILE), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True, default=str)
        os.rename(tmp_dir, final_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return final_dir


def encoder_features(encoder, dataset="", data_dir=None, *, download=True, feature_batch_size=256,
                     max_train_images=0, max_test_images=0, verbose=True):
    """Cached (train, test) features of a `LoadedExport` encoder on a labelled dataset.

    Returns:
        dict with train_features, train_labels, test_features, test_labels, info,
        dataset, data_dir and extract_seconds.
    """
    from myol_keras.evaluation import features as F

    dataset, data_dir = resolve_dataset(encoder.metadata, dataset, data_dir)
    start = time.perf_counter()
    out = {"dataset": dataset, "data_dir": data_dir}
    for split, cap in (("train", max_train_images), ("test", max_test_images)):
        images, labels, info = F.load_labelled_arrays(dataset, split, data_dir, download, cap or None)
        out[f"{split}_features"] = F.extract_features(
            encoder.serve_uint8, images, feature_batch_size, f"features ({dataset} {split})", verbose=verbose
        )
        out[f"{split}_labels"] = labels
        out["info"] = info
    out["extract_seconds"] = time.perf_counter() - start
    return out


def resolve_dataset(metadata, dataset, data_dir):
    """The dataset and data_dir to evaluate on: the flags, else the export's pre-training data."""
    own = metadata.get("dataset")
    if not dataset:
        if not own:
            raise cli.UsageError("pass --dataset (the export does not name its dataset)")
        dataset = own
    if data_dir is None and dataset == own:
        data_dir = metadata.get("data_dir") or (metadata.get("flags") or {}).get("data_dir")
    return dataset, data_dir


def linear_probe(saved_model, dataset="", data_dir=None, *, epochs=100, batch_size=64, lr=0.2,
                 eval_every=10, seed=0, feature_batch_size=256, download=True, max_train_images=0,
                 max_test_images=0, export=True, cache=None, verbose=True):
    """Run the §3.1 linear probe on an encoder export; returns the result dict.

    Args:
        saved_model: encoder export (`saved_models/<name>` or a version directory).
        dataset, data_dir: labelled data (default: the export's pre-training dataset).
        epochs, batch_size, lr, eval_every: the probe protocol (reference: 100, 64, 0.2, 10).
        export: write the classifier to `saved_models/<name>-linear/<version>/`.
        cache: optional dict; filled with the extracted features so kNN can reuse them.

    The record is appended to the run's `results.json`.

    Example:
    ```python
    result = linear_probe("saved_models/byol-cifar10", "cifar10")
    result["top1"], result["classifier"]
    ```
    """
    from myol_keras.evaluation import features as F

    start = time.perf_counter()
    encoder = F.load_export(saved_model, expect="encoder")
    feats = _cached_features(encoder, cache, dataset, data_dir, download, feature_batch_size,
                             max_train_images, max_test_images, verbose)
    num_classes = int(max(feats["info"].num_classes or 0, feats["train_labels"].max() + 1, feats["test_labels"].max() + 1))
    trained = train_linear_classifier(
        feats["train_features"], feats["train_labels"], feats["test_features"], feats["test_labels"], num_classes,
        epochs=epochs, batch_size=batch_size, lr=lr, eval_every=eval_every, seed=seed, verbose=verbose,
    )
    result = {
        "evaluation": "linear",
        "encoder": encoder.path,
        "dataset": feats["dataset"],
        "num_classes": num_classes,
        "num_train": int(len(feats["train_labels"])),
        "num_test": int(len(feats["test_labels"])),
        "top1": trained["top1"],
        "top5": trained["top5"],
        "history": trained["history"],
        "protocol": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": 0.9, "nesterov": True,
                     "schedule": "cosine per iteration", "seed": seed},
        "extract_seconds": feats["extract_seconds"],
        "train_seconds": trained["train_seconds"],
    }
    if export:
        result["classifier"] = export_classifier(
            encoder.path, trained["kernel"], trained["bias"],
            metadata={"dataset": feats["dataset"], "data_dir": feats["data_dir"],
                      "linear_top1": trained["top1"], "linear_top5": trained["top5"]},
        )
    result["seconds"] = time.perf_counter() - start
    result["results_file"] = F.append_result(encoder.run_dir, result)
    F.save_embedding_sample(encoder.run_dir, feats["test_features"], feats["test_labels"])
    return result


def _cached_features(encoder, cache, dataset, data_dir, download, feature_batch_size, max_train, max_test, verbose):
    key = (encoder.path, dataset, data_dir, max_train, max_test)
    if cache is not None and cache.get("key") == key:
        return cache["features"]
    feats = encoder_features(encoder, dataset, data_dir, download=download, feature_batch_size=feature_batch_size,
                             max_train_images=max_train, max_test_images=max_test, verbose=verbose)
    if cache is not None:
        cache["key"] = key
        cache["features"] = feats
    return feats


def _run():
    for name in ("epochs", "batch_size", "eval_every", "feature_batch_size"):
        if FLAGS[name].value < 1:
            raise cli.UsageError(f"--{name}={FLAGS[name].value}: must be a positive integer")
    if FLAGS.lr <= 0:
        raise cli.UsageError(f"--lr={FLAGS.lr}: must be positive")
    if not FLAGS.saved_model:
        raise cli.UsageError("--saved_model=DIR is required (an encoder export, saved_models/<name>)")
    result = linear_probe(
        FLAGS.saved_model, FLAGS.dataset, FLAGS.data_dir, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
        lr=FLAGS.lr, eval_every=FLAGS.eval_every, seed=FLAGS.seed, feature_batch_size=FLAGS.feature_batch_size,
        download=FLAGS.download, max_train_images=FLAGS.max_train_images, max_test_images=FLAGS.max_test_images,
        export=FLAGS.export,
    )
    print(f"{PROG}: top-1 {result['top1']:.4f} top-5 {result['top5']:.4f} on {result['dataset']} "
          f"({result['seconds']:.1f} s)")
    if result.get("classifier"):
        print(f"{PROG}: classifier exported to {result['classifier']}")
    if result.get("results_file"):
        print(f"{PROG}: appended to {result['results_file']}")


def main(argv=None):
    """Entry point usable in-process: `main(["prog", "--saved_model=...", ...])`."""
    return cli.run_tool(PROG, FLAGS, argv, _run, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
