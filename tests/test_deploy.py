"""ONNX and LiteRT exports (`myol_keras.export.onnx`, `.litert`, issue 19): the same contract as the SavedModel, proven on real images.

One tiny encoder (ResNet-18, width 8, 32 px, BatchNorm statistics moved off their initial values)
is exported once for the module in all three formats. The files are read the way a deployment
reads them — `onnxruntime.InferenceSession` and the `ai_edge_litert` interpreter, not our runners —
and must give the SavedModel's `serving_default` embeddings to 1e-4 on real CIFAR-10 images from
the shared subset. Bad input (an unknown format, a missing optional package, a converter that
fails on the model, a full disk) ends in one line and leaves no version directory behind.
"""

import errno
import importlib.util
import os

import numpy as np
import pytest

from myol_keras import embed, export
from myol_keras.export import registry

from conftest import one_line, run_entry_point
from test_export_registry import swap_format

IMAGE_SIZE, MEAN, STD = 32, (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
ATOL = 1e-4  # float32 (issue 19)


def _require_extra():
    for module in ("tf2onnx", "onnxruntime", "ai_edge_litert"):
        pytest.importorskip(module, reason='needs the export extra: pip install "myol_keras[export]"')


def _tiny_backbone():
    import keras
    import tensorflow as tf

    from myol_keras.backbones import ResNet

    keras.utils.set_random_seed(0)
    backbone = ResNet(depth=18, stem="cifar", width=8)
    backbone.build((None, IMAGE_SIZE, IMAGE_SIZE, 3))
    backbone(tf.random.uniform([8, IMAGE_SIZE, IMAGE_SIZE, 3]) * 2.0, training=True)  # BN inference mode matters
    return backbone


def _real_images(count, size=IMAGE_SIZE):
    from PIL import Image

    from conftest import CIFAR_SUBSET

    if not CIFAR_SUBSET.exists():
        pytest.skip(f"shared CIFAR-10 subset not found at {CIFAR_SUBSET}")
    images = np.load(CIFAR_SUBSET)["x_test"][:count]
    if size != images.shape[1]:
        images = np.stack([np.asarray(Image.fromarray(x).resize((size, size), Image.BICUBIC)) for x in images])
    return images


def _saved_model_embeddings(version_dir, images):
    import tensorflow as tf

    serving = tf.saved_model.load(version_dir).signatures["serving_default"]
    return serving(images=tf.constant(images))["embedding"].numpy()


def _onnxruntime_embeddings(path, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(["embedding"], {"images": images})[0]


def _litert_embeddings(path, images):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    return runner(images=images)["embedding"]


def _left_behind(root):
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


@pytest.fixture(scope="module")
def backbone():
    return _tiny_backbone()


@pytest.fixture(scope="module")
def exports(backbone, tmp_path_factory):
    """The encoder in all three formats; and with a LiteRT file taking 40 px (resized to 32 inside), no ONNX."""
    _require_extra()
    root = tmp_path_factory.mktemp("saved_models")
    every = export.export_encoder(backbone, str(root / "tiny"), image_size=IMAGE_SIZE, mean=MEAN, std=STD,
                                  formats="saved_model,onnx,litert", metadata={"dataset": "npz"})
    resized = export.export_encoder(backbone, str(root / "resized"), image_size=IMAGE_SIZE, mean=MEAN, std=STD,
                                    formats=("litert",), input_size=40)
    return {"every": every, "resized": resized, "root": root}


# --- the contract -------------------------------------------------------------------------------


def test_onnx_and_litert_give_the_saved_models_embeddings_on_real_images(exports):
    images = _real_images(32)
    reference = _saved_model_embeddings(exports["every"], images)
    assert reference.shape == (32, 64) and np.abs(reference).max() > 0.1
    for batch in (images, images[:5], images[:1]):  # the batch is dynamic in both files
        expected = reference[:len(batch)]
        onnx = _onnxruntime_embeddings(os.path.join(exports["every"], "model.onnx"), batch)
        litert = _litert_embeddings(os.path.join(exports["every"], "model.tflite"), batch)
        np.testing.assert_allclose(onnx, expected, atol=ATOL, rtol=0)
        np.testing.assert_allclose(litert, expected, atol=ATOL, rtol=0)


def test_the_metadata_names_each_file_and_its_input_contract(exports):
    meta = export.load_export_metadata(exports["every"])
    formats = meta["formats"]
    assert set(formats) == {"saved_model", "onnx", "litert"}
    assert formats["saved_model"]["input"] == {"name": "images", "dtype": "uint8", "shape": [None, None, None, 3],
                                               "dynamic_batch": True, "fixed_size": False}
    for fmt, file in (("onnx", "model.onnx"), ("litert", "model.tflite")):
        entry = formats[fmt]
        assert entry["file"] == file and os.path.getsize(os.path.join(exports["every"], file)) == entry["bytes"]
        assert entry["input"] == {"name": "images", "dtype": "uint8", "shape": [None, IMAGE_SIZE, IMAGE_SIZE, 3],
                                  "dynamic_batch": True, "fixed_size": True}
        assert entry["output"] == {"name": "embedding", "dtype": "float32", "shape": [None, 64]}
        assert entry["max_abs_difference_from_saved_model"] < ATOL  # the probe checked at export
    assert formats["onnx"]["opset"] == export.ONNX_OPSET and formats["onnx"]["converter"].startswith("tf2onnx ")
    assert export.load_export_metadata(exports["resized"])["formats"].keys() == {"saved_model", "litert"}
    # The files say the same as the metadata.
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    session = onnxruntime.InferenceSession(os.path.join(exports["every"], "model.onnx"))
    (inputs,), (outputs,) = session.get_inputs(), session.get_outputs()
    assert (inputs.name, inputs.type, inputs.shape[1:]) == ("images", "tensor(uint8)", [IMAGE_SIZE, IMAGE_SIZE, 3])
    assert (outputs.name, outputs.type) == ("embedding", "tensor(float)")
    interpreter = Interpreter(model_path=os.path.join(exports["every"], "model.tflite"))
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["images"], "outputs": ["embedding"]}}
    details = interpreter.get_signature_runner().get_input_details()["images"]
    assert details["dtype"] == np.uint8 and list(details["shape_signature"]) == [-1, IMAGE_SIZE, IMAGE_SIZE, 3]


