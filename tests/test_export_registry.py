"""The export format registry (`myol_keras.export.registry`, issue 25): one record per format, plug-ins welcome.

The registry and the built-in records import no TensorFlow (the settings read `FORMATS`). A toy
format registered the way a user's plug-in would register it — a file holding the embeddings of
the probe batch, and a runner that reads them back — is exported by `export_encoder` and by
`--export_formats`, is checked against the SavedModel like the built-in formats, and gets its
metadata entry.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from myol_keras.export import registry

from conftest import one_line

IMAGE_SIZE, MEAN, STD = 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


# --- the toy plug-in ------------------------------------------------------------------------------


def write_probe_embeddings(model, serve, input_spec, path):
    """The toy converter: the embeddings of the export's probe batch, as a `.npy`."""
    import tensorflow as tf

    probe = registry.probe_images(input_spec.shape[1])
    np.save(path, serve(tf.constant(probe))["embedding"].numpy())


class ProbeEmbeddingsRunner:
    """The toy runner: answers the probe batch with the embeddings the file holds, refuses anything else."""

    input_size = None

    def __init__(self, path):
        self.embeddings = np.load(path)

    def __call__(self, images):
        images = np.asarray(images)
        if not np.array_equal(images, registry.probe_images(images.shape[1], len(images))):
            raise ValueError("this file only knows the probe batch")
        return self.embeddings[:len(images)]


PROBE_FORMAT = registry.ExportFormat(
    name="npy_probe", file_name="probe_embeddings.npy", converter=write_probe_embeddings,
    runner=ProbeEmbeddingsRunner, packages={"numpy": "numpy"}, runtime="numpy.load",
    describe_converter=lambda: f"numpy {np.__version__}", metadata={"probe_batch": 2})


def swap_format(monkeypatch, name, **changes):
    """Replace fields of the registered format `name` for one test (`monkeypatch` puts the record back)."""
    record = registry.get_format(name)
    monkeypatch.setattr(registry, "_records", {**registry._records, name: dataclasses.replace(record, **changes)})


@pytest.fixture
def probe_format():
    registry.register_format(PROBE_FORMAT)
    yield PROBE_FORMAT
    registry.unregister_format(PROBE_FORMAT.name)


def _tiny_backbone():
    import keras
    import tensorflow as tf

    from myol_keras.backbones import ResNet

    keras.utils.set_random_seed(0)
    backbone = ResNet(depth=18, stem="cifar", width=4)
    backbone.build((None, IMAGE_SIZE, IMAGE_SIZE, 3))
    backbone(tf.random.uniform([8, IMAGE_SIZE, IMAGE_SIZE, 3]) * 2.0, training=True)  # BN inference mode matters
    return backbone


# --- the registry, without TensorFlow ---------------------------------------------------------------


