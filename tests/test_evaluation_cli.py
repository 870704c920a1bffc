"""End to end: tiny pre-training -> export -> probe -> attack -> embed -> report; one-line usage errors."""

import json
import os

import numpy as np
import pytest

from myol_keras import embed, report
from myol_keras.evaluation import attack, knn, linear_probe

from conftest import run_entry_point


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 3-step BYOL pre-training on the shared CIFAR-10 subset, exported."""
    from conftest import CIFAR_SUBSET

    if not CIFAR_SUBSET.exists():
        pytest.skip(f"shared CIFAR-10 subset not found at {CIFAR_SUBSET}")
    from myol_keras import main as cli

    root = tmp_path_factory.mktemp("pretrain")
    cli.main(["myol_keras.main", "--method=byol", "--dataset=npz", f"--data_dir={CIFAR_SUBSET.resolve()}",
              "--normalization=cifar10", "--width=4", "--image_size=32", "--batch_size=32",
              "--projector_hidden_dim=64", "--predictor_hidden_dim=64", "--projection_dim=16", "--epochs=1",
              "--steps_per_epoch=3", "--precision=float32", f"--run_dir={root / 'runs'}",
              f"--export_dir={root / 'saved_models'}", "--run_name=tiny", "--verbose=0"])
    return {"root": root, "export": str(root / "saved_models" / "tiny"), "run_dir": str(root / "runs" / "tiny"),
            "data": str(CIFAR_SUBSET.resolve())}


def test_probe_attack_embed_report_end_to_end(pretrained, capsys, tmp_path):
    status, out, err = run_entry_point(linear_probe, [f"--saved_model={pretrained['export']}", "--epochs=2", "--eval_every=1",
                                           "--max_train_images=600", "--max_test_images=200"], capsys)
    assert status == 0, err
    assert "top-1" in out and "features (npz train)" in err  # the progress line
    saved = pretrained["root"] / "saved_models"
    # The classifier is a sibling of the encoder, never a new version of it.
    assert sorted(os.listdir(saved / "tiny")) == ["1"]
    assert sorted(os.listdir(saved / "tiny-linear")) == ["1"]
    classifier = str(saved / "tiny-linear" / "1")
    meta = json.load(open(os.path.join(classifier, "assets.extra", "myol_keras.json")))
    assert meta["kind"] == "classifier" and meta["num_classes"] == 10

    import tensorflow as tf

    loaded = tf.saved_model.load(classifier)
    images = np.random.default_rng(0).integers(0, 256, size=(3, 40, 40, 3), dtype=np.uint8)
    by_uint8 = loaded.signatures["serving_default"](tf.constant(images))
    by_pixels = loaded.signatures["serve_pixels"](tf.constant(images, tf.float32) / 255.0)
    assert set(by_uint8) == {"logits", "probabilities"}
    np.testing.assert_allclose(by_uint8["logits"], by_pixels["logits"], atol=1e-4)
    np.testing.assert_allclose(np.sum(by_uint8["probabilities"], 1), 1.0, atol=1e-5)

    status, out, err = run_entry_point(knn, [f"--saved_model={pretrained['export']}", "--max_train_images=600",
                                  "--max_test_images=200"], capsys)
    assert status == 0, err
    status, out, err = run_entry_point(attack, [f"--classifier={saved / 'tiny-linear'}", "--max_images=40",
                                     "--pgd_steps=2", "--batch_size=20"], capsys)
    assert status == 0, err
    assert "attacks (pixel)" in err and "pgd(2)" in out

    folder = tmp_path / "photos" / "sub"
    folder.mkdir(parents=True)
    for i in range(3):
        tf.io.write_file(str(folder / f"im{i}.png"), tf.io.encode_png(images[i]))
    (folder / "notes.txt").write_text("not an image")
    output = tmp_path / "emb" / "photos.npy"
    status, out, err = run_entry_point(embed, [f"--saved_model={pretrained['export']}", f"--images={tmp_path / 'photos'}",
                                    f"--output={output}"], capsys)
    assert status == 0, err
    assert np.load(output).shape == (3, 32)  # width-4 ResNet-18: 8 * 4 features
    assert open(tmp_path / "emb" / "photos.txt").read().split() == [f"sub/im{i}.png" for i in range(3)]

    records = json.load(open(os.path.join(pretrained["run_dir"], "results.json")))
    assert [r["evaluation"] for r in records] == ["linear", "knn", "attack"]
    status, out, err = run_entry_point(report, [f"--runs={pretrained['run_dir']}"], capsys)
    assert status == 0, err
    text = open(os.path.join(pretrained["run_dir"], "report.md")).read()
    assert "| run |" in text and "linear top-1" in text and "pgd(2) [pixel]" in text
    for plot in ("training.png", "attack_vs_eps.png", "embedding_tiny.png"):
        assert os.path.exists(os.path.join(pretrained["run_dir"], "plots", plot)), plot
        assert f"plots/{plot}" in text


@pytest.mark.parametrize("case", ["not_saved_model", "classifier_as_encoder", "encoder_as_classifier",
                                  "unlabelled", "eps", "empty_folder", "missing_flag"])
def test_bad_inputs_are_one_line_with_exit_status_2(case, pretrained, tmp_path, capsys):
    export = pretrained["export"]
    classifier = str(pretrained["root"] / "saved_models" / "tiny-linear")
    if case == "classifier_as_encoder" and not os.path.isdir(classifier):
        linear_probe.linear_probe(export, epochs=1, max_train_images=100, max_test_images=50, verbose=False)
    if case == "not_saved_model":
        module, argv, match = linear_probe, [f"--saved_model={tmp_path}"], "No SavedModel"
    elif case == "classifier_as_encoder":
        module, argv, match = knn, [f"--saved_model={classifier}"], "is a classifier export"
    elif case == "encoder_as_classifier":
        module, argv, match = attack, [f"--classifier={export}"], "is an encoder export"
    elif case == "unlabelled":
        path = tmp_path / "unlabelled.npz"
        np.savez(path, x_train=np.zeros((8, 32, 32, 3), np.uint8))
        module, argv, match = linear_probe, [f"--saved_model={export}", "--dataset=npz", f"--data_dir={path}"], "label"
    elif case == "eps":
        module, argv, match = attack, [f"--classifier={classifier}", "--fgsm_eps=1.5"], r"--fgsm_eps=1.5: 1.5 is not a number in the range \[0, 1\]"
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        module, argv, match = embed, [f"--saved_model={export}", f"--images={tmp_path / 'empty'}"], "no images"
    else:
        module, argv, match = attack, [], "--classifier=DIR is required"
    status, out, err = run_entry_point(module, argv, capsys)
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{module.PROG}: error: ")
    assert __import__("re").search(match, lines[0]), lines[0]


@pytest.mark.parametrize("tool, argv, match", [
    ("myol_keras.evaluation.linear_probe", ["--saved_model=x", "--batch_size=0"],
     r"flag --batch_size=0: 0 is not a positive integer"),
    ("myol_keras.evaluation.linear_probe", ["--saved_model=x", "--lr=0"], r"flag --lr=0.0: the learning rate must be > 0"),
    ("myol_keras.evaluation.linear_probe", [], r"--saved_model=DIR is required"),
    ("myol_keras.evaluation.knn", ["--saved_model=x", "--temperature=-1"], r"the temperature must be > 0"),
    ("myol_keras.evaluation.semisup", ["--saved_model=x", "--label_fraction=0.01,0"], r"every fraction must be in \(0, 1\]"),
    ("myol_keras.evaluation.semisup", ["--saved_model=x", "--label_fraction=1/0"], r"cannot read '1/0' as a finite number"),
    ("myol_keras.evaluation.attack", ["--classifier=x", "--pgd_steps=8,0"], r"flag --pgd_steps=8,0: 0 is not a positive"),
    ("myol_keras.evaluation.attack", ["--classifier=x", "--attack_space=raw"], r"value should be one of <pixel\|normalized_clip01>"),
    ("myol_keras.evaluation.transfer", ["--saved_model=x", "--data_dirs=npz"], r"every item must be name=path"),
    ("myol_keras.embed", ["--saved_model=x", "--images=y", "--output=e.txt"], r"flag --output=e.txt: give a .npy path"),
    ("myol_keras.sweep", ["--batch_sizes=256,1"], r"flag --batch_sizes=256,1: 1 is not an integer >= 2 \(BatchNorm needs two images\)"),
    ("myol_keras.report", [], r"pass at least one run directory"),
    ("myol_keras.evaluation.random_init", ["--saved_model=x", "--epochs=0"], r"flag --epochs=0: 0 is not a positive"),
], ids=["probe_batch", "probe_lr", "probe_required", "knn_temperature", "semisup_fraction", "semisup_unreadable",
        "attack_steps", "attack_space", "transfer_pairs", "embed_output", "sweep_batch", "report_runs",
        "random_init_epochs"])
def test_flag_errors_are_caught_by_absl_in_one_line_with_exit_status_2(tool, argv, match, capsys, tmp_path,
                                                                          monkeypatch):
    import importlib
    import re

    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(tool)
    status, out, err = run_entry_point(module, argv, capsys)
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{module.PROG}: error: "), lines[0]
    assert re.search(match, lines[0]), lines[0]
    assert os.listdir(tmp_path) == []
