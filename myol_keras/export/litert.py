"""The LiteRT format: `model.tflite` for phones, TensorFlow's converter, built-in ops only, run by `ai_edge_litert`.

The file takes `images`, uint8 `[batch, S, S, 3]` with the batch dynamic and
S fixed (the export's `input_size`, by default the training size), and
returns `embedding`, float32 `[batch, D]`, with the preprocessing inside
(`preprocessing.fixed_size_transform`); its one signature is
`serving_default`. Why not Keras' `export(format="litert")`: it exports the
model's `call` and allows Select TF ops, whose files the plain LiteRT
interpreter cannot run; here the converter gets our serving function and
built-in ops only, so a model that would need TensorFlow kernels on the phone
fails at export. Running needs `ai_edge_litert` (`pip install
"myol_keras[export]"`), imported only when used.

Example:
```python
runner = LiteRTRunner("saved_models/myol_c10/1/model.tflite")
embeddings = runner(uint8_images)  # [batch, D]
```
"""

import os
import re
import shutil
import tempfile

import numpy as np

from myol_keras.export import registry

NAME = "litert"
FILE_NAME = "model.tflite"
LITERT_SIGNATURE = "serving_default"


def to_litert(module, serve, input_spec, path):
    """Convert `serve` to a LiteRT flatbuffer at `path`: a SavedModel signature, then `from_saved_model`.

    The intermediate SavedModel goes to a temporary directory beside `path`
    (inside the export's own temporary directory) and is removed. Built-in ops
    only, so the file runs under the plain LiteRT interpreter.

    Args:
        module: the Keras model `serve` uses (its variables are tracked).
        serve: a Python function of one image batch returning `{"embedding": tensor}`.
        input_spec: its `tf.TensorSpec` (named `images`, static H and W).
        path: the `.tflite` file to write.

    Raises:
        ConversionError: the converter needs an op outside LiteRT's built-in set.
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
                raise registry.ConversionError(f"the LiteRT converter has no built-in op for {', '.join(ops)}") from e
            raise
    finally:
        shutil.rmtree(saved_model, ignore_errors=True)
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


def converter_name():
    """TensorFlow's version and the converter's setting, for the export's metadata."""
    import tensorflow as tf

    return f"tensorflow {tf.__version__} TFLiteConverter (built-in ops only)"


class LiteRTRunner:
    """A LiteRT export under the `ai_edge_litert` interpreter: uint8 `[batch, S, S, 3]` -> embeddings `[batch, D]`.

    The signature runner resizes the input to each batch it is given (the
    file's batch dimension is dynamic; its default shape holds one image).

    Args:
        path: the `model.tflite` file.

    Example:
    ```python
    runner = LiteRTRunner("saved_models/myol_c10/1/model.tflite")
    embeddings = runner(uint8_images)
    ```
    """

    def __init__(self, path):
        from myol_keras.native_logs import quiet_native_stderr

        interpreter = registry.import_package("ai_edge_litert.interpreter", NAME, runtime_only=True)
        self.path = path
        with quiet_native_stderr():  # the first call logs "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            self.interpreter = interpreter.Interpreter(model_path=path)
            self.runner = self.interpreter.get_signature_runner(LITERT_SIGNATURE)
            self(np.zeros([1, self.input_size, self.input_size, 3], np.uint8))

    @property
    def input_size(self):
        """The fixed input height and width S of the file."""
        return int(self.runner.get_input_details()[registry.INPUT_NAME]["shape_signature"][1])

    def __call__(self, images):
        # The interpreter would let H and W be resized too; the file then fails in a shape check with an
        # XNNPack message, so say what the file takes instead.
        return self.runner(**{registry.INPUT_NAME: registry.check_images(images, self.input_size)})[
            registry.OUTPUT_NAME]


FORMAT = registry.ExportFormat(
    name=NAME,
    file_name=FILE_NAME,
    converter=to_litert,
    runner=LiteRTRunner,
    packages={},
    runtime_packages={"ai_edge_litert": "ai-edge-litert"},
    runtime="ai_edge_litert (LiteRT interpreter)",
    describe_converter=converter_name,
    metadata={"signature": LITERT_SIGNATURE},
)