def test_another_input_size_is_an_error_not_a_wrong_crop(exports):
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    wrong = np.zeros((2, 48, 48, 3), np.uint8)
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument, match="Got: 48 Expected: 32"):
        _onnxruntime_embeddings(os.path.join(exports["every"], "model.onnx"), wrong)
    runner = Interpreter(model_path=os.path.join(exports["every"], "model.tflite")).get_signature_runner()
    with pytest.raises(RuntimeError, match="failed to prepare"):  # the interpreter resizes H and W on request
        runner(images=wrong)
    for fmt in ("onnx", "litert"):
        with pytest.raises(ValueError, match=r"Expected uint8 images shaped \[batch, 32, 32, 3\].*\(2, 48, 48, 3\)"):
            export.load_format(exports["every"], fmt)(wrong)


def test_a_fixed_input_size_other_than_the_training_size_resizes_inside(exports):
    # 40 px in, 32 px to the network: the SavedModel's resize weights, as two matrix products in the file.
    assert export.load_export_metadata(exports["resized"])["formats"]["litert"]["input"]["shape"] == [None, 40, 40, 3]
    images = _real_images(8, size=40)
    np.testing.assert_allclose(_litert_embeddings(os.path.join(exports["resized"], "model.tflite"), images),
                               _saved_model_embeddings(exports["resized"], images), atol=ATOL, rtol=0)


# --- bad input: one line, nothing left behind ---------------------------------------------------


def test_an_unknown_format_is_refused_before_anything_is_written(backbone, tmp_path):
    from myol_keras.config import PretrainConfig

    with pytest.raises(ValueError) as error:
        export.export_encoder(backbone, str(tmp_path / "enc"), image_size=IMAGE_SIZE, mean=MEAN, std=STD,
                              formats="saved_model,openvino")
    one_line(error, "unknown export format 'openvino'; choose from: saved_model, onnx, litert")
    assert not (tmp_path / "enc").exists()
    with pytest.raises(ValueError) as error:
        PretrainConfig(export_formats="onnx,tflite").validate()
    assert one_line(error).startswith("--export_formats='onnx,tflite': unknown export format 'tflite'")


def test_a_missing_optional_package_is_one_line_naming_the_extra(backbone, tmp_path, monkeypatch):
    from myol_keras.config import PretrainConfig

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tf2onnx", "ai_edge_litert") else find_spec(name, *a))
    with pytest.raises(ImportError) as error:
        export.export_encoder(backbone, str(tmp_path / "enc"), image_size=IMAGE_SIZE, mean=MEAN, std=STD,
                              formats="onnx")
    one_line(error, "exporting to onnx needs tf2onnx, which is not installed", 'pip install "myol_keras[export]"')
    assert isinstance(error.value, ValueError) and not (tmp_path / "enc").exists()
    with pytest.raises(export.MissingDependencyError) as error:
        PretrainConfig(export_formats="saved_model,litert").validate()  # before training, not after it
    one_line(error, "--export_formats=saved_model,litert: exporting to litert needs ai-edge-litert")
    PretrainConfig(export_formats="saved_model").validate()  # the SavedModel needs nothing more


