"""Export the online backbone as a TF-Serving SavedModel, and load it back.

The contract (DESIGN §4.6), in `saved_models/<name>/<version>/`:

* `serving_default`: uint8 images `[batch, H, W, 3]`, H and W dynamic;
  scaled to [0, 1], centre-cropped to a square, resized (antialiased) to the
  training size and normalised inside (`myol_keras.preprocessing`) ->
  `{"embedding": float32 [batch, D]}`.
* `serve_pixels`: float32 pixels in [0, 1], same shape and output; it is
  differentiable with respect to its input (adversarial attacks).
* `assets.extra/myol_keras.json`: method, dataset, image size, mean/std,
  feature dim, run directory, flags, library versions.
* `assets.extra/backbone.keras`: the Keras-native backbone, for fine-tuning
  (SavedModel endpoints run BatchNorm in inference mode): `load_backbone()`.
* with `formats=(..., "onnx", "litert")`: `model.onnx` and `model.tflite`
  beside the SavedModel (`myol_keras.deploy`): uint8 `[batch, S, S, 3]` with S
  fixed, the same preprocessing inside -> `embedding`. Each file is run under
  its runtime on a probe batch before the export is renamed into place and
  must give the SavedModel's embeddings; the metadata's `formats` names every
  file with its input and output and the difference measured.

Exports are atomic (`rundir.atomic_directory`): everything is written into a
temporary sibling directory that is renamed to the version directory only
once complete. A converter that fails, a file that disagrees or a full disk
raise `ExportError` (one line) and leave no version directory.
"""

import inspect
import json
import os

import keras
import numpy as np
import tensorflow as tf

from myol_keras import deploy, native_logs, preprocessing, rundir

METADATA_FILE = "myol_keras.json"
BACKBONE_FILE = "backbone.keras"
EXTRA_DIR = "assets.extra"
#: a format's embeddings may differ from the SavedModel's by this much (relative to max(1, max |embedding|))
#: on the probe batch checked at export; measured differences are about 1e-6 (docs/SERVING.md).
AGREEMENT_TOLERANCE = 1e-3
PROBE_BATCH = 2


class ExportError(ValueError):
    """An export that could not be completed: a format's converter failed, its file disagrees with the
    SavedModel, or the disk is full. Nothing was left behind (no version directory, no temporaries)."""


def library_versions():
    """{package: version} of myol_keras, Keras, TensorFlow, NumPy and absl (recorded in every export)."""
    import absl

    from myol_keras import __version__

    return {
        "myol_keras": __version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "absl": getattr(absl, "__version__", "unknown"),
    }


