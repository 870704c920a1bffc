"""What the evaluation protocols share (docs/METHODS.md §3): the linear head and its schedule, top-k, the features cache.

* `build_linear_head`: `Linear(D, C)` with torch's initialisation (probe,
  fine-tuning, transfer);
* `probe_learning_rate` / `cosine_schedule`: cosine annealing to 0 per iteration;
* `topk_accuracy`: top-1 / top-5 from scores; `record_test`: one tested epoch;
* `encoder_features`: train and test features of an encoder export, extracted
  once through its `serving_default` endpoint and reusable through a cache
  dict (the linear probe and kNN of one `run_evaluations` share it);
  `labelled_features` does the same for any embedding function (the
  random-init baseline's in-process encoder);
* `resolve_dataset`, `count_classes`: which labelled data, how many classes;
* `check_positive_ints`, `check_positive`: argument checks with `ValueError`.

Reading exports, data and results is `myol_keras.evaluation.features`.

Example:
```python
cache = {}
feats = encoder_features("saved_models/byol-c10", "cifar10", cache=cache)
head = build_linear_head(feats["train_features"].shape[1], feats["num_classes"])
```
"""

import math
import numbers
import time

import numpy as np


def check_positive_ints(**values):
    """Raise `ValueError` unless every keyword value is an int >= 1 (the message names it)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"Expected `{name}` to be an int >= 1. Received: {name}={value!r}")


def check_positive(**values):
    """Raise `ValueError` unless every keyword value is a finite number > 0."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value < math.inf):
            raise ValueError(f"Expected `{name}` to be a number > 0. Received: {name}={value!r}")


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


def topk_accuracy(scores, labels, ks=(1, 5)):
    """{"top1": ..., "top5": ...} from numpy scores [N, C]; k is capped at the number of classes."""
    order = np.argsort(-np.asarray(scores), axis=1)
    labels = np.asarray(labels)
    out = {}
    for k in ks:
        kk = min(k, order.shape[1])
        out[f"top{k}"] = float(np.mean(np.any(order[:, :kk] == labels[:, None], axis=1)))
    return out


def build_linear_head(feature_dim, num_classes, seed=0, name="linear_head", dtype=None):
    """`Dense(C)` with torch's `nn.Linear` initialisation U(-1/sqrt(D), 1/sqrt(D)) (`dtype`: its dtype policy)."""
    import keras

    bound = 1.0 / math.sqrt(feature_dim)
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed + 1),
        name=name,
        dtype=dtype,
    )


def count_classes(info, *labels):
    """The number of classes: the dataset's, or one above the largest label seen if that is larger."""
    return int(max([info.num_classes or 0] + [int(np.max(y)) + 1 for y in labels if len(y)]))


def resolve_dataset(metadata, dataset, data_dir):
    """The dataset and data_dir to evaluate on: the arguments, else the export's pre-training data.

    Raises:
        ValueError: no dataset given and the export does not name one.
    """
    own = metadata.get("dataset")
    if not dataset:
        if not own:
            raise ValueError("no dataset given and the export does not name its dataset (pass --dataset)")
        dataset = own
    if data_dir is None and dataset == own:
        data_dir = metadata.get("data_dir") or (metadata.get("flags") or {}).get("data_dir")
    return dataset, data_dir


def record_test(history, epoch, epochs, logs, scores, labels, description, verbose=True):
    """Append `{"epoch", "loss", "top1", "top5"}` of one tested epoch to `history` (and print it if `verbose`)."""
    row = {"epoch": epoch, "loss": float((logs or {}).get("loss", float("nan")))}
    row.update(topk_accuracy(scores, labels))
    history.append(row)
    if verbose:
        print(f"{description}: epoch {epoch}/{epochs} loss {row['loss']:.4f} top-1 {row['top1']:.4f} "
              f"top-5 {row['top5']:.4f}", flush=True)
    return row


def encoder_features(saved_model, dataset="", data_dir=None, *, download=True, feature_batch_size=256,
                     max_train_images=0, max_test_images=0, cache=None, verbose=True):
    """Train and test features of an encoder export on a labelled dataset, extracted once.

    Args:
        saved_model: encoder export (`saved_models/<name>` or a version directory).
        dataset, data_dir: labelled data (default: the export's pre-training dataset).
        feature_batch_size: images per call of the encoder's `serving_default`.
        max_train_images, max_test_images: caps (0: all).
        cache: optional dict; a second call with the same export, data and caps
            returns the features it holds without loading the SavedModel again.

    Returns:
        dict with train_features, train_labels, test_features, test_labels, info,
        num_classes, retrieval (`labelled_features`), dataset, data_dir, encoder
        (the version directory), run_dir and extract_seconds.

    Raises:
        FileNotFoundError: no export at `saved_model`.
        ValueError: a classifier export, a bad batch size, a dataset without labels.
    """
    from myol_keras.evaluation import features

    check_positive_ints(feature_batch_size=feature_batch_size)
    version_dir, metadata = features.read_export_metadata(saved_model, expect="encoder")
    dataset, data_dir = resolve_dataset(metadata, dataset, data_dir)
    key = (version_dir, dataset, data_dir, max_train_images, max_test_images)
    if cache is not None and cache.get("key") == key:
        return cache["features"]
    start = time.perf_counter()
    encoder = features.load_export(version_dir, expect="encoder")
    out = {"dataset": dataset, "data_dir": data_dir, "encoder": version_dir, "run_dir": encoder.run_dir}
    out.update(labelled_features(encoder.serve_uint8, dataset, data_dir, download=download,
                                 feature_batch_size=feature_batch_size, max_train_images=max_train_images,
                                 max_test_images=max_test_images, verbose=verbose))
    out["extract_seconds"] = time.perf_counter() - start
    if cache is not None:
        cache["key"] = key
        cache["features"] = out
    return out


def labelled_features(embed, dataset, data_dir=None, *, download=True, feature_batch_size=256, max_train_images=0,
                      max_test_images=0, verbose=True):
    """Features of the train and test splits of a labelled dataset under `embed`, and a retrieval sample.

    Args:
        embed: uint8 images `[n, H, W, 3]` -> features (or a dict with "embedding"),
            e.g. `LoadedExport.serve_uint8`.
        dataset, data_dir: the labelled data.
        feature_batch_size: images per call of `embed`.
        max_train_images, max_test_images: caps (0: all).

    Returns:
        dict with train_features, train_labels, test_features, test_labels, info,
        num_classes and retrieval: a few test images with their nearest training
        images (`retrieval.retrieval_sample`), kept for the report while the
        pixels are at hand.
    """
    from myol_keras.evaluation import features
    from myol_keras.evaluation import retrieval

    out, images = {}, {}
    for split, cap in (("train", max_train_images), ("test", max_test_images)):
        images[split], out[f"{split}_labels"], out["info"] = features.load_labelled_arrays(
            dataset, split, data_dir, download, cap or None)
        out[f"{split}_features"] = features.extract_features(
            embed, images[split], feature_batch_size, f"features ({dataset} {split})", verbose=verbose
        )
    out["test_images"] = images["test"]  # the report's embedding sample draws its projector sprite from them
    out["num_classes"] = count_classes(out["info"], out["train_labels"], out["test_labels"])
    out["retrieval"] = retrieval.retrieval_sample(
        images["test"], out["test_features"], images["train"], out["train_features"],
        query_labels=out["test_labels"], gallery_labels=out["train_labels"])
    return out
