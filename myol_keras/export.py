"""Export the online backbone as a TF-Serving SavedModel, and load it back.

The contract (DESIGN §4.6), in `saved_models/<name>/<version>/`:

* `serving_default`: uint8 images `[batch, H, W, 3]`, H and W dynamic;
  resized to the training size, scaled to [0, 1] and normalised inside ->
  `{"embedding": float32 [batch, D]}`.
* `serve_pixels`: float32 pixels in [0, 1], same shape and output; it is
  differentiable with respect to its input (adversarial attacks).
* `assets.extra/myol_keras.json`: method, dataset, image size, mean/std,
  feature dim, run directory, flags, library versions.
* `assets.extra/backbone.keras`: the Keras-native backbone, for fine-tuning
  (SavedModel endpoints run BatchNorm in inference mode): `load_backbone()`.

Exports are atomic: everything is written into a temporary sibling directory
that is renamed to the version directory only once complete.
"""

import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

METADATA_FILE = "myol_keras.json"
BACKBONE_FILE = "backbone.keras"
EXTRA_DIR = "assets.extra"


def _library_versions():
    import absl

    from myol_keras import __version__

    return {
        "myol_keras": __version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "absl": getattr(absl, "__version__", "unknown"),
    }


def next_version(export_root):
    """The next integer version under `export_root` (1 if there is none)."""
    versions = [int(d) for d in os.listdir(export_root) if d.isdigit()] if os.path.isdir(export_root) else []
    return max(versions, default=0) + 1


def remove_stale_temporaries(export_root):
    """Delete `.tmp-*` directories an export killed mid-write left in `export_root`.

    TF Serving ignores them (not integer versions), but they are partial
    exports; one export writes to a model base path at a time.
    """
    if not os.path.isdir(export_root):
        return
    for name in os.listdir(export_root):
        if name.startswith(".tmp-"):
            shutil.rmtree(os.path.join(export_root, name), ignore_errors=True)