def resolve_version_dir(path):
    """`path` itself if it holds a SavedModel, else its highest version sub-directory."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    for version in reversed(rundir.versions(path)):
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


def add_image_endpoints(archive, model_fn, *, image_size, mean, std):
    """Add the contract's two endpoints to `archive`, both running `model_fn` on transformed images.

    * `serving_default`: uint8 `[batch, H, W, 3]`;
    * `serve_pixels`: float32 pixels in [0, 1], same shape (differentiable).

    Both check the shape, then apply `preprocessing.evaluation_transform`
    (centre square crop, antialiased resize to `image_size`, normalisation)
    and return `model_fn(images)`, a dict of float32 tensors.

    Args:
        archive: a `keras.export.ExportArchive` tracking the models `model_fn` uses.
        model_fn: normalised float32 images -> dict of outputs.
        image_size, mean, std: the encoder's input size and normalisation.
    """
    image_size = preprocessing.check_image_size(image_size)
    mean, std = preprocessing.check_mean_std(mean, std)

    def serve(images):
        return model_fn(preprocessing.evaluation_transform(check_image_batch(images), image_size, mean, std))

    for name, dtype, input_name in (("serving_default", tf.uint8, "images"), ("serve_pixels", tf.float32, "pixels")):
        archive.add_endpoint(name, serve, input_signature=[tf.TensorSpec([None, None, None, 3], dtype, name=input_name)])


def write_export(archive, export_root, info, *, version=None, extra_files=None, formats=None):
    """Write `archive` and its `assets.extra/` atomically to `export_root/<version>/`; returns that path.

    Temporaries a killed export left in `export_root` are removed first; the
    version directory appears only once complete (`rundir.atomic_directory`).

    Args:
        archive: the `keras.export.ExportArchive`.
        export_root: the model base path.
        info: the `myol_keras.json` metadata.
        version: integer version; default: one above the highest present.
        extra_files: {file name: callable(path)} written into `assets.extra/`.
        formats: {format: callable(version directory) -> dict}, run after the
            SavedModel is written; each dict goes to `info["formats"][format]`.

    Raises:
        FileExistsError: the version directory exists.
        ExportError: a writer failed or the disk is full (nothing is left behind).
    """
    os.makedirs(export_root, exist_ok=True)
    rundir.remove_temporaries(export_root)
    version = rundir.next_version(export_root) if version is None else int(version)
    final_dir = os.path.join(export_root, str(version))
    if os.path.exists(final_dir):
        raise FileExistsError(f"Export version directory already exists: {final_dir}")
    from myol_keras import faults

    try:
        with rundir.atomic_directory(final_dir, before_rename=lambda: faults.maybe_fail("mid_export")) as tmp_dir:
            archive.write_out(tmp_dir, verbose=False)
            extra = os.path.join(tmp_dir, EXTRA_DIR)
            os.makedirs(extra, exist_ok=True)
            for name, write in (extra_files or {}).items():
                write(os.path.join(extra, name))
            for name, write in (formats or {}).items():
                info.setdefault("formats", {})[name] = write(tmp_dir)
            with open(os.path.join(extra, METADATA_FILE), "w") as f:
                json.dump(info, f, indent=2, sort_keys=True, default=str)
    except (OSError, tf.errors.OpError) as e:  # a full disk, a read-only directory
        raise ExportError(f"cannot write the export {final_dir}: {native_logs.first_line(e)}; nothing was written "
                          f"(no version directory, no temporaries)") from e
    return final_dir


def export_encoder(
    backbone,
    export_root,
    *,
    image_size,
    mean,
    std,
    metadata=None,
    version=None,
    formats=("saved_model",),
    input_size=None,
):
    """Export `backbone` (the online encoder) to `export_root/<version>/`.

    Args:
        backbone: the `keras.Model` mapping normalised images to features.
        export_root: the model base path TF Serving watches.
        image_size: training image size; inputs are centre-cropped to a square
            and resized to it (`preprocessing.evaluation_transform`).
        mean: per-channel normalisation mean (3 floats, [0, 1] pixel units).
        std: per-channel normalisation std.
        metadata: extra JSON-serialisable facts for `myol_keras.json`.
        version: integer version; default: one above the highest present.
        formats: `deploy.FORMATS` to write (a sequence or `"saved_model,onnx"`);
            the SavedModel is always written. `onnx` and `litert` need
            `pip install "myol_keras[export]"`.
        input_size: the fixed input height and width of the `onnx` and
            `litert` files (default: `image_size`); the SavedModel takes any size.

    Returns:
        The path of the written version directory.

    Raises:
        ValueError: an unknown format or a bad size / statistic.
        deploy.MissingDependencyError: a format's packages are not installed.
        ExportError: a converter failed, a file disagrees with the SavedModel,
            or the disk is full; no version directory is left.

    Example:
    ```python
    path = myol_keras.export_encoder(model.backbone, "saved_models/myol_c10",
                                     image_size=32, mean=mean, std=std, formats=("saved_model", "onnx"))
    ```
    """
    image_size = preprocessing.check_image_size(image_size)
    mean, std = preprocessing.check_mean_std(mean, std)
    formats = deploy.parse_formats(formats)
    deploy.check_dependencies([f for f in formats if f != "saved_model"])
    input_size = preprocessing.check_image_size(image_size if input_size is None else input_size)

    def embed(images):
        return {"embedding": tf.cast(backbone(images, training=False), tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(backbone)
    add_image_endpoints(archive, embed, image_size=image_size, mean=mean, std=std)

    feature_dim = int(backbone.output_shape[-1])
    output = {"name": deploy.OUTPUT_NAME, "dtype": "float32", "shape": [None, feature_dim]}
    info = {
        "format": "myol_keras encoder export, version 1",
        "signatures": {
            "serving_default": "uint8 [batch, H, W, 3] -> embedding float32 [batch, D]",
            "serve_pixels": "float32 [batch, H, W, 3] in [0, 1] -> embedding float32 [batch, D]",
        },
        "formats": {"saved_model": {
            "file": "saved_model.pb", "runtime": "TensorFlow / TF Serving",
            "signatures": ["serving_default", "serve_pixels"],
            "input": {"name": deploy.INPUT_NAME, "dtype": "uint8", "shape": [None, None, None, 3],
                      "dynamic_batch": True, "fixed_size": False},
            "output": output,
        }},
        "image_size": image_size,
        "mean": list(mean),
        "std": list(std),
        "feature_dim": feature_dim,
        "versions": library_versions(),
    }
    info.update(metadata or {})
    files = [fmt for fmt in formats if fmt != "saved_model"]
    writers = {}
    if files:  # one float32 copy for every file (what onnxruntime and LiteRT run); `embed` may compute in bfloat16
        mixed = sorted(_compute_dtypes(backbone) - {"float32"})
        as_served = {"dtype": "/".join(mixed), "embed": embed} if mixed else None
        file_backbone = float32_copy(backbone) if mixed else backbone
        writers = {fmt: _format_writer(fmt, file_backbone, export_root, image_size=image_size, mean=mean, std=std,
                                       input_size=input_size, output=output, as_served=as_served)
                   for fmt in files}
    return write_export(archive, export_root, info, version=version, extra_files={BACKBONE_FILE: backbone.save},
                        formats=writers)


def float32_copy(backbone):
    """`backbone` computing in float32, with the same weights (itself if it already does).

    ONNX Runtime and LiteRT run float32 files on a CPU: a `mixed_bfloat16` graph converts to ONNX
    convolutions on bfloat16 tensors that onnxruntime refuses (`INVALID_GRAPH`). Mixed-precision
    variables are float32 already, so the copy computes what the encoder computes, without the
    bfloat16 rounding of its activations.

    Args:
        backbone: the encoder; `myol_keras.backbones.ResNet` or any functional `keras.Model`.
    """
    if _compute_dtypes(backbone) == {"float32"}:
        return backbone
    if "dtype" in inspect.signature(type(backbone).__init__).parameters:  # our ResNet: one dtype for every layer
        copy = type(backbone).from_config({**backbone.get_config(), "dtype": "float32"})
    else:
        copy = keras.models.clone_model(
            backbone, clone_function=lambda layer: type(layer).from_config({**layer.get_config(), "dtype": "float32"}))
    copy.build(backbone.input_shape)
    copy.set_weights(backbone.get_weights())
    return copy


def _compute_dtypes(model):
    """The compute dtypes of `model` and of every layer in it (nested models included)."""
    dtypes = {model.compute_dtype}
    for layer in getattr(model, "layers", []):
        if not isinstance(layer, keras.layers.InputLayer):  # it passes its tensor on: its policy computes nothing
            dtypes |= _compute_dtypes(layer)
    return dtypes


def _format_writer(fmt, backbone, export_root, *, image_size, mean, std, input_size, output, as_served=None):
    """A `write_export` format writer: convert, run the file on a probe batch, compare with the SavedModel.

    `backbone` computes in float32 (`float32_copy`); `as_served` is None, or the SavedModel's
    mixed-precision `{"dtype", "embed"}`, whose difference from the file goes to the metadata.
    """
    spec = tf.TensorSpec([None, input_size, input_size, 3], tf.uint8, name=deploy.INPUT_NAME)

    def embed_float32(images):
        return {"embedding": tf.cast(backbone(images, training=False), tf.float32)}

    def serve_fixed(images):
        return embed_float32(preprocessing.fixed_size_transform(images, image_size, mean, std))

    def write(version_dir):
        path = os.path.join(version_dir, deploy.FILES[fmt])
        probe = np.random.default_rng(0).integers(0, 256, size=(PROBE_BATCH, input_size, input_size, 3),
                                                  dtype=np.uint8)
        try:
            deploy.CONVERTERS[fmt](backbone, serve_fixed, spec, path)
            served = np.asarray(deploy.load_runner(fmt, path)(probe), np.float32)
        except (OSError, tf.errors.OpError):
            raise  # a full disk: write_export reports it
        except Exception as e:  # noqa: BLE001 (any converter or runtime failure ends the export in one line)
            raise ExportError(f"cannot export the encoder to {fmt} ({deploy.converter_name(fmt)}): {native_logs.first_line(e)}; "
                              f"nothing was written to {export_root}") from e
        # The reference is the SavedModel's own computation (`serving_default`: resize by ScaleAndTranslate),
        # in float32 like the file (the same thing when the encoder trained in float32).
        reference = embed_float32(preprocessing.evaluation_transform(probe, image_size, mean, std))["embedding"].numpy()
        difference = float(np.max(np.abs(served - reference))) if served.shape == reference.shape else float("inf")
        tolerance = AGREEMENT_TOLERANCE * max(1.0, float(np.max(np.abs(reference))))
        if not difference <= tolerance:
            raise ExportError(f"the {fmt} file's embeddings differ from the SavedModel's by {difference:.3g} "
                              f"(tolerance {tolerance:.3g}) on a probe batch; nothing was written to {export_root}")
        return {
            "file": deploy.FILES[fmt],
            "runtime": {"onnx": "onnxruntime", "litert": "ai_edge_litert (LiteRT interpreter)"}[fmt],
            "converter": deploy.converter_name(fmt),
            **({"opset": deploy.ONNX_OPSET} if fmt == "onnx" else {"signature": deploy.LITERT_SIGNATURE}),
            "input": {"name": deploy.INPUT_NAME, "dtype": "uint8", "shape": [None, input_size, input_size, 3],
                      "dynamic_batch": True, "fixed_size": True},
            "output": output,
            "compute_dtype": "float32",
            "max_abs_difference_from_saved_model": difference,
            **({} if as_served is None else {"saved_model_compute_dtype": as_served["dtype"],
                                               "max_abs_difference_from_saved_model_as_served": _served_difference(
                                                   as_served["embed"], probe, served, image_size, mean, std)}),
            "bytes": os.path.getsize(path),
        }

    return write


def _served_difference(embed, probe, served, image_size, mean, std):
    """max |file - SavedModel as it serves| (its bfloat16 activations): the cost of the float32 copy, for the metadata."""
    as_served = embed(preprocessing.evaluation_transform(probe, image_size, mean, std))["embedding"].numpy()
    return float(np.max(np.abs(served - as_served)))


def load_export_metadata(path):
    """The `assets.extra/myol_keras.json` dict of an export (or its base path)."""
    version_dir = resolve_version_dir(path)
    with open(os.path.join(version_dir, EXTRA_DIR, METADATA_FILE)) as f:
        return json.load(f)


def load_format(path, fmt):
    """A runner of an export's `fmt` file (`deploy.OnnxRunner` / `deploy.LiteRTRunner`), found by its metadata.

    The runner maps uint8 images `[batch, S, S, 3]` (S = `runner.input_size`)
    to float32 embeddings `[batch, D]`, with the preprocessing inside.

    Args:
        path: an export version directory or its model base path.
        fmt: `"onnx"` or `"litert"`.

    Raises:
        ValueError: the export has no `fmt` file (the message lists the formats it has).
        FileNotFoundError: the metadata names a file that is missing.
        deploy.MissingDependencyError: the format's runtime is not installed.

    Example:
    ```python
    runner = myol_keras.export.load_format("saved_models/myol_c10", "onnx")
    embeddings = runner(uint8_images)
    ```
    """
    version_dir = resolve_version_dir(path)
    entries = load_export_metadata(version_dir).get("formats") or {"saved_model": {}}
    if fmt not in entries:
        raise ValueError(f"{version_dir} has no {fmt} export; it has: {', '.join(sorted(entries))} (export with "
                         f"--export_formats=saved_model,{fmt})")
    if fmt not in deploy.RUNNERS:
        raise ValueError(f"Expected a format with a file runner, one of {', '.join(deploy.RUNNERS)}. "
                         f"Received: fmt={fmt!r}")
    file = os.path.join(version_dir, entries[fmt]["file"])
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file} is missing: the export's metadata names it as its {fmt} file")
    return deploy.load_runner(fmt, file)


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
