"""The encoder's export: a TF-Serving SavedModel, and one file per extra format beside it.

| module | holds |
|---|---|
| `registry` | `ExportFormat` records by name, `FORMATS`, `register_format`, dependency checks (no TensorFlow) |
| `onnx`, `litert` | one built-in format each: `model.onnx` (onnxruntime), `model.tflite` (LiteRT) |
| `saved_model` | the SavedModel contract (docs/DECISIONS.md §4.6): endpoints, atomic write, `load_backbone`, `load_format` |
| `files` | one format's file: convert, run on a probe batch, compare with the SavedModel |
| `encoder` | `export_encoder`, and `add_formats` to an existing export |

Names are re-exported lazily (PEP 562): `from myol_keras.export import FORMATS`
imports the registry only, not TensorFlow; `export_encoder` and the loaders
import it when first used.

Example:
```python
from myol_keras.export import export_encoder, load_format

path = export_encoder(backbone, "saved_models/myol_c10", image_size=32, mean=mean, std=std,
                      formats="saved_model,onnx")
embeddings = load_format(path, "onnx")(uint8_images)
```
"""

from myol_keras import lazy_exports

_SUBMODULES = ("registry", "onnx", "litert", "saved_model", "files", "encoder")

_EXPORTS = {
    # formats (no TensorFlow)
    "FORMATS": "registry",
    "SAVED_MODEL": "registry",
    "INPUT_NAME": "registry",
    "OUTPUT_NAME": "registry",
    "INSTALL_HINT": "registry",
    "ExportFormat": "registry",
    "MissingDependencyError": "registry",
    "ConversionError": "registry",
    "register_format": "registry",
    "unregister_format": "registry",
    "get_format": "registry",
    "file_formats": "registry",
    "parse_formats": "registry",
    "format_problem": "registry",
    "check_dependencies": "registry",
    "check_images": "registry",
    "probe_images": "registry",
    "load_runner": "registry",
    "ONNX_OPSET": "onnx",
    "OnnxRunner": "onnx",
    "to_onnx": "onnx",
    "LITERT_SIGNATURE": "litert",
    "LiteRTRunner": "litert",
    "to_litert": "litert",
    # the SavedModel
    "METADATA_FILE": "saved_model",
    "BACKBONE_FILE": "saved_model",
    "EXTRA_DIR": "saved_model",
    "ExportError": "saved_model",
    "library_versions": "saved_model",
    "resolve_version_dir": "saved_model",
    "check_image_batch": "saved_model",
    "add_image_endpoints": "saved_model",
    "write_export": "saved_model",
    "add_files": "saved_model",
    "load_export_metadata": "saved_model",
    "load_format": "saved_model",
    "load_backbone": "saved_model",
    # the files of the other formats
    "AGREEMENT_TOLERANCE": "files",
    "PROBE_BATCH": "files",
    "float32_copy": "files",
    "compute_dtypes": "files",
    # the encoder
    "export_encoder": "encoder",
    "add_formats": "encoder",
    "missing_formats": "encoder",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports.attach(__name__, _EXPORTS, _SUBMODULES, globals())