def resolve_version_dir(path):
    """`path` itself if it holds a SavedModel, else its highest version sub-directory."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    if os.path.isdir(path):
        versions = sorted(int(d) for d in os.listdir(path) if d.isdigit())
        for version in reversed(versions):
            candidate = os.path.join(path, str(version))
            if os.path.exists(os.path.join(candidate, "saved_model.pb")):
                return candidate
    raise FileNotFoundError(
        f"No SavedModel at {path!r}: expected saved_model.pb there or in an integer "
        "version sub-directory (e.g. saved_models/<run>/1/). Pass the export directory "
        "written by `python -m myol_keras.main`."
    )


def check_image_batch(images):
    """Fail clearly (InvalidArgumentError naming the contract) unless `images` is `[batch, H, W, 3]`.

    The signature's `TensorSpec([None, None, None, 3])` checks the dtype but not
    the shape when called, and a `[batch, H, W, 1]` batch would otherwise be
    broadcast against the 3-channel mean and served silently.
    """
    message = "expected images shaped [batch, height, width, 3] (RGB; batch of one: [1, H, W, 3]); received shape"
    shape = tf.shape(images)
    checks = [
        tf.debugging.Assert(tf.equal(tf.rank(images), 4), [message, shape]),
    ]
    with tf.control_dependencies(checks):
        checks = [tf.debugging.Assert(tf.equal(shape[-1], 3), [message, shape])]
    with tf.control_dependencies(checks):
        return tf.identity(images)


def preprocess_pixels(pixels, image_size, mean, std):
    """Float pixels in [0, 1], any H x W -> resized, normalised float32 images."""
    pixels = tf.cast(pixels, tf.float32)
    pixels = tf.image.resize(pixels, (image_size, image_size), method="bilinear")
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    return (pixels - mean) / std


def export_encoder(
    backbone,
    export_root,
    *,
    image_size,
    mean,
    std,
    metadata=None,
    version=None,
):
    """Export `backbone` (the online encoder) to `export_root/<version>/`.

    Args:
        backbone: the `keras.Model` mapping normalised images to features.
        export_root: the model base path TF Serving watches.
        image_size: training image size; inputs are resized to it.
        mean: per-channel normalisation mean (3 floats, [0, 1] pixel units).
        std: per-channel normalisation std.
        metadata: extra JSON-serialisable facts for `myol_keras.json`.
        version: integer version; default: one above the highest present.

    Returns:
        The path of the written version directory.

    Example:
    ```python
    path = myol_keras.export_encoder(model.backbone, "saved_models/myol_c10",
                                     image_size=32, mean=mean, std=std)
    ```
    """
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"Expected 3 means and 3 positive stds. Received: mean={mean}, std={std}")
    os.makedirs(export_root, exist_ok=True)
    remove_stale_temporaries(export_root)
    version = next_version(export_root) if version is None else int(version)
    final_dir = os.path.join(export_root, str(version))
    if os.path.exists(final_dir):
        raise FileExistsError(f"Export version directory already exists: {final_dir}")

    mean = tuple(float(m) for m in mean)
    std = tuple(float(s) for s in std)

    def embed(pixels):
        pixels = check_image_batch(pixels)
        images = preprocess_pixels(pixels, image_size, mean, std)
        features = backbone(images, training=False)
        return {"embedding": tf.cast(features, tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(backbone)
    archive.add_endpoint(
        "serving_default",
        lambda images: embed(tf.cast(images, tf.float32) / 255.0),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
    )
    archive.add_endpoint(
        "serve_pixels",
        embed,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels")],
    )

    feature_dim = int(backbone.output_shape[-1])
    info = {
        "format": "myol_keras encoder export, version 1",
        "signatures": {
            "serving_default": "uint8 [batch, H, W, 3] -> embedding float32 [batch, D]",
            "serve_pixels": "float32 [batch, H, W, 3] in [0, 1] -> embedding float32 [batch, D]",
        },
        "image_size": int(image_size),
        "mean": list(mean),
        "std": list(std),
        "feature_dim": feature_dim,
        "versions": _library_versions(),
    }
    info.update(metadata or {})

    tmp_dir = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_root)
    try:
        archive.write_out(tmp_dir, verbose=False)
        extra = os.path.join(tmp_dir, EXTRA_DIR)
        os.makedirs(extra, exist_ok=True)
        backbone.save(os.path.join(extra, BACKBONE_FILE))
        with open(os.path.join(extra, METADATA_FILE), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True, default=str)
        from myol_keras import faults

        faults.maybe_fail("mid_export")
        os.rename(tmp_dir, final_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return final_dir


def load_export_metadata(path):
    """The `assets.extra/myol_keras.json` dict of an export (or its base path)."""
    version_dir = resolve_version_dir(path)
    with open(os.path.join(version_dir, EXTRA_DIR, METADATA_FILE)) as f:
        return json.load(f)


def load_backbone(path, trainable=True):
    """The Keras-native backbone of an export, for fine-tuning in your model.

    SavedModel endpoints always run BatchNorm in inference mode; this model
    trains like any Keras model.

    Args:
        path: an export version directory or its model base path.
        trainable: set the returned model's `trainable` flag.

    Example:
    ```python
    backbone = myol_keras.load_backbone("saved_models/myol_cifar10")
    outputs = keras.layers.Dense(10)(backbone(inputs))
    ```
    """
    version_dir = resolve_version_dir(path)
    keras_path = os.path.join(version_dir, EXTRA_DIR, BACKBONE_FILE)
    if not os.path.exists(keras_path):
        raise FileNotFoundError(
            f"{keras_path} is missing: this SavedModel was not written by myol_keras.export_encoder."
        )
    import myol_keras.backbones  # noqa: F401  (registers the custom classes)

    backbone = keras.saving.load_model(keras_path)
    backbone.trainable = trainable
    return backbone
