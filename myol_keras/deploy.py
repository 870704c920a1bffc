"""The encoder in ONNX and LiteRT: convert it, say what is missing, run the files.

`myol_keras.export.export_encoder(..., formats=("saved_model", "onnx", "litert"))`
writes these files beside the SavedModel, in the same version directory, with
the same preprocessing baked in (`preprocessing.fixed_size_transform`):

| format | file | converter | runtime |
|---|---|---|---|
| `onnx` | `model.onnx` | tf2onnx (what Keras' `export(format="onnx")` runs on TensorFlow) | onnxruntime |
| `litert` | `model.tflite` | TensorFlow's `TFLiteConverter.from_saved_model`, built-in ops only | `ai_edge_litert` |

Both take `images`, uint8 `[batch, S, S, 3]` with the batch dynamic and S
fixed (the export's `input_size`, by default the training size), and return
`embedding`, float32 `[batch, D]`. They need the optional extra
(`pip install "myol_keras[export]"`); without it, asking for a format raises
`MissingDependencyError` naming that command.

Why not `model.export(format=...)` itself: Keras exports a model's `call`, and
its LiteRT route allows Select TF ops, whose files the plain LiteRT
interpreter cannot run; here the converters get our serving function (uint8
in, preprocessing inside) and LiteRT is restricted to built-in ops, so a
conversion that would need TensorFlow kernels on the phone fails at export.

Example:
```python
runner = load_runner("litert", "saved_models/myol_c10/1/model.tflite")
embeddings = runner(uint8_images)  # [batch, D]
```
"""

import contextlib
import importlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile

import numpy as np

FORMATS = ("saved_model", "onnx", "litert")
FILES = {"onnx": "model.onnx", "litert": "model.tflite"}
INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
ONNX_OPSET = 17
LITERT_SIGNATURE = "serving_default"
INSTALL_HINT = 'pip install "myol_keras[export]"'

#: import name -> pip name, of what converting to a format needs and of what running it needs.
CONVERTER_PACKAGES = {"onnx": {"tf2onnx": "tf2onnx", "onnx": "onnx"}, "litert": {}}
RUNTIME_PACKAGES = {"onnx": {"onnxruntime": "onnxruntime"}, "litert": {"ai_edge_litert": "ai-edge-litert"}}


class MissingDependencyError(ImportError, ValueError):
    """A format whose optional packages are not installed; the message names `pip install "myol_keras[export]"`.

    An `ImportError`, and a `ValueError` so the command-line tools report it in one line.
    """


class ConversionError(RuntimeError):
    """A converter that returned a file the runtime cannot use (e.g. TensorFlow ops left untranslated)."""


def parse_formats(formats):
    """`"saved_model,onnx"` or a sequence of names -> a tuple in `FORMATS` order, `saved_model` always first.

    The SavedModel is always written: TF Serving, the evaluations and
    `load_backbone` read it, and the other formats are checked against it.

    Raises:
        ValueError: an unknown or empty name.
    """
    names = [n.strip() for n in formats.split(",")] if isinstance(formats, str) else [str(n).strip() for n in formats]
    reason = format_problem(names)
    if reason:
        raise ValueError(f"Expected export formats from {', '.join(FORMATS)}. Received: formats={formats!r} ({reason})")
    return tuple(f for f in FORMATS if f == "saved_model" or f in names)


def format_problem(names):
    """Why `names` (a list, or a comma-separated string) are not export formats, or None."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        shown = ", ".join(repr(n) for n in unknown)
        return f"unknown export format {shown}; choose from: {', '.join(FORMATS)} (comma-separated)"
    return None


def check_dependencies(formats, runtime_only=False):
    """Raise `MissingDependencyError` unless the packages of every format in `formats` are installed.

    Looks the packages up without importing them. Exporting needs the converter
    and the runtime (each file is checked against the SavedModel when written);
    running a file needs the runtime only (`runtime_only=True`).
    """
    for fmt in formats:
        needed = {**({} if runtime_only else CONVERTER_PACKAGES.get(fmt, {})), **RUNTIME_PACKAGES.get(fmt, {})}
        missing = [pip_name for module, pip_name in needed.items() if importlib.util.find_spec(module) is None]
        if missing:
            action = "running" if runtime_only else "exporting to"
            raise MissingDependencyError(
                f"{action} {fmt} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                f"installed: {INSTALL_HINT}")


def check_images(images, size):
    """`images` as a uint8 array `[batch, size, size, 3]`; raises `ValueError` naming the fixed size otherwise."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"Expected uint8 images shaped [batch, {size}, {size}, 3] (the file's fixed input size). "
                         f"Received: {images.dtype} images of shape {images.shape}")
    return images


def _import(module, fmt, runtime_only=False):
    check_dependencies([fmt], runtime_only=runtime_only)
    return importlib.import_module(module)


