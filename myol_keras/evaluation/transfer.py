"""Transfer learning to other datasets (docs/METHODS.md §3.3, the MYOL repo's `tl.py`).

    python -m myol_keras.evaluation.transfer --saved_model=saved_models/byol-tiny_imagenet \
        --targets=cifar10,stl10 --mode=linear

Protocol: every target is resized to 64 px (32, 28 and 96 px images alike),
grey images are repeated to three channels, and normalised with the
Tiny-ImageNet mean/std regardless of source and target; no augmentation. The
transform is `myol_keras.preprocessing.evaluation_transform` (centre square
crop, antialiased resize, normalise) at 64 px with those statistics.

* `linear`: features cached in inference mode; `Linear(D, C)` trained 100
  epochs, batch 64, SGD 0.2 Nesterov, cosine per iteration, tested every 10.
* `finetune`: the whole network from `backbone.keras` (BatchNorm trains),
  20 epochs, batch 64, SGD momentum 0.9, no weight decay, encoder lr 0.01 /
  head lr 0.1, cosine per iteration, tested every epoch.

The last value is reported. Both modes use the export's Keras backbone rather
than its SavedModel endpoints, because the endpoints resize to the source's
image size and normalise with the source's statistics, while §3.3 fixes 64 px
and the Tiny-ImageNet statistics. Targets that `myol_keras.data` does not
provide (KMNIST, USPS) or that are not on this machine are skipped and named.
"""

import time

from absl import flags

from myol_keras import cli
from myol_keras.evaluation import common

PROG = "myol_keras.evaluation.transfer"
PAPER_TARGETS = ("cifar10", "cifar100", "stl10", "mnist", "fashion_mnist", "kmnist", "usps", "svhn_cropped")
TRANSFER_SIZE = 64
MODES = ("linear", "finetune")

FLAGS = flags.FlagValues()
flags.DEFINE_string("saved_model", None, "Encoder export (Tiny-ImageNet in the paper).", flag_values=FLAGS)
cli.require(FLAGS, "saved_model", "an encoder export, saved_models/<name>")
flags.DEFINE_list("targets", list(PAPER_TARGETS), "Target datasets.", flag_values=FLAGS)
flags.DEFINE_list("data_dirs", [], "name=path pairs for local targets, e.g. npz=/data/c10.npz.", flag_values=FLAGS)
flags.register_validator("data_dirs", lambda pairs: all("=" in p for p in pairs),
                         message="every item must be name=path", flag_values=FLAGS)
