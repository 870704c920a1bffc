"""Weighted kNN evaluation on frozen features (k = 200, temperature 0.1, cosine).

    python -m myol_keras.evaluation.knn --saved_model=saved_models/byol-cifar10 --dataset=cifar10

The monitor of the Un-Mix demo and of Representation Mixing (docs/METHODS.md §3.7):
features are L2-normalised, each test image takes its k most similar train
images (cosine similarity s), each votes for its class with weight
exp(s / T), and the class with the largest summed weight is the prediction.
Features are extracted once through the encoder SavedModel (inference mode),
the same cache the linear probe uses. `myol_keras.monitors.KNNMonitor` runs the
same vote during pre-training on a held-out labelled split.
"""

import time

import numpy as np
from absl import flags

from myol_keras import cli
from myol_keras.evaluation import common
from myol_keras.evaluation import retrieval

PROG = "myol_keras.evaluation.knn"

FLAGS = flags.FlagValues()
cli.define_evaluation_flags(FLAGS, "saved_model", "Encoder export: saved_models/<name>[/<version>].",
                            "an encoder export, saved_models/<name>", extraction=True)
flags.DEFINE_integer("k", 200, "Neighbours.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_float("temperature", 0.1, "Vote temperature T: weight exp(cos / T).", flag_values=FLAGS)
flags.register_validator("temperature", lambda t: t > 0, message="the temperature must be > 0", flag_values=FLAGS)


def knn_scores(train_features, train_labels, test_features, num_classes, k=200, temperature=0.1, chunk=512):
    """Class scores [N_test, C]: the sum of exp(cos / T) over the k nearest train features per class."""
    common.check_positive_ints(k=k)
    common.check_positive(temperature=temperature)
    train = retrieval.l2_normalize(train_features)
    test = retrieval.l2_normalize(test_features)
    labels = np.asarray(train_labels, np.int64)
    k = min(int(k), len(train))
    scores = np.zeros((len(test), num_classes), np.float64)
    for start in range(0, len(test), chunk):
        sim = test[start:start + chunk] @ train.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top_sim = np.take_along_axis(sim, top, axis=1).astype(np.float64)
        weights = np.exp(top_sim / temperature)
        rows = np.repeat(np.arange(len(top))[:, None], k, axis=1)
        np.add.at(scores[start:start + chunk], (rows, labels[top]), weights)
    return scores


def knn_predict(train_features, train_labels, test_features, num_classes, k=200, temperature=0.1):
    """Predicted class of each test feature by the weighted kNN vote."""
    return np.argmax(knn_scores(train_features, train_labels, test_features, num_classes, k, temperature), axis=1)


def knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes, k=200, temperature=0.1):
    """{"top1", "top5"} of the weighted kNN vote."""
    scores = knn_scores(train_features, train_labels, test_features, num_classes, k, temperature)
    return common.topk_accuracy(scores, np.asarray(test_labels, np.int64))


def knn_evaluate(saved_model, dataset="", data_dir=None, *, k=200, temperature=0.1, feature_batch_size=256,
                 download=True, max_train_images=0, max_test_images=0, cache=None, verbose=True):
    """kNN top-1/top-5 of an encoder export; appends the record to the run's results.json.

    Args:
        saved_model: encoder export (`saved_models/<name>` or a version directory).
        dataset, data_dir: labelled data (default: the export's pre-training dataset).
        k, temperature: the vote (200, 0.1).
        feature_batch_size, max_train_images, max_test_images, cache: as for
            `common.encoder_features` (a cache filled by the linear probe is reused).

    Raises:
        ValueError: a bad argument (checked before anything is loaded) or a classifier export.

    Example:
    ```python
    knn_evaluate("saved_models/byol-cifar10", "cifar10")["top1"]
    ```
    """
    from myol_keras.evaluation import features
    from myol_keras.evaluation import retrieval

    common.check_positive_ints(k=k)
    common.check_positive(temperature=temperature)
    start = time.perf_counter()
    feats = common.encoder_features(saved_model, dataset, data_dir, download=download,
                                    feature_batch_size=feature_batch_size, max_train_images=max_train_images,
                                    max_test_images=max_test_images, cache=cache, verbose=verbose)
    vote_start = time.perf_counter()
    acc = knn_accuracy(feats["train_features"], feats["train_labels"], feats["test_features"],
                       feats["test_labels"], feats["num_classes"], k, temperature)
    result = {
        "evaluation": "knn",
        "encoder": feats["encoder"],
        "dataset": feats["dataset"],
        "k": int(k),
        "temperature": float(temperature),
        "top1": acc["top1"],
        "top5": acc["top5"],
        "extract_seconds": feats["extract_seconds"],
        "vote_seconds": time.perf_counter() - vote_start,
        "seconds": time.perf_counter() - start,
    }
    result["results_file"] = features.append_result(feats["run_dir"], result)
    retrieval.save_retrieval_sample(feats["run_dir"], feats.get("retrieval"))  # the report's neighbour grid
    return result


def _run():
    result = cli.call_with_flags(knn_evaluate, FLAGS)
    print(f"{PROG}: kNN (k={result['k']}, T={result['temperature']}) top-1 {result['top1']:.4f} "
          f"top-5 {result['top5']:.4f} on {result['dataset']} ({result['seconds']:.1f} s)")


main = cli.entry_point(PROG, FLAGS, _run, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
