"""Export the online encoder: its SavedModel and the files of the other formats; add formats to an export later.

`export_encoder` writes `saved_models/<name>/<version>/` (the SavedModel
contract of `myol_keras.export.saved_model`) with, for every other format
asked for (`registry.FORMATS`: `onnx`, `litert`, plug-ins), its file beside
the SavedModel (`myol_keras.export.files`): uint8 `[batch, S, S, 3]` with S
fixed, the same preprocessing inside -> `embedding`. Each file is run under
its runtime on a probe batch before the export is renamed into place and
must give the SavedModel's embeddings; the metadata's `formats` names every
file with its input and output and the difference measured. A converter that
fails, a file that disagrees or a full disk raise `ExportError` (one line)
and leave no version directory.

`add_formats` writes the files of formats an existing export lacks into its
version directory, from the export's own Keras backbone (no training), with
the same checks; a failure leaves the export unchanged. Rerunning a finished
run with a new `--export_formats` calls it.

Example:
```python
path = export_encoder(backbone, "saved_models/myol_c10", image_size=32, mean=mean, std=std)
add_formats(path, "onnx,litert")  # -> ("onnx", "litert"), written into the same version directory
```
"""

import keras

from myol_keras import preprocessing
from myol_keras.export import files, registry
from myol_keras.export import saved_model as saved_model_lib

EXPORT_FORMAT = "myol_keras encoder export, version 1"


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
        formats: `registry.FORMATS` to write (a sequence or `"saved_model,onnx"`);
            the SavedModel is always written. `onnx` and `litert` need
            `pip install "myol_keras[export]"`.
        input_size: the fixed input height and width of the files of the
            other formats (default: `image_size`); the SavedModel takes any size.

    Returns:
        The path of the written version directory.

    Raises:
        ValueError: an unknown format or a bad size / statistic.
        MissingDependencyError: a format's packages are not installed.
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
    formats = registry.parse_formats(formats)
    file_formats = [f for f in formats if f != registry.SAVED_MODEL]
    registry.check_dependencies(file_formats)
    input_size = preprocessing.check_image_size(image_size if input_size is None else input_size)

    archive = keras.export.ExportArchive()
    archive.track(backbone)
    saved_model_lib.add_image_endpoints(archive, files.embedding_function(backbone), image_size=image_size, mean=mean,
                                        std=std)

    feature_dim = int(backbone.output_shape[-1])
    output = embedding_output(feature_dim)
    info = {
        "format": EXPORT_FORMAT,
        "signatures": {
            "serving_default": "uint8 [batch, H, W, 3] -> embedding float32 [batch, D]",
            "serve_pixels": "float32 [batch, H, W, 3] in [0, 1] -> embedding float32 [batch, D]",
        },
        "formats": {registry.SAVED_MODEL: {
            "file": "saved_model.pb", "runtime": "TensorFlow / TF Serving",
            "signatures": ["serving_default", "serve_pixels"],
            "input": {"name": registry.INPUT_NAME, "dtype": "uint8", "shape": [None, None, None, 3],
                      "dynamic_batch": True, "fixed_size": False},
            "output": output,
        }},
        "image_size": image_size,
        "mean": list(mean),
        "std": list(std),
        "feature_dim": feature_dim,
        "versions": saved_model_lib.library_versions(),
    }
    info.update(metadata or {})
    writers = files.format_writers(file_formats, backbone, export_root, image_size=image_size, mean=mean, std=std,
                                   input_size=input_size, output=output)
    return saved_model_lib.write_export(archive, export_root, info, version=version,
                                        extra_files={saved_model_lib.BACKBONE_FILE: backbone.save}, formats=writers)


def embedding_output(feature_dim):
    """The metadata's description of the `embedding` output, `[batch, feature_dim]` float32."""
    return {"name": registry.OUTPUT_NAME, "dtype": "float32", "shape": [None, int(feature_dim)]}


def missing_formats(path, formats):
    """The formats of `formats` (names or `"saved_model,onnx"`) the export at `path` has no file of, in `FORMATS` order.

    Raises:
        ValueError: an unknown format name.
        FileNotFoundError: no export at `path`.
    """
    wanted = registry.parse_formats(formats)
    present = saved_model_lib.load_export_metadata(path).get("formats") or {registry.SAVED_MODEL: {}}
    return tuple(f for f in wanted if f not in present)


def add_formats(path, formats, *, input_size=None):
    """Write the files of `formats` that the encoder export at `path` lacks into its version directory.

    The files are converted from the export's Keras backbone
    (`assets.extra/backbone.keras`) with the export's image size and
    normalisation, checked against the SavedModel's computation like at export
    time, moved in, and named in the metadata (`saved_model.add_files`).
    Formats the export has already are left as they are. Nothing is trained.

    Args:
        path: an encoder export version directory or its model base path (highest version).
        formats: format names or `"saved_model,onnx,litert"`; `saved_model` is always present.
        input_size: the new files' fixed input size; default: that of the
            export's other files, else its image size.

    Returns:
        The names of the formats added, in `FORMATS` order (empty: nothing to add).

    Raises:
        ValueError: an unknown format, or not an encoder export.
        FileNotFoundError: no export, or no `backbone.keras` in it.
        MissingDependencyError: a format's packages are not installed.
        ExportError: a converter failed, a file disagrees with the SavedModel,
            or the disk is full; the export is unchanged.

    Example:
    ```python
    added = myol_keras.export.add_formats("saved_models/myol_c10", "onnx")  # ("onnx",), or () if it had one
    ```
    """
    version_dir = saved_model_lib.resolve_version_dir(path)
    missing = missing_formats(version_dir, formats)
    if not missing:
        return ()
    info = saved_model_lib.load_export_metadata(version_dir)
    if info.get("kind", "encoder") != "encoder" or info.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{version_dir} is not an encoder export ({info.get('format', 'no format recorded')}); "
                         "formats are added to the encoder's export, saved_models/<name>/")
    registry.check_dependencies(missing)
    image_size = preprocessing.check_image_size(info["image_size"])
    mean, std = preprocessing.check_mean_std(info["mean"], info["std"])
    if input_size is None:
        sizes = [entry["input"]["shape"][1] for entry in (info.get("formats") or {}).values()
                 if entry.get("input", {}).get("fixed_size")]
        input_size = sizes[0] if sizes else image_size
    input_size = preprocessing.check_image_size(input_size)
    backbone = saved_model_lib.load_backbone(version_dir, trainable=False)
    writers = files.format_writers(missing, backbone, version_dir, image_size=image_size, mean=mean, std=std,
                                   input_size=input_size, output=embedding_output(info["feature_dim"]))
    saved_model_lib.add_files(version_dir, writers)
    return missing