@pytest.mark.parametrize("fmt, reason", [
    ("onnx", "tf2onnx cannot translate the TensorFlow op(s) ScaleAndTranslate"),
    ("litert", "the LiteRT converter has no built-in op for tf.ScaleAndTranslate"),
])
def test_a_converter_that_cannot_translate_the_model_leaves_no_version_directory(fmt, reason, backbone, tmp_path,
                                                                                 monkeypatch):
    # The dynamic-size transform (ScaleAndTranslate) instead of the fixed-size one: a real converter failure.
    # tf2onnx only logs the op it cannot translate and writes the file anyway; the export must refuse it.
    _require_extra()
    from myol_keras import preprocessing

    monkeypatch.setattr(preprocessing, "fixed_size_transform", preprocessing.evaluation_transform)
    root = tmp_path / "enc"
    with pytest.raises(export.ExportError) as error:
        export.export_encoder(backbone, str(root), image_size=IMAGE_SIZE, mean=MEAN, std=STD, formats=fmt)
    one_line(error, f"cannot export the encoder to {fmt} (", reason, f"nothing was written to {root}")
    assert _left_behind(root) == []


@pytest.mark.parametrize("failure", ["converter_raises", "file_disagrees", "disk_full", "disk_full_in_saved_model"])
def test_a_failed_format_leaves_no_version_directory(failure, backbone, tmp_path, monkeypatch):
    _require_extra()
    root = tmp_path / "enc"
    if failure == "converter_raises":
        def convert(*args):
            raise RuntimeError("converter exploded\n  at some native frame")
        fragments = ["cannot export the encoder to litert", "RuntimeError: converter exploded"]
    elif failure == "file_disagrees":
        def convert(module, serve, spec, path):
            with open(path, "wb") as f:
                f.write(b"a file")
        swap_format(monkeypatch, "litert", runner=lambda path: lambda images: np.zeros((len(images), 64)))
        fragments = ["the litert file's embeddings differ from the SavedModel's by", "on a probe batch"]
    elif failure == "disk_full_in_saved_model":  # TensorFlow's own writer reports it as an op error
        import tensorflow as tf

        def write_out(self, path, **kwargs):
            os.makedirs(os.path.join(path, "variables"))
            raise tf.errors.ResourceExhaustedError(None, None, "variables.data: No space left on device [Op:SaveV2]")
        import keras

        monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", write_out)  # the backend's class
        convert = registry.get_format("litert").converter
        fragments = [f"cannot write the export {root / '1'}: ResourceExhaustedError", "No space left on device"]
    else:
        def convert(module, serve, spec, path):  # the disk fills up half-way through the file
            with open(path, "wb") as f:
                f.write(b"half a flatbuffer")
            raise OSError(errno.ENOSPC, "No space left on device")
        fragments = [f"cannot write the export {root / '1'}", "No space left on device", "nothing was written"]
    swap_format(monkeypatch, "litert", converter=convert)
    with pytest.raises(export.ExportError) as error:
        export.export_encoder(backbone, str(root), image_size=IMAGE_SIZE, mean=MEAN, std=STD,
                              formats="saved_model,litert")
    one_line(error, *fragments)
    assert _left_behind(root) == []  # no version directory, no temporaries


def test_the_command_line_exports_every_format_and_a_failed_export_is_one_line(tmp_path, capsys, monkeypatch):
    # --export_formats end to end: a full disk during the export ends in one line (exit 1), the run is
    # kept and no version directory appears; the same command then exports.
    _require_extra()
    from conftest import run_main_in_process

    monkeypatch.chdir(tmp_path)
    argv = ["--dataset=digits", "--image_size=16", "--width=4", "--projector_hidden_dim=16", "--projection_dim=8",
            "--predictor_hidden_dim=16", "--batch_size=32", "--epochs=1", "--steps_per_epoch=2",
            "--precision=float32", "--verbose=0", "--run_name=tiny", "--export_formats=onnx"]

    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        swap_format(patch, "onnx", converter=no_space)
        status, out, err = run_main_in_process(argv, capsys)
    lines = [line for line in err.splitlines() if line.startswith("myol_keras.main: ")]
    assert status == 1 and len(lines) == 1, err
    assert "No space left on device" in lines[0] and "rerun the same command to export again" in lines[0]
    assert _left_behind(tmp_path / "saved_models" / "tiny") == [] and (tmp_path / "runs" / "tiny").is_dir()

    status, out, err = run_main_in_process(argv, capsys)
    assert status == 0, err
    assert "exported the online encoder to saved_models/tiny/1 (saved_model, onnx)" in out  # always the SavedModel
    assert {"model.onnx", "saved_model.pb"} <= set(os.listdir(tmp_path / "saved_models/tiny/1"))
    status, out, err = run_main_in_process(["--export_formats=saved_model,openvino"], capsys)
    assert status == 2 and "unknown export format 'openvino'" in err and len(err.strip().splitlines()) == 1


