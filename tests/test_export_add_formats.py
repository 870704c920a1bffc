"""Formats added to an existing export (`myol_keras.export.add_formats`, issue 29).

Rerunning a finished run with a new `--export_formats` (what `embed`'s "has no onnx export" message
tells the user to do) writes the missing files into the run's export version directory, converted
from the exported backbone, without training again; it says which formats it added and names them
in the metadata. A failure leaves the export as it was.
"""

import errno
import json
import os

import numpy as np
import pytest

from myol_keras import embed, export
from myol_keras.export import registry

from conftest import one_line, run_entry_point, run_main_in_process
from test_export_registry import PROBE_FORMAT, swap_format

IMAGE_SIZE, MEAN, STD = 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
ARGV = ["--dataset=digits", "--image_size=16", "--width=4", "--projector_hidden_dim=16", "--projection_dim=8",
        "--predictor_hidden_dim=16", "--batch_size=32", "--epochs=1", "--steps_per_epoch=2", "--precision=float32",
        "--verbose=0", "--run_name=tiny"]


def _require_extra():
    for module in ("tf2onnx", "onnxruntime", "ai_edge_litert"):
        pytest.importorskip(module, reason='needs the export extra: pip install "myol_keras[export]"')


def _metadata(version_dir):
    with open(os.path.join(version_dir, "assets.extra", "myol_keras.json")) as f:
        return json.load(f)


def _snapshot(version_dir):
    """{relative path: bytes} of every file of an export."""
    files = {}
    for root, _, names in os.walk(version_dir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, version_dir)] = f.read()
    return files


def _tiny_backbone():
    import keras
    import tensorflow as tf

    from myol_keras.backbones import ResNet

    keras.utils.set_random_seed(0)
    backbone = ResNet(depth=18, stem="cifar", width=4)
    backbone.build((None, IMAGE_SIZE, IMAGE_SIZE, 3))
    backbone(tf.random.uniform([8, IMAGE_SIZE, IMAGE_SIZE, 3]) * 2.0, training=True)
    return backbone


def test_rerunning_a_finished_run_with_new_formats_adds_them_without_training(tmp_path, capsys, monkeypatch):
    _require_extra()
    from PIL import Image

    from myol_keras import training

    monkeypatch.chdir(tmp_path)
    status, out, err = run_main_in_process(ARGV, capsys)
    assert status == 0, err
    version_dir = tmp_path / "saved_models" / "tiny" / "1"
    before = _snapshot(version_dir)
    history = (tmp_path / "runs" / "tiny" / "history.csv").read_text()
    # What the user meets first: embed says the export has no onnx file and how to get one.
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(tmp_path / "a.png")
    status, out, err = run_entry_point(embed, [f"--saved_model={version_dir}", f"--images={tmp_path}",
                                               "--format=onnx", f"--output={tmp_path / 'e.npy'}"], capsys)
    assert status == 2 and "(export with --export_formats=saved_model,onnx)" in err, err

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run trained again")

    monkeypatch.setattr(training, "_fit_and_export", no_training)
    registry.register_format(PROBE_FORMAT)  # a plug-in's format, by --export_formats like the built-in ones
    try:
        status, out, err = run_main_in_process(ARGV + ["--export_formats=saved_model,onnx,npy_probe"], capsys)
    finally:
        registry.unregister_format(PROBE_FORMAT.name)
    assert status == 0, err
    added = [line for line in out.splitlines() if "added" in line]
    assert added == ["myol_keras: added onnx, npy_probe to the export saved_models/tiny/1 of the finished run "
                     "(converted from its backbone, no training)"], out
    assert sorted(os.listdir(tmp_path / "saved_models" / "tiny")) == ["1"]  # the same version, no temporaries
    after = _snapshot(version_dir)
    assert set(after) == set(before) | {"model.onnx", "probe_embeddings.npy"}
    assert {k: v for k, v in after.items() if k in before and k != "assets.extra/myol_keras.json"} == \
        {k: v for k, v in before.items() if k != "assets.extra/myol_keras.json"}  # nothing else rewritten
    assert (tmp_path / "runs" / "tiny" / "history.csv").read_text() == history
    old, new = json.loads(before["assets.extra/myol_keras.json"]), _metadata(version_dir)
    assert {k: v for k, v in new.items() if k != "formats"} == {k: v for k, v in old.items() if k != "formats"}
    assert set(new["formats"]) == {"saved_model", "onnx", "npy_probe"}
    assert new["formats"]["saved_model"] == old["formats"]["saved_model"]
    onnx = new["formats"]["onnx"]
    assert onnx["file"] == "model.onnx" and onnx["bytes"] == os.path.getsize(version_dir / "model.onnx")
    assert onnx["input"]["shape"] == [None, 16, 16, 3] and onnx["max_abs_difference_from_saved_model"] < 1e-4
    assert onnx["output"] == old["formats"]["saved_model"]["output"]

    # Now embed does what its message promised.
    status, out, err = run_entry_point(embed, [f"--saved_model={version_dir}", f"--images={tmp_path}",
                                               "--format=onnx", f"--output={tmp_path / 'e.npy'}"], capsys)
    assert status == 0 and "1 embeddings of size 32 (onnx)" in out, err
    # Asking again adds nothing and says nothing about it.
    status, out, err = run_main_in_process(ARGV + ["--export_formats=onnx"], capsys)
    assert status == 0 and "added" not in out and "is finished" in out, out
    assert _snapshot(version_dir) == after


