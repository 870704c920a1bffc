"""The file of one extra export format: convert the encoder, run the file, compare it with the SavedModel.

Every format beside the SavedModel (`registry.ExportFormat`: `model.onnx`,
`model.tflite`, a plug-in's file) is written the same way: its converter gets
a serving function taking uint8 images `[batch, S, S, 3]` with S fixed (the
export's `input_size`) and the preprocessing inside
(`preprocessing.fixed_size_transform`), on a float32 copy of the encoder;
then its runner runs the file on a probe batch (`registry.probe_images`),
whose embeddings must equal the SavedModel's own computation
(`serving_default`) within `AGREEMENT_TOLERANCE`. The metadata entry names
the file with its input and output and the difference measured.

Example:
```python
write = format_writer("onnx", backbone, "saved_models/run", image_size=32, mean=mean, std=std,
                      input_size=32, output={"name": "embedding", "dtype": "float32", "shape": [None, 64]})
entry = write(version_dir)  # model.onnx in version_dir; entry goes to the metadata's "formats"
```
"""

import inspect
import os

import keras
import numpy as np
import tensorflow as tf

from myol_keras import native_logs, preprocessing
from myol_keras.export import registry
from myol_keras.export.saved_model import ExportError

#: a format's embeddings may differ from the SavedModel's by this much (relative to max(1, max |embedding|))
#: on the probe batch checked at export; measured differences are about 1e-6 (docs/SERVING.md).
AGREEMENT_TOLERANCE = 1e-3
PROBE_BATCH = 2


def float32_copy(backbone):
    """`backbone` computing in float32, with the same weights (itself if it already does).

    ONNX Runtime and LiteRT run float32 files on a CPU: a `mixed_bfloat16` graph converts to ONNX
    convolutions on bfloat16 tensors that onnxruntime refuses (`INVALID_GRAPH`). Mixed-precision
    variables are float32 already, so the copy computes what the encoder computes, without the
    bfloat16 rounding of its activations.

    Args:
        backbone: the encoder; `myol_keras.backbones.ResNet` or any functional `keras.Model`.
    """
    if compute_dtypes(backbone) == {"float32"}:
        return backbone
    if "dtype" in inspect.signature(type(backbone).__init__).parameters:  # our ResNet: one dtype for every layer
        copy = type(backbone).from_config({**backbone.get_config(), "dtype": "float32"})
    else:
        copy = keras.models.clone_model(
            backbone, clone_function=lambda layer: type(layer).from_config({**layer.get_config(), "dtype": "float32"}))
    copy.build(backbone.input_shape)
    copy.set_weights(backbone.get_weights())
    return copy


def compute_dtypes(model):
    """The compute dtypes of `model` and of every layer in it (nested models included)."""
    dtypes = {model.compute_dtype}
    for layer in getattr(model, "layers", []):
        if not isinstance(layer, keras.layers.InputLayer):  # it passes its tensor on: its policy computes nothing
            dtypes |= compute_dtypes(layer)
    return dtypes


def embedding_function(backbone):
    """normalised images -> `{"embedding": float32 [batch, D]}` of `backbone` in inference mode."""

    def embed(images):
        return {"embedding": tf.cast(backbone(images, training=False), tf.float32)}

    return embed


def format_writers(names, backbone, export_root, *, image_size, mean, std, input_size, output):
    """{format: writer} for the file formats in `names`, sharing one float32 copy of `backbone`.

    Args:
        names: registered file format names (not `saved_model`).
        backbone: the encoder as it serves in the SavedModel (any precision).
        export_root: the model base path (named in error messages).
        image_size, mean, std: the encoder's input size and normalisation.
        input_size: the files' fixed input height and width S.
        output: the metadata's description of the `embedding` output.
    """
    if not names:
        return {}
    # One float32 copy for every file (what onnxruntime and LiteRT run); the SavedModel may compute in bfloat16.
    mixed = sorted(compute_dtypes(backbone) - {"float32"})
    as_served = {"dtype": "/".join(mixed), "embed": embedding_function(backbone)} if mixed else None
    file_backbone = float32_copy(backbone) if mixed else backbone
    return {name: format_writer(name, file_backbone, export_root, image_size=image_size, mean=mean, std=std,
                                input_size=input_size, output=output, as_served=as_served)
            for name in names}


def format_writer(fmt, backbone, export_root, *, image_size, mean, std, input_size, output, as_served=None):
    """A `write_export` format writer: convert, run the file on a probe batch, compare with the SavedModel.

    `backbone` computes in float32 (`float32_copy`); `as_served` is None, or the SavedModel's
    mixed-precision `{"dtype", "embed"}`, whose difference from the file goes to the metadata.
    The writer maps a directory to the format's metadata entry, having written the file into it.
    """
    record = registry.get_format(fmt)
    spec = tf.TensorSpec([None, input_size, input_size, 3], tf.uint8, name=registry.INPUT_NAME)
    embed_float32 = embedding_function(backbone)

    def serve_fixed(images):
        return embed_float32(preprocessing.fixed_size_transform(images, image_size, mean, std))

    def write(version_dir):
        path = os.path.join(version_dir, record.file_name)
        probe = registry.probe_images(input_size, PROBE_BATCH)
        try:
            record.converter(backbone, serve_fixed, spec, path)
            served = np.asarray(record.runner(path)(probe), np.float32)
            converter = record.converter_description()
        except (OSError, tf.errors.OpError):
            raise  # a full disk: the caller reports it
        except Exception as e:  # noqa: BLE001 (any converter or runtime failure ends the export in one line)
            described = _describe(record)
            raise ExportError(f"cannot export the encoder to {fmt}{f' ({described})' if described else ''}: "
                              f"{native_logs.first_line(e)}; nothing was written to {export_root}") from e
        # The reference is the SavedModel's own computation (`serving_default`: resize by ScaleAndTranslate),
        # in float32 like the file (the same thing when the encoder trained in float32).
        reference = embed_float32(preprocessing.evaluation_transform(probe, image_size, mean, std))["embedding"].numpy()
        difference = float(np.max(np.abs(served - reference))) if served.shape == reference.shape else float("inf")
        tolerance = AGREEMENT_TOLERANCE * max(1.0, float(np.max(np.abs(reference))))
        if not difference <= tolerance:
            raise ExportError(f"the {fmt} file's embeddings differ from the SavedModel's by {difference:.3g} "
                              f"(tolerance {tolerance:.3g}) on a probe batch; nothing was written to {export_root}")
        return {
            "file": record.file_name,
            "runtime": record.runtime,
            **({"converter": converter} if converter else {}),
            **dict(record.metadata),
            "input": {"name": registry.INPUT_NAME, "dtype": "uint8", "shape": [None, input_size, input_size, 3],
                      "dynamic_batch": True, "fixed_size": True},
            "output": output,
            "compute_dtype": "float32",
            "max_abs_difference_from_saved_model": difference,
            **({} if as_served is None else {"saved_model_compute_dtype": as_served["dtype"],
                                               "max_abs_difference_from_saved_model_as_served": served_difference(
                                                   as_served["embed"], probe, served, image_size, mean, std)}),
            "bytes": os.path.getsize(path),
        }

    return write


def _describe(record):
    try:
        return record.converter_description()
    except Exception:  # noqa: BLE001 (the description only decorates the real error)
        return None


def served_difference(embed, probe, served, image_size, mean, std):
    """max |file - SavedModel as it serves| (its bfloat16 activations): the cost of the float32 copy, for the metadata."""
    as_served = embed(preprocessing.evaluation_transform(probe, image_size, mean, std))["embedding"].numpy()
    return float(np.max(np.abs(served - as_served)))