def test_the_format_names_and_checks_import_no_tensorflow():
    code = ("import sys\n"
            "from myol_keras.export import FORMATS, MissingDependencyError, check_dependencies, parse_formats\n"
            "assert tuple(FORMATS) == ('saved_model', 'onnx', 'litert'), FORMATS\n"
            "assert parse_formats('litert,onnx') == ('saved_model', 'onnx', 'litert')\n"
            "check_dependencies(['onnx', 'litert'], runtime_only=True)\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnxruntime', 'ai_edge_litert')\n"
            "         if m in sys.modules]\n"
            "assert heavy == [], heavy\n")
    checkout = str(pathlib.Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr


def test_each_builtin_format_is_one_record():
    onnx, litert = registry.get_format("onnx"), registry.get_format("litert")
    assert (onnx.file_name, litert.file_name) == ("model.onnx", "model.tflite")
    assert onnx.packages == {"tf2onnx": "tf2onnx", "onnx": "onnx"}
    assert onnx.runtime_packages == {"onnxruntime": "onnxruntime"}
    assert litert.runtime_packages == {"ai_edge_litert": "ai-edge-litert"}
    assert registry.file_formats() == (onnx, litert)
    with pytest.raises(ValueError, match="with a file runner, one of onnx, litert. Received: fmt='saved_model'"):
        registry.get_format("saved_model")


def test_a_registered_format_is_a_format_name_everywhere(probe_format):
    from myol_keras.config import PretrainConfig

    assert tuple(registry.FORMATS) == ("saved_model", "onnx", "litert", "npy_probe")
    assert registry.parse_formats("npy_probe") == ("saved_model", "npy_probe")
    assert registry.format_problem("npy_probe,onnx") is None
    PretrainConfig(export_formats="saved_model,npy_probe").validate()  # --export_formats takes it
    with pytest.raises(ValueError) as error:
        registry.register_format(probe_format)
    one_line(error, "export format 'npy_probe' is already registered; pass replace=True")
    registry.register_format(probe_format, replace=True)
    assert tuple(registry.FORMATS)[-1] == "npy_probe"


def test_a_format_the_registry_cannot_take_is_one_line():
    def convert(*args):
        return None

    for fields, fragment in (({"name": "saved_model"}, "other than 'saved_model'. Received: name='saved_model'"),
                             ({"name": "a,b"}, "without commas"),
                             ({"file_name": "../x.bin"}, "a plain file name"),
                             ({"runner": "not callable"}, "Expected `runner` to be callable")):
        with pytest.raises(ValueError) as error:
            registry.ExportFormat(**{"name": "toy", "file_name": "toy.bin", "converter": convert, "runner": convert,
                                     **fields})
        one_line(error, fragment)
    with pytest.raises(ValueError) as error:
        registry.register_format(registry.ExportFormat(name="toy", file_name="model.onnx", converter=convert,
                                                       runner=convert))
    one_line(error, "export format 'toy' would write model.onnx, the file of 'onnx'")
    assert "toy" not in registry.FORMATS


def test_a_plugin_missing_its_package_is_refused_before_anything_is_written(tmp_path):
    record = registry.ExportFormat(name="toy", file_name="toy.bin", converter=print, runner=print,
                                   packages={"surely_not_installed_pkg": "surely-not-installed"},
                                   install_hint="pip install surely-not-installed")
    registry.register_format(record)
    try:
        with pytest.raises(registry.MissingDependencyError) as error:
            registry.check_dependencies(["saved_model", "toy"])
        one_line(error, "exporting to toy needs surely-not-installed, which is not installed: "
                        "pip install surely-not-installed")
    finally:
        registry.unregister_format("toy")


# --- exporting with a plug-in -------------------------------------------------------------------


def test_a_plugin_format_is_exported_checked_and_described(probe_format, tmp_path):
    import tensorflow as tf

    from myol_keras import export

    path = export.export_encoder(_tiny_backbone(), str(tmp_path / "enc"), image_size=IMAGE_SIZE, mean=MEAN, std=STD,
                                 formats=["npy_probe"])
    assert path == str(tmp_path / "enc" / "1")
    stored = np.load(os.path.join(path, "probe_embeddings.npy"))
    probe = registry.probe_images(IMAGE_SIZE)
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(probe))["embedding"].numpy()
    assert stored.shape == (2, 32) and np.abs(stored).max() > 0
    np.testing.assert_allclose(stored, served, atol=1e-4)  # the plug-in got the export's serving function
    with open(os.path.join(path, "assets.extra", "myol_keras.json")) as f:
        entry = json.load(f)["formats"]["npy_probe"]
    assert entry["file"] == "probe_embeddings.npy" and entry["bytes"] == os.path.getsize(
        os.path.join(path, "probe_embeddings.npy"))
    assert entry["runtime"] == "numpy.load" and entry["converter"] == f"numpy {np.__version__}"
    assert entry["probe_batch"] == 2 and entry["max_abs_difference_from_saved_model"] < 1e-4
    assert entry["input"] == {"name": "images", "dtype": "uint8", "shape": [None, IMAGE_SIZE, IMAGE_SIZE, 3],
                              "dynamic_batch": True, "fixed_size": True}
    runner = export.load_format(path, "npy_probe")  # found through the metadata, run by the plug-in's runner
    np.testing.assert_array_equal(runner(probe), stored)


def test_a_plugin_whose_file_disagrees_leaves_no_version_directory(tmp_path):
    from myol_keras import export

    def write_zeros(model, serve, input_spec, path):
        np.save(path, np.zeros((2, 32), np.float32))

    registry.register_format(registry.ExportFormat(name="zeros", file_name="zeros.npy", converter=write_zeros,
                                                   runner=ProbeEmbeddingsRunner))
    try:
        with pytest.raises(export.ExportError) as error:
            export.export_encoder(_tiny_backbone(), str(tmp_path / "enc"), image_size=IMAGE_SIZE, mean=MEAN, std=STD,
                                  formats="saved_model,zeros")
    finally:
        registry.unregister_format("zeros")
    one_line(error, "the zeros file's embeddings differ from the SavedModel's by", "nothing was written to")
    assert os.listdir(tmp_path / "enc") == []
