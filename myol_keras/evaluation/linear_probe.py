"""Linear evaluation of a frozen encoder (docs/METHODS.md §3.1, the MYOL repo's `eval.py`).

    python -m myol_keras.evaluation.linear_probe --saved_model=saved_models/myol_c10 \
        --dataset=cifar10

Protocol: features of the train and test splits are extracted once through the
encoder SavedModel (BatchNorm in inference mode, test-time transform
`myol_keras.preprocessing.evaluation_transform`: centre square crop,
antialiased resize to the export's image size, normalise; no augmentation); a `Linear(D, C)`
(torch initialisation) is trained on the cached, unnormalised features with
cross-entropy, batch 64 shuffled, SGD lr 0.2, momentum 0.9, Nesterov, no weight
decay, cosine annealing to 0 per iteration over all 100 epochs; test every 10
epochs; the reported top-1/top-5 are those of the last epoch.

Keras' SGD folds the learning rate into the velocity while torch applies it
after, so under a changing learning rate the trajectories differ slightly
(docs/METHODS.md §5.6); with a constant rate they are identical.

The classifier (encoder + head) is exported beside the encoder, at
`saved_models/<name>-linear/<version>/` — never as a new version of the
encoder, which TF Serving would then serve — with `serving_default` (uint8)
and `serve_pixels` (float32 in [0, 1]) -> {"logits", "probabilities"}.
"""

import math
import os
import time

from absl import flags

from myol_keras import cli
from myol_keras.evaluation import common

PROG = "myol_keras.evaluation.linear_probe"

FLAGS = flags.FlagValues()
cli.define_evaluation_flags(FLAGS, "saved_model", "Encoder export: saved_models/<name>[/<version>].",
                            "an encoder export, saved_models/<name>", extraction=True)
flags.DEFINE_integer("epochs", 100, "Probe epochs (100 in the reference).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 64, "Probe batch size (64 in the reference).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_float("lr", 0.2, "Peak learning rate (0.2), cosine-annealed to 0 per iteration.", flag_values=FLAGS)
flags.register_validator("lr", lambda lr: lr > 0, message="the learning rate must be > 0", flag_values=FLAGS)
flags.DEFINE_integer("eval_every", 10, "Test every N epochs (the last epoch is always tested).", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the head initialisation and shuffling.", flag_values=FLAGS)
flags.DEFINE_bool("export", True, "Export the classifier to saved_models/<name>-linear/<version>/.", flag_values=FLAGS)


def train_linear_classifier(
    train_features, train_labels, test_features, test_labels, num_classes, *,
    epochs=100, batch_size=64, lr=0.2, momentum=0.9, nesterov=True, eval_every=10, seed=0, verbose=True,
):
    """Train `Linear(D, C)` on cached features with the §3.1 protocol.

    Returns:
        dict with `top1`, `top5` (last epoch), `history` (one dict per tested epoch),
        `kernel`, `bias` (numpy) and `train_seconds`.

    Raises:
        ValueError: a non-positive epoch count, batch size, test interval or learning rate.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    common.check_positive_ints(epochs=epochs, batch_size=batch_size, eval_every=eval_every)
    common.check_positive(lr=lr)
    train_features = np.asarray(train_features, np.float32)
    test_features = np.asarray(test_features, np.float32)
    train_labels = np.asarray(train_labels, np.int64)
    test_labels = np.asarray(test_labels, np.int64)
    steps_per_epoch = math.ceil(len(train_features) / batch_size)
    total_steps = steps_per_epoch * epochs
    keras.utils.set_random_seed(seed)
    # float32 whatever the global policy: after a mixed-precision pre-training in the same process
    # (main --eval) the head would otherwise train in bf16/fp16 and give other numbers than the tool.
    head = common.build_linear_head(train_features.shape[1], num_classes, seed=seed, dtype="float32")
    model = keras.Sequential([keras.Input((train_features.shape[1],)), head])
    model.compile(
        optimizer=keras.optimizers.SGD(common.cosine_schedule(lr, total_steps), momentum=momentum,
                                       nesterov=nesterov),
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
            common.record_test(history, done, epochs, logs, test_features @ kernel + bias, test_labels,
                               "linear probe", verbose)

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
    mode); both endpoints preprocess exactly as the encoder's own
    (`export.add_image_endpoints`), and the write is atomic (`export.write_export`).

    Returns:
        The written version directory, `saved_models/<name>-linear/<version>/`.
    """
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

    def classify(images):
        logits = head(tf.cast(backbone(images, training=False), tf.float32))
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    archive = keras.export.ExportArchive()
    archive.track(backbone)
    archive.track(head)
    export_lib.add_image_endpoints(archive, classify, image_size=encoder_meta["image_size"],
                                   mean=tuple(encoder_meta["mean"]), std=tuple(encoder_meta["std"]))
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
        "versions": export_lib.library_versions(),
    })
    info.update(metadata or {})
    return export_lib.write_export(
        archive, export_root or classifier_root(encoder_version_dir), info, version=version,
        extra_files={"linear_head.npz": lambda path: np.savez(path, kernel=kernel, bias=bias)})


