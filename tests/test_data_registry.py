"""The dataset registry (issue 25): a user's plug-in source, added through the public API, loads and
pre-trains by name like a built-in one; the registry and the `--dataset` help import no TensorFlow."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from myol_keras import data

ROOT = Path(__file__).resolve().parents[1]

# A user's plug-in, as it would sit in their own module: 24 fixed 16-px images of three classes
# (horizontal stripes 2, 4 or 8 px wide, each image with its own brightness).
PLUGIN = textwrap.dedent('''
    import numpy as np

    from myol_keras import data


    def stripes():
        rows = np.arange(16)
        images, labels = [], []
        for i in range(24):
            label = i % 3
            period = 2 ** (label + 1)
            image = np.where((rows // period) % 2 == 0, 40 + 8 * i, 250 - 4 * i).astype(np.uint8)
            images.append(np.broadcast_to(image[:, None, None], (16, 16, 3)))
            labels.append(label)
        return np.stack(images), np.asarray(labels, np.int64)


    class Stripes(data.DataSource):
        name = "toy_stripes"
        summary = "generated, offline"

        def info(self):
            return data.DatasetInfo(self.name, 3, 16, (0.5, 0.5, 0.5), (0.3, 0.3, 0.3), 18)

        def pretrain_array(self, data_dir, *, download=True, image_size=None, cache_dir=None):
            images, _ = stripes()
            return images[:18], self.info()

        def labelled_array(self, split, data_dir, *, download=True, image_size=None, cache_dir=None):
            images, labels = stripes()
            part = slice(0, 18) if split == "train" else slice(18, 24)
            return images[part], labels[part], self.info()
''')


@pytest.fixture
def plugin():
    """The plug-in module's namespace, its source registered for the test (and removed after)."""
    namespace = {}
    exec(compile(PLUGIN, "toy_plugin.py", "exec"), namespace)
    data.register(namespace["Stripes"]())
    yield namespace
    data.unregister("toy_stripes")


def test_a_plugin_source_is_loaded_by_name_like_a_builtin(plugin):
    images, labels = plugin["stripes"]()
    assert "toy_stripes" in data.DATASETS and data.DATASETS[-1] == "toy_stripes"
    assert data.describe_datasets().endswith("; digits (embedded, offline); toy_stripes (generated, offline)")

    x, info = data.load_pretrain_array("toy_stripes")
    np.testing.assert_array_equal(x, images[:18])
    assert (info.name, info.num_classes, info.image_size) == ("toy_stripes", 3, 16)
    streamed, _ = data.load_pretrain_images("toy_stripes")  # the tf.data form comes for free
    np.testing.assert_array_equal(np.stack(list(streamed.as_numpy_iterator())), images[:18])
    test, _ = data.load_labelled("toy_stripes", "test")
    pairs = list(test.as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([p[0] for p in pairs]), images[18:])
    np.testing.assert_array_equal([p[1] for p in pairs], labels[18:])

    # The epoch pipeline visits every image of the plug-in once per epoch.
    batches = [e["images"].numpy() for e in data.epoch_pipeline(x, None, 6, seed=0).take(3)]
    seen = np.concatenate(batches)[:, 0, 0, 0]
    assert sorted(seen) == sorted(images[:18, 0, 0, 0])

    # The registry's argument checks apply to it as to the built-ins.
    with pytest.raises(ValueError, match=r"image_size can only be set for 'folder' and 'tiny_imagenet'"):
        data.load_pretrain_array("toy_stripes", image_size=16)
    with pytest.raises(ValueError, match=r"`split` must be one of \('train', 'test'\)"):
        data.load_labelled_array("toy_stripes", "validation")
    with pytest.raises(ValueError, match="already registered"):
        data.register(plugin["Stripes"]())


def test_registering_checks_the_source_and_unregistering_removes_it(plugin):
    class Unnamed(data.DataSource):
        name = "two words"

    with pytest.raises(ValueError, match="letters, digits"):
        data.register(Unnamed())
    with pytest.raises(TypeError, match="DataSource"):
        data.register(object())

    class PretrainOnly(data.DataSource):
        name = "toy_unlabelled"

    data.register(PretrainOnly())
    try:
        with pytest.raises(ValueError, match="'toy_unlabelled' has no labels"):
            data.load_labelled_array("toy_unlabelled", "train")
    finally:
        data.unregister("toy_unlabelled")
    assert "toy_unlabelled" not in data.DATASETS
    with pytest.raises(ValueError, match="Unknown dataset; choose one of: cifar10"):
        data.load_pretrain_array("toy_unlabelled")


def test_the_registry_and_the_dataset_help_import_no_tensorflow():
    script = textwrap.dedent("""
        import sys
        from myol_keras.data import DATASETS, NORMALIZATIONS, describe_datasets, register, DatasetInfo
        import myol_keras.data.registry
        assert "digits" in DATASETS and "cifar10" in NORMALIZATIONS, (DATASETS, NORMALIZATIONS)
        print(describe_datasets())
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-2000:]
    help_line, modules = result.stdout.splitlines()
    assert help_line == ("tfds cifar10, cifar100, stl10, fashion_mnist, mnist, svhn_cropped; local tiny_imagenet, "
                         "stl10_binary, folder, npz (with --data_dir); digits (embedded, offline)")
    assert modules == "[]"


def test_a_plugin_source_pretrains_from_the_command_line(tmp_path):
    # A user's script registers the plug-in, then runs the command line's main: --dataset takes the name.
    script = PLUGIN + textwrap.dedent(f"""
        data.register(Stripes())
        from myol_keras import main

        sys_argv = ["myol_keras.main", "--dataset=toy_stripes", "--width=4", "--batch_size=6", "--epochs=1",
                    "--warmup_epochs=0", "--projector_hidden_dim=16", "--projection_dim=8",
                    "--predictor_hidden_dim=16", "--precision=float32", "--run_name=toy",
                    "--run_dir={tmp_path}/runs", "--export_dir={tmp_path}/saved_models"]
        raise SystemExit(main.main(sys_argv))
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    config = (tmp_path / "runs" / "toy" / "config.json").read_text()
    assert '"dataset": "toy_stripes"' in config
    assert '"num_images": 18' in config and '"steps_per_epoch": 3' in config
    assert (tmp_path / "runs" / "toy" / "DONE").exists()
    assert [p.name for p in (tmp_path / "saved_models" / "toy").iterdir()] == ["1"]