flags.DEFINE_bool("download", True, "Let tfds download missing targets.", flag_values=FLAGS)
flags.DEFINE_enum("mode", "linear", list(MODES), "linear (frozen features) or finetune (whole network).", flag_values=FLAGS)
flags.DEFINE_integer("epochs", 0, "Epochs (0: 100 linear, 20 finetune).", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 64, "Batch size (64).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed.", flag_values=FLAGS)
flags.DEFINE_integer("max_train_images", 0, "Cap on train images per target (0: all).", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_integer("max_test_images", 0, "Cap on test images per target (0: all).", lower_bound=0, flag_values=FLAGS)


def backbone_features(backbone, images, image_size, mean, std, batch_size=256, description="features",
                      verbose=True):
    """Features of uint8 `images` from a Keras `backbone` (inference mode) after `evaluation_transform`."""
    import tensorflow as tf

    from myol_keras.evaluation.features import extract_features
    from myol_keras.preprocessing import evaluation_transform

    @tf.function(reduce_retracing=True)
    def embed(batch):
        return tf.cast(backbone(evaluation_transform(batch, image_size, mean, std), training=False), tf.float32)

    return extract_features(embed, images, batch_size, description, verbose=verbose)


def transfer_one(saved_model, target, data_dir=None, *, mode="linear", epochs=0, batch_size=64, seed=0,
                 download=True, max_train_images=0, max_test_images=0, verbose=True):
    """Transfer an encoder export to one target; returns the result dict (appended to results.json).

    Raises:
        ValueError: an unknown mode, a non-positive batch size or epoch count, a classifier export.
    """
    from myol_keras import data
    from myol_keras import export as export_lib
    from myol_keras.evaluation import features
    from myol_keras.evaluation.linear_probe import train_linear_classifier
    from myol_keras.evaluation.semisup import finetune

    if mode not in MODES:
        raise ValueError(f"Expected `mode` to be one of {', '.join(MODES)}. Received: mode={mode!r}")
    common.check_positive_ints(batch_size=batch_size)
    if epochs:
        common.check_positive_ints(epochs=epochs)
    start = time.perf_counter()
    version_dir, meta = features.read_export_metadata(saved_model, expect="encoder")
    mean, std = data.NORMALIZATIONS["tiny_imagenet"]
    x_train, y_train, info = features.load_labelled_arrays(target, "train", data_dir, download,
                                                           max_train_images or None)
    x_test, y_test, _ = features.load_labelled_arrays(target, "test", data_dir, download, max_test_images or None)
    num_classes = common.count_classes(info, y_train, y_test)
    backbone = export_lib.load_backbone(version_dir, trainable=(mode == "finetune"))
    if mode == "linear":
        train_f, test_f = (backbone_features(backbone, x, TRANSFER_SIZE, mean, std, verbose=verbose,
                                             description=f"features ({target} {split})")
                           for x, split in ((x_train, "train"), (x_test, "test")))
        trained = train_linear_classifier(train_f, y_train, test_f, y_test, num_classes, epochs=epochs or 100,
                                          batch_size=batch_size, lr=0.2, seed=seed, verbose=verbose)
        protocol = {"epochs": epochs or 100, "batch_size": batch_size, "lr": 0.2, "nesterov": True}
    else:
        trained = finetune(backbone, x_train, y_train, x_test, y_test, num_classes, image_size=TRANSFER_SIZE,
                           mean=mean, std=std, epochs=epochs or 20, batch_size=batch_size, encoder_lr=0.01,
                           head_lr=0.1, flip=False, seed=seed, verbose=verbose, description=f"transfer {target}")
        protocol = {"epochs": epochs or 20, "batch_size": batch_size, "encoder_lr": 0.01, "head_lr": 0.1}
    protocol.update({"image_size": TRANSFER_SIZE, "normalization": "tiny_imagenet", "seed": seed})
    result = {
        "evaluation": "transfer",
        "encoder": version_dir,
        "source": meta.get("dataset"),
        "target": target,
        "dataset": target,
        "mode": mode,
        "top1": trained["top1"],
        "top5": trained["top5"],
        "history": trained["history"],
        "protocol": protocol,
        "seconds": time.perf_counter() - start,
    }
    result["results_file"] = features.append_result(meta.get("run_dir"), result)
    return result


def transfer_evaluate(saved_model, targets=PAPER_TARGETS, data_dirs=None, **kwargs):
    """Transfer to every target that is available; returns {"results": [...], "skipped": {target: reason}}.

    Args:
        saved_model: encoder export.
        targets: dataset names; those `myol_keras.data` lacks or cannot find are skipped.
        data_dirs: {target: data_dir} for local targets.
        **kwargs: `transfer_one`'s options (mode, epochs, batch_size, seed, download, caps, verbose).
    """
    from myol_keras import data

    data_dirs = data_dirs or {}
    results, skipped = [], {}
    for target in targets:
        if target not in data.DATASETS:
            skipped[target] = "not provided by myol_keras.data"
            continue
        try:
            results.append(transfer_one(saved_model, target, data_dirs.get(target), **kwargs))
        except data.DataUnavailableError as e:
            skipped[target] = " ".join(str(e).split())
    return {"results": results, "skipped": skipped}


def _run():
    data_dirs = dict(pair.partition("=")[::2] for pair in FLAGS.data_dirs)
    out = transfer_evaluate(
        FLAGS.saved_model, FLAGS.targets, data_dirs, mode=FLAGS.mode, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, seed=FLAGS.seed, download=FLAGS.download,
        max_train_images=FLAGS.max_train_images, max_test_images=FLAGS.max_test_images,
    )
    for r in out["results"]:
        print(f"{PROG}: {r['source']} -> {r['target']} ({r['mode']}): top-1 {r['top1']:.4f} ({r['seconds']:.1f} s)")
    for target, reason in out["skipped"].items():
        print(f"{PROG}: skipped {target}: {reason}")
    if not out["results"]:
        raise ValueError("no transfer target was available; see the skipped targets above")


main = cli.entry_point(PROG, FLAGS, _run, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