def linear_probe(saved_model, dataset="", data_dir=None, *, epochs=100, batch_size=64, lr=0.2,
                 eval_every=10, seed=0, feature_batch_size=256, download=True, max_train_images=0,
                 max_test_images=0, export=True, cache=None, verbose=True):
    """Run the §3.1 linear probe on an encoder export; returns the result dict.

    Args:
        saved_model: encoder export (`saved_models/<name>` or a version directory).
        dataset, data_dir: labelled data (default: the export's pre-training dataset).
        epochs, batch_size, lr, eval_every: the probe protocol (reference: 100, 64, 0.2, 10).
        seed: seed of the head initialisation and the shuffling.
        feature_batch_size: images per call during feature extraction.
        max_train_images, max_test_images: caps (0: all).
        export: write the classifier to `saved_models/<name>-linear/<version>/`.
        cache: optional dict; filled with the extracted features so kNN can reuse them
            (`common.encoder_features`).

    The record is appended to the run's `results.json`; the run directory also
    keeps a sample of test embeddings and a retrieval sample for the report.

    Raises:
        ValueError: a bad argument (checked before anything is loaded), a classifier
            export, a dataset without labels.
        FileNotFoundError: no export at `saved_model`.

    Example:
    ```python
    result = linear_probe("saved_models/byol-cifar10", "cifar10")
    result["top1"], result["classifier"]
    ```
    """
    from myol_keras.evaluation import features
    from myol_keras.evaluation import retrieval

    common.check_positive_ints(epochs=epochs, batch_size=batch_size, eval_every=eval_every)
    common.check_positive(lr=lr)
    start = time.perf_counter()
    feats = common.encoder_features(saved_model, dataset, data_dir, download=download,
                                    feature_batch_size=feature_batch_size, max_train_images=max_train_images,
                                    max_test_images=max_test_images, cache=cache, verbose=verbose)
    num_classes = feats["num_classes"]
    trained = train_linear_classifier(
        feats["train_features"], feats["train_labels"], feats["test_features"], feats["test_labels"], num_classes,
        epochs=epochs, batch_size=batch_size, lr=lr, eval_every=eval_every, seed=seed, verbose=verbose,
    )
    result = {
        "evaluation": "linear",
        "encoder": feats["encoder"],
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
            feats["encoder"], trained["kernel"], trained["bias"],
            metadata={"dataset": feats["dataset"], "data_dir": feats["data_dir"],
                      "linear_top1": trained["top1"], "linear_top5": trained["top5"]},
        )
    result["seconds"] = time.perf_counter() - start
    result["results_file"] = features.append_result(feats["run_dir"], result)
    features.save_embedding_sample(feats["run_dir"], feats["test_features"], feats["test_labels"],
                                   images=feats.get("test_images"))
    retrieval.save_retrieval_sample(feats["run_dir"], feats.get("retrieval"))
    return result


def _run():
    result = cli.call_with_flags(linear_probe, FLAGS)
    print(f"{PROG}: top-1 {result['top1']:.4f} top-5 {result['top5']:.4f} on {result['dataset']} "
          f"({result['seconds']:.1f} s)")
    if result.get("classifier"):
        print(f"{PROG}: classifier exported to {result['classifier']}")
    if result.get("results_file"):
        print(f"{PROG}: appended to {result['results_file']}")


main = cli.entry_point(PROG, FLAGS, _run, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
