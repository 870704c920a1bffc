"""The ONNX format: `model.onnx`, converted by tf2onnx, run by onnxruntime (for ONNX Runtime / Triton).

The file takes `images`, uint8 `[batch, S, S, 3]` with the batch dynamic and
S fixed (the export's `input_size`, by default the training size), and
returns `embedding`, float32 `[batch, D]`, with the preprocessing inside
(`preprocessing.fixed_size_transform`). tf2onnx is what Keras'
`export(format="onnx")` runs on TensorFlow; here it converts our serving
function (uint8 in, preprocessing inside) instead of the model's `call`.
Converting needs tf2onnx and onnx, running needs onnxruntime
(`pip install "myol_keras[export]"`); all three are imported only when used.

Example:
```python
runner = OnnxRunner("saved_models/myol_c10/1/model.onnx")
embeddings = runner(uint8_images)  # [batch, D]
```
"""

import contextlib
import logging

from myol_keras.export import registry

NAME = "onnx"
FILE_NAME = "model.onnx"
ONNX_OPSET = 17


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

    tf2onnx = registry.import_package("tf2onnx", NAME)
    onnx = registry.import_package("onnx", NAME)
    function = tf.function(serve, input_signature=[input_spec])
    with _quiet_logger("tf2onnx"):
        model, _ = tf2onnx.convert.from_function(function, input_signature=[input_spec], opset=ONNX_OPSET)
    unknown = sorted({node.op_type for node in model.graph.node
                      if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type)})
    if unknown:
        raise registry.ConversionError(f"tf2onnx cannot translate the TensorFlow op(s) {', '.join(unknown)}")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def convert(model, serve, input_spec, path):
    """The `ExportFormat.converter`: `to_onnx(serve, input_spec, path)` (`model` is traced through `serve`)."""
    return to_onnx(serve, input_spec, path)


def converter_name():
    """`"tf2onnx <version>"`, for the export's metadata."""
    from importlib import metadata

    return f"tf2onnx {metadata.version('tf2onnx')}"


class OnnxRunner:
    """An ONNX export under onnxruntime (CPU): uint8 `[batch, S, S, 3]` -> float32 embeddings `[batch, D]`.

    Args:
        path: the `model.onnx` file.

    Example:
    ```python
    runner = OnnxRunner("saved_models/myol_c10/1/model.onnx")
    embeddings = runner(uint8_images)
    ```
    """

    def __init__(self, path):
        ort = registry.import_package("onnxruntime", NAME, runtime_only=True)
        self.path = path
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    @property
    def input_size(self):
        """The fixed input height and width S of the file."""
        return int(self.session.get_inputs()[0].shape[1])

    def __call__(self, images):
        return self.session.run([registry.OUTPUT_NAME],
                                {registry.INPUT_NAME: registry.check_images(images, self.input_size)})[0]


FORMAT = registry.ExportFormat(
    name=NAME,
    file_name=FILE_NAME,
    converter=convert,
    runner=OnnxRunner,
    packages={"tf2onnx": "tf2onnx", "onnx": "onnx"},
    runtime_packages={"onnxruntime": "onnxruntime"},
    runtime="onnxruntime",
    describe_converter=converter_name,
    metadata={"opset": ONNX_OPSET},
)
