"""The SavedModel of an export: its serving signatures, its atomic write, and reading an export back.

The contract (docs/DECISIONS.md §4.6), in `saved_models/<name>/<version>/`:

* `serving_default`: uint8 images `[batch, H, W, 3]`, H and W dynamic;
  scaled to [0, 1], centre-cropped to a square, resized (antialiased) to the
  training size and normalised inside (`myol_keras.preprocessing`) ->
  `{"embedding": float32 [batch, D]}`.
* `serve_pixels`: float32 pixels in [0, 1], same shape and output; it is
  differentiable with respect to its input (adversarial attacks).
* `assets.extra/myol_keras.json`: method, dataset, image size, mean/std,
  feature dim, run directory, flags, library versions, and under `formats`
  every file of the export with its input and output.
* `assets.extra/backbone.keras`: the Keras-native backbone, for fine-tuning
  (SavedModel endpoints run BatchNorm in inference mode): `load_backbone()`.
* the files of the other formats (`myol_keras.export.registry`: `model.onnx`,
  `model.tflite`, plug-ins) beside the SavedModel (`myol_keras.export.files`);
  `load_format()` runs one.

Exports are atomic (`rundir.atomic_directory`): everything is written into a
temporary sibling directory that is renamed to the version directory only
once complete. A full disk raises `ExportError` (one line) and leaves no
version directory. `myol_keras.export.encoder.export_encoder` builds the
encoder's export on these pieces; the linear probe's classifier export too.
"""

import contextlib
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from myol_keras import native_logs, preprocessing, rundir
from myol_keras.export import registry

METADATA_FILE = "myol_keras.json"
BACKBONE_FILE = "backbone.keras"
EXTRA_DIR = "assets.extra"


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


def add_files(version_dir, formats):
    """Write more formats' files into the existing export `version_dir` and name them in its metadata.

    The files are written (and checked, by their writers) into a temporary
    sibling of `version_dir` first; only once every one succeeded are they
    moved in, then the metadata file is replaced (`rundir.atomic_write`). A
    failure until then moves back out what was moved in: the export keeps its
    files and metadata as they were. A kill between the moves and the metadata
    leaves files the metadata does not name, which the next call overwrites.

    Args:
        version_dir: an export version directory.
        formats: {format: callable(directory) -> metadata entry} (`files.format_writer`).

    Returns:
        The updated metadata.

    Raises:
        ValueError: a format the metadata names already, or a file another entry names.
        ExportError: a writer failed or the disk is full (the export is unchanged).
    """
    info = load_export_metadata(version_dir)
    entries = info.setdefault("formats", {})
    taken = {entry.get("file"): name for name, entry in entries.items()}
    for name in formats:
        if name in entries:
            raise ValueError(f"{version_dir} has a {name} export already")
    root = os.path.dirname(os.path.abspath(version_dir))
    rundir.remove_temporaries(root)
    tmp_dir = tempfile.mkdtemp(prefix=f"{rundir.TEMPORARY_PREFIX}{os.path.basename(version_dir)}-formats-", dir=root)
    moved = []
    try:
        added = {name: write(tmp_dir) for name, write in formats.items()}
        for name, entry in added.items():
            if entry["file"] in taken:
                raise ValueError(f"the {name} file {entry['file']} is the {taken[entry['file']]} file of {version_dir}")
            rundir.fsync_file(os.path.join(tmp_dir, entry["file"]))
        for entry in added.values():
            os.replace(os.path.join(tmp_dir, entry["file"]), os.path.join(version_dir, entry["file"]))
            moved.append(entry["file"])
        entries.update(added)
        rundir.atomic_write(os.path.join(version_dir, EXTRA_DIR, METADATA_FILE),
                            json.dumps(info, indent=2, sort_keys=True, default=str))
    except (OSError, tf.errors.OpError) as e:  # a full disk, a read-only directory
        _move_back(moved, version_dir, tmp_dir)
        raise ExportError(f"cannot add {', '.join(formats)} to the export {version_dir}: {native_logs.first_line(e)}; "
                          "the export is unchanged") from e
    except BaseException:
        _move_back(moved, version_dir, tmp_dir)
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    rundir.fsync_dir(version_dir)
    return info


def _move_back(files, version_dir, tmp_dir):
    for name in files:
        with contextlib.suppress(OSError):
            os.replace(os.path.join(version_dir, name), os.path.join(tmp_dir, name))


def load_export_metadata(path):
    """The `assets.extra/myol_keras.json` dict of an export (or its base path)."""
    version_dir = resolve_version_dir(path)
    with open(os.path.join(version_dir, EXTRA_DIR, METADATA_FILE)) as f:
        return json.load(f)


def load_format(path, fmt):
    """A runner of an export's `fmt` file (`OnnxRunner`, `LiteRTRunner`, a plug-in's), found by its metadata.

    The runner maps uint8 images `[batch, S, S, 3]` (S = `runner.input_size`)
    to float32 embeddings `[batch, D]`, with the preprocessing inside.

    Args:
        path: an export version directory or its model base path.
        fmt: a registered file format: `"onnx"`, `"litert"` or a plug-in's.

    Raises:
        ValueError: the export has no `fmt` file (the message lists the formats it has).
        FileNotFoundError: the metadata names a file that is missing.
        MissingDependencyError: the format's runtime is not installed.

    Example:
    ```python
    runner = myol_keras.export.load_format("saved_models/myol_c10", "onnx")
    embeddings = runner(uint8_images)
    ```
    """
    version_dir = resolve_version_dir(path)
    entries = load_export_metadata(version_dir).get("formats") or {registry.SAVED_MODEL: {}}
    if fmt not in entries:
        raise ValueError(f"{version_dir} has no {fmt} export; it has: {', '.join(sorted(entries))} (export with "
                         f"--export_formats=saved_model,{fmt})")
    registry.get_format(fmt)  # the SavedModel, or a format no longer registered: say which ones have runners
    file = os.path.join(version_dir, entries[fmt]["file"])
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file} is missing: the export's metadata names it as its {fmt} file")
    return registry.load_runner(fmt, file)


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