def test_added_files_take_the_exports_fixed_input_size_and_match_a_fresh_export(tmp_path):
    _require_extra()
    backbone = _tiny_backbone()
    path = export.export_encoder(backbone, str(tmp_path / "enc"), image_size=IMAGE_SIZE, mean=MEAN, std=STD,
                                 formats="litert", input_size=24)
    assert export.add_formats(path, "saved_model,litert") == ()  # nothing missing: nothing done
    assert export.add_formats(str(tmp_path / "enc"), ["onnx", "litert"]) == ("onnx",)
    entry = _metadata(path)["formats"]["onnx"]
    assert entry["input"]["shape"] == [None, 24, 24, 3]  # as the export's LiteRT file
    fresh = export.export_encoder(backbone, str(tmp_path / "fresh"), image_size=IMAGE_SIZE, mean=MEAN, std=STD,
                                  formats="onnx", input_size=24)
    assert set(entry) == set(_metadata(fresh)["formats"]["onnx"])
    images = np.random.default_rng(3).integers(0, 256, size=(3, 24, 24, 3), dtype=np.uint8)
    np.testing.assert_allclose(export.load_format(path, "onnx")(images), export.load_format(fresh, "onnx")(images),
                               atol=1e-5)


@pytest.mark.parametrize("failure", ["converter_raises", "disk_full_writing_the_metadata"])
def test_a_failed_addition_leaves_the_export_unchanged(failure, tmp_path, monkeypatch):
    _require_extra()
    from myol_keras import rundir

    path = export.export_encoder(_tiny_backbone(), str(tmp_path / "enc"), image_size=IMAGE_SIZE, mean=MEAN, std=STD)
    before = _snapshot(path)
    if failure == "converter_raises":
        def convert(*args):
            raise RuntimeError("converter exploded\n  at some native frame")
        swap_format(monkeypatch, "onnx", converter=convert)
        fragments = ["cannot export the encoder to onnx (tf2onnx ", "RuntimeError: converter exploded",
                     f"nothing was written to {path}"]
    else:  # every file is converted and checked; the disk fills up as the metadata is replaced
        def no_space(*args):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(rundir, "atomic_write", no_space)
        fragments = [f"cannot add onnx, litert to the export {path}", "No space left on device", "export is unchanged"]
    with pytest.raises(export.ExportError) as error:
        export.add_formats(path, "onnx,litert")
    one_line(error, *fragments)
    assert _snapshot(path) == before
    assert os.listdir(tmp_path / "enc") == ["1"]  # no temporaries
