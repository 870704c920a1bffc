"""The baseline that shows what pre-training bought: the same probes on a randomly initialised encoder.

    python -m myol_keras.evaluation.random_init --saved_model=saved_models/quickstart

The encoder export's architecture (`assets.extra/backbone.keras`) is built
again with fresh weights, drawn after `keras.utils.set_random_seed(seed)` with
the run's seed — the weights the pre-training started from — in the export's
precision. Its features go through the export's own transform
(`preprocessing.evaluation_transform`, BatchNorm in inference mode), then
through exactly the protocols of the trained encoder: the linear probe of
docs/METHODS.md §3.1 (`linear_probe.train_linear_classifier`, same epochs, batch,
learning rate and head seed) and the weighted kNN vote (k = 200, T = 0.1).
The record goes to the trained run's `results.json` (`"evaluation":
"random_init"`), where `comparison_rows` puts it next to the trained
encoder's `linear` and `knn` records: the table the quick start prints and
the report shows.

Example:
```python
record = random_init_evaluate("saved_models/quickstart", epochs=100)
print(format_comparison(comparison_rows(linear_record, knn_record, record)))
```
"""

import time

from absl import flags

from myol_keras import cli
from myol_keras.evaluation import common

PROG = "myol_keras.evaluation.random_init"

FLAGS = flags.FlagValues()
cli.define_evaluation_flags(FLAGS, "saved_model", "Encoder export whose architecture is re-initialised: "
                            "saved_models/<name>[/<version>].", "an encoder export, saved_models/<name>",
                            extraction=True)
flags.DEFINE_integer("epochs", 100, "Linear-probe epochs (100 in the protocol).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("init_seed", None, "Seed of the random weights (default: the run's --seed).", lower_bound=0,
                     flag_values=FLAGS)


def random_init_backbone(saved_model, init_seed=None):
    """The export's backbone architecture with fresh, seed-controlled weights.

    Args:
        saved_model: encoder export (`saved_models/<name>` or a version directory).
        init_seed: seed of the weights (default: the run's `seed` from the export's
            metadata, else 0): with it, the weights the pre-training started from.

    Returns:
        `(backbone, metadata, init_seed)`.
    """
    import keras

    from myol_keras import export as export_lib
    from myol_keras.evaluation import features

    version_dir, metadata = features.read_export_metadata(saved_model, expect="encoder")
    if init_seed is None:
        init_seed = int((metadata.get("config") or {}).get("seed", 0))
    trained = export_lib.load_backbone(version_dir, trainable=False)
    config = dict(trained.get_config())
    if metadata.get("precision") and "dtype" not in config:
        config["dtype"] = metadata["precision"]  # the export computes in the run's precision
    keras.utils.set_random_seed(int(init_seed))
    backbone = type(trained).from_config(config)
    backbone.trainable = False
    return backbone, metadata, int(init_seed)


def embedding_function(backbone, image_size, mean, std):
    """uint8 images -> float32 features, as an encoder export's `serving_default` computes them."""
    import tensorflow as tf

    from myol_keras.preprocessing import evaluation_transform

    @tf.function(reduce_retracing=True)
    def embed(images):
        x = evaluation_transform(images, image_size, mean, std)
        return tf.cast(backbone(x, training=False), tf.float32)

    return embed


def random_init_evaluate(saved_model, dataset="", data_dir=None, *, epochs=100, batch_size=64, lr=0.2,
                         eval_every=10, seed=0, k=200, temperature=0.1, init_seed=None, feature_batch_size=256,
                         download=True, max_train_images=0, max_test_images=0, verbose=True):
    """Linear-probe and kNN accuracy of a randomly initialised copy of an encoder's architecture.

    Args:
        saved_model: the trained encoder export (its architecture, image size,
            normalisation, precision and run directory are used).
        dataset, data_dir: labelled data (default: the export's pre-training dataset).
        epochs, batch_size, lr, eval_every, seed: the linear-probe protocol and
            head seed (`linear_probe.linear_probe`'s defaults).
        k, temperature: the kNN vote (`knn.knn_evaluate`'s defaults).
        init_seed: seed of the random weights (default: the run's seed).
        feature_batch_size, download, max_train_images, max_test_images: as for
            `common.encoder_features`.

    Returns:
        The record appended to the trained run's `results.json`: `evaluation`
        ("random_init"), `encoder`, `dataset`, `init_seed`, `linear` and `knn`
        (`{"top1", "top5"}` each), `protocol`, `seconds`, `results_file`.

    Raises:
        ValueError: a bad argument (checked before anything is loaded), a
            classifier export, a dataset without labels.
        FileNotFoundError: no export at `saved_model`.

    Example:
    ```python
    record = random_init_evaluate("saved_models/quickstart")
    record["linear"]["top1"], record["knn"]["top1"]
    ```
    """
    from myol_keras.evaluation import features
    from myol_keras.evaluation import knn
    from myol_keras.evaluation import linear_probe

    common.check_positive_ints(epochs=epochs, batch_size=batch_size, eval_every=eval_every, k=k,
                               feature_batch_size=feature_batch_size)
    common.check_positive(lr=lr, temperature=temperature)
    start = time.perf_counter()
    version_dir, _ = features.read_export_metadata(saved_model, expect="encoder")
    backbone, metadata, init_seed = random_init_backbone(version_dir, init_seed)
    dataset, data_dir = common.resolve_dataset(metadata, dataset, data_dir)
    embed = embedding_function(backbone, int(metadata["image_size"]), tuple(metadata["mean"]), tuple(metadata["std"]))
    feats = common.labelled_features(embed, dataset, data_dir, download=download,
                                     feature_batch_size=feature_batch_size, max_train_images=max_train_images,
                                     max_test_images=max_test_images, verbose=verbose)
    probe = linear_probe.train_linear_classifier(
        feats["train_features"], feats["train_labels"], feats["test_features"], feats["test_labels"],
        feats["num_classes"], epochs=epochs, batch_size=batch_size, lr=lr, eval_every=eval_every, seed=seed,
        verbose=False)
    vote = knn.knn_accuracy(feats["train_features"], feats["train_labels"], feats["test_features"],
                            feats["test_labels"], feats["num_classes"], k, temperature)
    record = {
        "evaluation": "random_init",
        "encoder": version_dir,
        "dataset": dataset,
        "init_seed": init_seed,
        "num_train": int(len(feats["train_labels"])),
        "num_test": int(len(feats["test_labels"])),
        "linear": {"top1": probe["top1"], "top5": probe["top5"]},
        "knn": {"top1": vote["top1"], "top5": vote["top5"]},
        "protocol": {"linear": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed},
                     "knn": {"k": int(k), "temperature": float(temperature)}},
        "seconds": time.perf_counter() - start,
    }
    record["results_file"] = features.append_result(metadata.get("run_dir"), record)
    return record


