"""Shared fixtures: tiny models and data, the shared CIFAR-10 subset."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CIFAR_SUBSET = SHARED_DATA / "cifar10_subset.npz"


@pytest.fixture
def gemm_calls(monkeypatch):
    """The inputs `x` of every `myol_keras.conv.patches_weight_gradient` call (at trace time), in order."""
    from myol_keras import conv

    calls = []
    original = conv.patches_weight_gradient

    def recording(x, *args):
        calls.append(x)
        return original(x, *args)

    monkeypatch.setattr(conv, "patches_weight_gradient", recording)
    return calls


@pytest.fixture
def cifar_subset_path():
    """Path of ../shared/data/cifar10_subset.npz; skips cleanly when absent."""
    if not CIFAR_SUBSET.exists():
        pytest.skip(f"shared CIFAR-10 subset not found at {CIFAR_SUBSET}")
    return str(CIFAR_SUBSET.resolve())


def run_entry_point(module, argv, capsys):
    """`module.main([module.PROG, *argv])` (a command-line tool) in this process -> (exit status, stdout, stderr)."""
    try:
        status = module.main([module.PROG, *argv])
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def run_main_in_process(argv, capsys):
    """`myol_keras.main.main(argv)` in this process -> (exit status, stdout, stderr)."""
    from myol_keras import main as cli

    return run_entry_point(cli, argv, capsys)


def one_line(error, *fragments):
    """The message of a `pytest.raises` result, asserted to be one line holding every fragment."""
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def tiny_method(method_cls, width=4, hidden=32, dim=16, **kwargs):
    """A method on a width-`width` ResNet-18 with small heads."""
    from myol_keras.backbones import ResNet

    return method_cls(
        ResNet(depth=18, stem="cifar", width=width),
        projector_hidden_dim=hidden,
        projection_dim=dim,
        predictor_hidden_dim=hidden,
        **kwargs,
    )


def random_views(batch=8, size=16, num_views=2, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.normal(size=(batch, size, size, 3)).astype("float32") for _ in range(num_views))


@pytest.fixture(scope="session", autouse=True)
def _image_cache_dir(tmp_path_factory):
    """Decoded-image caches of the tests (and of the CLI processes they start) go to a session directory,
    never to the user's ~/.cache/myol_keras."""
    previous = os.environ.get("MYOL_KERAS_CACHE_DIR")
    path = tmp_path_factory.mktemp("image-cache")
    os.environ["MYOL_KERAS_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("MYOL_KERAS_CACHE_DIR", None)
    else:
        os.environ["MYOL_KERAS_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def _reset_dtype_policy():
    """Every test starts and ends with the float32 policy."""
    yield
    import keras

    keras.mixed_precision.set_global_policy("float32")


def pytest_collection_modifyitems(items):
    """The files with end-to-end (`slow`) tests run first, each file's tests in their own order.

    Under `--dist loadfile` (pyproject.toml) a file is one unit of work; the longest files (the multi-worker,
    kill-and-resume and benchmark-smoke files, minutes each) started last would leave one worker running
    alone at the end, started first they overlap the many short files.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items[:] = sorted(items, key=lambda item: item.path not in slow_files)  # stable: file order kept