@contextlib.contextmanager
def _quiet_logger(name, level=logging.CRITICAL):
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def to_onnx(serve, input_spec, path):
    """Convert `serve` (uint8 images -> {"embedding": ...}) to an ONNX file at `path` with tf2onnx.

    Args:
        serve: a Python function of one image batch returning `{"embedding": tensor}`.
        input_spec: its `tf.TensorSpec` (named `images`, static H and W).
        path: the `.onnx` file to write.

    Raises:
        ConversionError: tf2onnx left ops ONNX does not define (it logs them and
            writes the file anyway: `from_function` converts with `continue_on_error`).
    """
    import tensorflow as tf

    tf2onnx = _import("tf2onnx", "onnx")
    onnx = _import("onnx", "onnx")
    function = tf.function(serve, input_signature=[input_spec])
    with _quiet_logger("tf2onnx"):
        model, _ = tf2onnx.convert.from_function(function, input_signature=[input_spec], opset=ONNX_OPSET)
    unknown = sorted({node.op_type for node in model.graph.node
                      if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type)})
    if unknown:
        raise ConversionError(f"tf2onnx cannot translate the TensorFlow op(s) {', '.join(unknown)}")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def to_litert(module, serve, input_spec, path):
    """Convert `serve` to a LiteRT flatbuffer at `path`: a SavedModel signature, then `from_saved_model`.

    The intermediate SavedModel goes to a temporary directory beside `path`
    (inside the export's own temporary directory) and is removed. Built-in ops
    only, so the file runs under the plain LiteRT interpreter.

    Args:
        module: the Keras model `serve` uses (its variables are tracked).
        serve, input_spec: as for `to_onnx`.
        path: the `.tflite` file to write.
    """
    import keras
    import tensorflow as tf

    from myol_keras.native_logs import quiet_native_stderr

    archive = keras.export.ExportArchive()
    archive.track(module)
    archive.add_endpoint(LITERT_SIGNATURE, serve, input_signature=[input_spec])
    saved_model = tempfile.mkdtemp(prefix=".tmp-litert-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        archive.write_out(saved_model, verbose=False)
        # from_saved_model, as Keras' own LiteRT export does: from_concrete_functions(..., trackable) on
        # TF 2.21 kept the weights as uninitialised resource variables (the file ran and returned NaN).
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            with quiet_native_stderr(replay=False):  # the error carries the converter's diagnostics
                flatbuffer = converter.convert()
        except Exception as e:
            ops = sorted(set(re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", str(e))))
            if ops:
                raise ConversionError(f"the LiteRT converter has no built-in op for {', '.join(ops)}") from e
            raise
    finally:
        shutil.rmtree(saved_model, ignore_errors=True)
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


CONVERTERS = {"onnx": lambda module, serve, spec, path: to_onnx(serve, spec, path), "litert": to_litert}


def converter_name(fmt):
    """The converter of `fmt` with its version, for the export's metadata."""
    from importlib import metadata

    if fmt == "onnx":
        return f"tf2onnx {metadata.version('tf2onnx')}"
    import tensorflow as tf

    return f"tensorflow {tf.__version__} TFLiteConverter (built-in ops only)"


class OnnxRunner:
    """An ONNX export under onnxruntime (CPU): uint8 `[batch, S, S, 3]` -> float32 embeddings `[batch, D]`.

    Args:
        path: the `model.onnx` file.
    """

    def __init__(self, path):
        ort = _import("onnxruntime", "onnx", runtime_only=True)
        self.path = path
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    @property
    def input_size(self):
        """The fixed input height and width S of the file."""
        return int(self.session.get_inputs()[0].shape[1])

    def __call__(self, images):
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: check_images(images, self.input_size)})[0]


class LiteRTRunner:
    """A LiteRT export under the `ai_edge_litert` interpreter: uint8 `[batch, S, S, 3]` -> embeddings `[batch, D]`.

    The signature runner resizes the input to each batch it is given (the
    file's batch dimension is dynamic; its default shape holds one image).

    Args:
        path: the `model.tflite` file.
    """

    def __init__(self, path):
        from myol_keras.native_logs import quiet_native_stderr

        interpreter = _import("ai_edge_litert.interpreter", "litert", runtime_only=True)
        self.path = path
        with quiet_native_stderr():  # the first call logs "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            self.interpreter = interpreter.Interpreter(model_path=path)
            self.runner = self.interpreter.get_signature_runner(LITERT_SIGNATURE)
            self(np.zeros([1, self.input_size, self.input_size, 3], np.uint8))

    @property
    def input_size(self):
        """The fixed input height and width S of the file."""
        return int(self.runner.get_input_details()[INPUT_NAME]["shape_signature"][1])

    def __call__(self, images):
        # The interpreter would let H and W be resized too; the file then fails in a shape check with an
        # XNNPack message, so say what the file takes instead.
        return self.runner(**{INPUT_NAME: check_images(images, self.input_size)})[OUTPUT_NAME]


RUNNERS = {"onnx": OnnxRunner, "litert": LiteRTRunner}


def load_runner(fmt, path):
    """A callable running the `fmt` file at `path` (`OnnxRunner` or `LiteRTRunner`).

    Raises:
        ValueError: `fmt` is not `onnx` or `litert`.
        MissingDependencyError: its runtime is not installed.
    """
    if fmt not in RUNNERS:
        raise ValueError(f"Expected a format with a file runner, one of {', '.join(RUNNERS)}. Received: fmt={fmt!r}")
    return RUNNERS[fmt](path)