def comparison_rows(linear=None, knn=None, random_init=None, label="trained"):
    """The rows of "what pre-training bought": the trained encoder, then the random-init one.

    Args:
        linear, knn: the trained encoder's `linear` and `knn` records (or None).
        random_init: the `random_init` record (or None).
        label: the trained row's name (e.g. "trained (myol, 10 epochs)").

    Returns:
        A list of `{"encoder", "linear top-1", "kNN top-1"}` dicts (accuracies in
        [0, 1], None where a record is missing); [] when there is nothing to show.
    """
    rows = []
    if linear or knn:
        rows.append({"encoder": label, "linear top-1": (linear or {}).get("top1"),
                     "kNN top-1": (knn or {}).get("top1")})
    if random_init:
        rows.append({"encoder": f"random init (seed {random_init.get('init_seed', 0)})",
                     "linear top-1": random_init["linear"]["top1"], "kNN top-1": random_init["knn"]["top1"]})
    return rows


def format_comparison(rows):
    """`comparison_rows` as a small plain-text table, accuracies in percent."""
    if not rows:
        return ""
    columns = ["encoder", "linear top-1", "kNN top-1"]

    def cell(value):
        if value is None:
            return "-"
        return f"{100 * value:.1f} %" if isinstance(value, float) else str(value)

    table = [columns] + [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = ["  ".join(r[0].ljust(widths[0]) if i == 0 else r[i].rjust(widths[i]) for i in range(len(columns)))
             for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def comparison_from_results(records, label="trained"):
    """`comparison_rows` from a run's `results.json` records: the latest `random_init`
    record and the latest `linear` and `knn` records of the same encoder ([] without one)."""
    latest = {}
    for record in records:
        if record.get("evaluation") == "random_init":
            latest["random_init"] = record
    if "random_init" not in latest:
        return []
    encoder = latest["random_init"].get("encoder")
    for record in records:
        if record.get("evaluation") in ("linear", "knn") and record.get("encoder") == encoder:
            latest[record["evaluation"]] = record
    return comparison_rows(latest.get("linear"), latest.get("knn"), latest["random_init"], label)


def _run():
    import os

    from myol_keras.evaluation import features

    record = cli.call_with_flags(random_init_evaluate, FLAGS)
    if record.get("results_file"):
        rows = comparison_from_results(features.read_results(os.path.dirname(record["results_file"])))
        print(f"{PROG}: appended to {record['results_file']}")
    else:
        rows = comparison_rows(random_init=record)
    print(format_comparison(rows))


main = cli.entry_point(PROG, FLAGS, _run, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