# --- embed --format -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    for i, image in enumerate(_real_images(12)):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    Image.fromarray(_real_images(1, size=48)[0]).save(folder / "large.png")  # resized to 32 px, then rounded
    return folder


def test_embed_runs_each_format_and_they_agree(exports, photos, tmp_path, capsys):
    results = {}
    for fmt in export.FORMATS:
        output = tmp_path / f"{fmt}.npy"
        status, out, err = run_entry_point(embed, [f"--saved_model={exports['root'] / 'tiny'}", f"--images={photos}",
                                   f"--output={output}", f"--format={fmt}"], capsys)
        assert status == 0, err
        assert f"13 embeddings of size 64 ({fmt})" in out
        results[fmt] = np.load(output)
        assert (tmp_path / f"{fmt}.txt").read_text().splitlines()[:2] == ["00.png", "01.png"]
    # The 12 images at 32 px are the same uint8 pixels for every format; the 48 px one is rounded to
    # uint8 after its resize for onnx / litert (float pixels for the SavedModel), hence its looser bound.
    for fmt in ("onnx", "litert"):
        np.testing.assert_allclose(results[fmt][:12], results["saved_model"][:12], atol=ATOL, rtol=0)
        np.testing.assert_allclose(results[fmt][12], results["saved_model"][12], atol=0.05)


def test_embed_with_a_format_the_export_lacks_is_one_line(exports, photos, capsys, monkeypatch):
    status, out, err = run_entry_point(embed, [f"--saved_model={exports['resized']}", f"--images={photos}", "--format=onnx"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{embed.PROG}: error: ") and "has no onnx export; it has: litert, saved_model" in err
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ai_edge_litert" else find_spec(name, *a))
    status, out, err = run_entry_point(embed, [f"--saved_model={exports['root'] / 'tiny'}", f"--images={photos}",
                               "--format=litert"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "running litert needs ai-edge-litert, which is not installed: pip install \"myol_keras[export]\"" in err


def test_a_mixed_bfloat16_encoder_exports_float32_files(tmp_path):
    # The default precision on a bf16 CPU: its graph has bfloat16 convolutions, which onnxruntime refuses
    # (INVALID_GRAPH). The files compute in float32 with the same weights: equal to the encoder's float32
    # copy to 1e-4, and within bfloat16 rounding of the SavedModel, which serves in bfloat16.
    _require_extra()
    import keras

    from myol_keras.backbones import ResNet

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("mixed_bfloat16")  # as `pretrain` sets it
    try:
        backbone = ResNet(depth=18, stem="cifar", width=8)
        backbone.build((None, IMAGE_SIZE, IMAGE_SIZE, 3))
        copy = export.float32_copy(backbone)
    finally:
        keras.config.set_dtype_policy("float32")
    assert backbone.compute_dtype == "bfloat16" and backbone.layers[1].compute_dtype == "bfloat16"
    assert {layer.compute_dtype for layer in copy.layers if not isinstance(layer, keras.layers.InputLayer)} == {"float32"}
    for a, b in zip(copy.weights, backbone.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    path = export.export_encoder(backbone, str(tmp_path / "enc"), image_size=IMAGE_SIZE, mean=MEAN, std=STD,
                                 formats=("saved_model", "onnx", "litert"))
    images = _real_images(8)
    from myol_keras import preprocessing

    reference = copy(preprocessing.evaluation_transform(images, IMAGE_SIZE, MEAN, STD), training=False).numpy()
    onnx_out = _onnxruntime_embeddings(os.path.join(path, "model.onnx"), images)
    litert_out = _litert_embeddings(os.path.join(path, "model.tflite"), images)
    np.testing.assert_allclose(onnx_out, reference, atol=ATOL)
    np.testing.assert_allclose(litert_out, reference, atol=ATOL)
    served = _saved_model_embeddings(path, images)
    assert np.max(np.abs(served - reference)) < 0.05 * max(1.0, np.max(np.abs(reference)))  # bfloat16: 8-bit mantissa
    formats = export.load_export_metadata(path)["formats"]
    for fmt in ("onnx", "litert"):
        assert formats[fmt]["compute_dtype"] == "float32"
        assert formats[fmt]["saved_model_compute_dtype"] == "bfloat16"
