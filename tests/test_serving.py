"""The serving contract (docs/DECISIONS.md §4.6, docs/SERVING.md), checked the way TF Serving
and its users see an export: `saved_model_cli show --all`, `saved_model_cli run`
with `--inputs` from an `.npy` file, and `tf.saved_model.load` in a fresh
process — each compared with the in-process Keras model. One tiny encoder and
its probe classifier are exported once for the module.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

SAVED_MODEL_CLI = [sys.executable, "-c", "from tensorflow.python.tools.saved_model_cli import main; main()"]
IMAGE_SIZE, MEAN, STD = 16, (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


def _run(cmd, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    import keras
    import tensorflow as tf

    from myol_keras import export
    from myol_keras.backbones import ResNet
    from myol_keras.evaluation import linear_probe
    from myol_keras.preprocessing import evaluation_transform

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("saved_models")
    backbone = ResNet(depth=18, stem="cifar", width=4)
    backbone.build((None, IMAGE_SIZE, IMAGE_SIZE, 3))
    # Move the BN statistics off their initial values so inference mode matters.
    backbone(tf.random.uniform([8, IMAGE_SIZE, IMAGE_SIZE, 3]) * 2.0, training=True)
    encoder_dir = export.export_encoder(backbone, str(root / "tiny"), image_size=IMAGE_SIZE, mean=MEAN, std=STD,
                                        metadata={"dataset": "npz", "num_classes": 3})
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(backbone.output_shape[-1], 3)).astype("float32")
    bias = rng.normal(size=(3,)).astype("float32")
    classifier_dir = linear_probe.export_classifier(encoder_dir, kernel, bias)

    # 24x20 uint8 images: not the training size, so the export's resize runs too.
    images = rng.integers(0, 256, size=(5, 24, 20, 3), dtype=np.uint8)
    normalised = evaluation_transform(images, IMAGE_SIZE, MEAN, STD)  # centre 20x20 square, resized
    embedding = backbone(normalised, training=False).numpy()
    logits = embedding @ kernel + bias
    npy = root / "images.npy"
    np.save(npy, images)
    return {
        "encoder": encoder_dir, "classifier": classifier_dir, "images": images, "npy": str(npy),
        "embedding": embedding, "logits": logits, "feature_dim": embedding.shape[1], "root": root,
    }


def _signature_block(text, name):
    start = text.index(f"signature_def['{name}']")
    rest = text[start + 1:]
    end = rest.find("signature_def[")
    return text[start: start + 1 + (end if end >= 0 else len(rest))]


def test_layout_is_a_model_base_path_with_integer_versions(exports):
    assert os.path.basename(exports["encoder"]) == "1"
    assert os.path.basename(os.path.dirname(exports["classifier"])) == "tiny-linear"
    for d in (exports["encoder"], exports["classifier"]):
        assert os.path.exists(os.path.join(d, "saved_model.pb")) and os.path.isdir(os.path.join(d, "variables"))
        assert sorted(p for p in os.listdir(os.path.dirname(d))) == ["1"]


def test_saved_model_cli_show_all(exports):
    text = _run([*SAVED_MODEL_CLI, "show", "--dir", exports["encoder"], "--all"])
    serving = _signature_block(text, "serving_default")
    assert "inputs['images']" in serving and "dtype: DT_UINT8" in serving and "shape: (-1, -1, -1, 3)" in serving
    assert "outputs['embedding']" in serving and "dtype: DT_FLOAT" in serving
    assert f"shape: (-1, {exports['feature_dim']})" in serving
    pixels = _signature_block(text, "serve_pixels")
    assert "inputs['pixels']" in pixels and "dtype: DT_FLOAT" in pixels and "shape: (-1, -1, -1, 3)" in pixels

    text = _run([*SAVED_MODEL_CLI, "show", "--dir", exports["classifier"], "--all"])
    serving = _signature_block(text, "serving_default")
    assert "inputs['images']" in serving and "dtype: DT_UINT8" in serving
    assert "outputs['logits']" in serving and "outputs['probabilities']" in serving and "shape: (-1, 3)" in serving


def test_saved_model_cli_run_matches_in_process_model(exports, tmp_path):
    _run([*SAVED_MODEL_CLI, "run", "--dir", exports["encoder"], "--tag_set", "serve",
          "--signature_def", "serving_default", "--inputs", f"images={exports['npy']}", "--outdir", str(tmp_path)])
    served = np.load(tmp_path / "embedding.npy")
    np.testing.assert_allclose(served, exports["embedding"], atol=1e-4)


def test_fresh_process_tf_saved_model_load(exports):
    script = f"""
import json, numpy as np, tensorflow as tf
images = tf.constant(np.load({exports['npy']!r}))
enc = tf.saved_model.load({exports['encoder']!r})
cls = tf.saved_model.load({exports['classifier']!r})
out = {{
    "signatures": sorted(enc.signatures),
    "embedding": enc.signatures["serving_default"](images=images)["embedding"].numpy().tolist(),
    "pixels": enc.signatures["serve_pixels"](pixels=tf.cast(images, tf.float32) / 255.0)["embedding"].numpy().tolist(),
    "logits": cls.signatures["serving_default"](images=images)["logits"].numpy().tolist(),
    "probabilities": cls.signatures["serving_default"](images=images)["probabilities"].numpy().tolist(),
}}
print(json.dumps(out))
"""
    out = json.loads(_run([sys.executable, "-c", script]).strip().splitlines()[-1])
    assert out["signatures"] == ["serve_pixels", "serving_default"]
    np.testing.assert_allclose(out["embedding"], exports["embedding"], atol=1e-4)
    np.testing.assert_allclose(out["pixels"], exports["embedding"], atol=1e-4)
    np.testing.assert_allclose(out["logits"], exports["logits"], atol=1e-3)
    probabilities = np.asarray(out["probabilities"])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), exports["logits"].argmax(axis=1))


def test_metadata_describes_the_contract(exports):
    from myol_keras import export

    meta = export.load_export_metadata(exports["encoder"])
    assert meta["image_size"] == IMAGE_SIZE and meta["feature_dim"] == exports["feature_dim"]
    assert set(meta["signatures"]) == {"serving_default", "serve_pixels"}
    cmeta = export.load_export_metadata(exports["classifier"])
    assert cmeta["kind"] == "classifier" and cmeta["num_classes"] == 3
