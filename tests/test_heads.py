"""Tests for myol_keras.heads (BYOL/MYOL MLP projector and predictor)."""

import math

import keras
import numpy as np
import pytest

from myol_keras import heads
from myol_keras.heads import MLPHead


# Keras' own weight saving and get_weights() trigger this NumPy-2 warning.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
)


def init_kwargs(**overrides):
    kwargs = {"hidden_dim": 32, "output_dim": 8}
    kwargs.update(overrides)
    return kwargs


def features(batch, dim, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, dim)).astype("float32")


def run(model, x, training=False):
    return keras.ops.convert_to_numpy(model(x, training=training))


def test_output_shape_and_structure():
    head = MLPHead(**init_kwargs())
    outputs = head(features(4, 16), training=True)
    assert tuple(outputs.shape) == (4, 8)
    assert head.compute_output_shape((None, 16)) == (None, 8)
    shapes = sorted(tuple(w.shape) for w in head.trainable_weights)
    # Dense 16→32 (kernel, bias), BN γ/β (32), Dense 32→8 (kernel, bias).
    assert shapes == sorted([(16, 32), (32,), (32,), (32,), (32, 8), (8,)])
    assert len(head.non_trainable_weights) == 2  # BN moving mean / variance
    assert head.hidden_dense.use_bias and head.output_dense.use_bias
    assert head.hidden_bn.momentum == pytest.approx(0.9)
    assert head.hidden_bn.epsilon == pytest.approx(1e-5)


def test_no_batch_norm_on_the_output():
    head = MLPHead(**init_kwargs())
    head.build((None, 16))
    norms = [
        layer
        for layer in head._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert norms == [head.hidden_bn]
    # The output is the last Dense, not normalised: batch statistics are free.
    outputs = keras.ops.convert_to_numpy(head(features(64, 16), training=True))
    assert not np.allclose(outputs.mean(axis=0), 0.0, atol=1e-3)


def test_matches_numpy_reference():
    head = MLPHead(**init_kwargs())
    x = features(8, 16)
    outputs = keras.ops.convert_to_numpy(head(x, training=True))
    w1, b1 = head.hidden_dense.kernel.numpy(), head.hidden_dense.bias.numpy()
    w2, b2 = head.output_dense.kernel.numpy(), head.output_dense.bias.numpy()
    h = x @ w1 + b1
    h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)  # γ = 1, β = 0
    expected = np.maximum(h, 0.0) @ w2 + b2
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)


def test_training_flag_reaches_batch_norm():
    head = MLPHead(**init_kwargs())
    x = features(16, 16) + 3.0
    inference = keras.ops.convert_to_numpy(head(x, training=False))
    mean_before = head.hidden_bn.moving_mean.numpy().copy()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(head(x, training=False)), inference
    )
    training = keras.ops.convert_to_numpy(head(x, training=True))
    assert not np.allclose(training, inference)
    assert not np.allclose(head.hidden_bn.moving_mean.numpy(), mean_before)
    # Inside a functional model too.
    inputs = keras.Input((16,))
    model = keras.Model(inputs, MLPHead(**init_kwargs())(inputs))
    assert not np.allclose(run(model, x, True), run(model, x, False))


def test_torch_linear_init_statistics():
    head = MLPHead(hidden_dim=2048, output_dim=128)
    head.build((None, 512))
    for dense, fan_in in ((head.hidden_dense, 512), (head.output_dense, 2048)):
        bound = 1.0 / math.sqrt(fan_in)
        kernel = dense.kernel.numpy()
        bias = dense.bias.numpy()
        assert np.abs(kernel).max() <= bound
        assert np.abs(kernel).max() > 0.99 * bound
        assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
        assert np.abs(bias).max() <= bound
        assert np.abs(bias).max() > 0.8 * bound
        assert bias.std() == pytest.approx(bound / math.sqrt(3), rel=0.15)
    assert not np.allclose(
        head.hidden_dense.bias.numpy()[:128], head.output_dense.bias.numpy()
    )


def test_factories_defaults():
    projector = heads.projection_head()
    predictor = heads.prediction_head()
    for head, name in ((projector, "projector"), (predictor, "predictor")):
        assert head.name == name
        assert (head.hidden_dim, head.output_dim) == (2048, 128)
    byol = heads.projection_head(hidden_dim=4096, output_dim=256, name="g")
    assert (byol.name, byol.hidden_dim, byol.output_dim) == ("g", 4096, 256)


def test_get_config_round_trip():
    head = MLPHead(**init_kwargs(), name="projector")
    head.build((None, 16))
    config = head.get_config()
    assert config["hidden_dim"] == 32 and config["output_dim"] == 8
    restored = MLPHead.from_config(config)
    assert restored.get_config() == config
    restored.build((None, 16))
    restored.set_weights(head.get_weights())
    x = features(4, 16)
    np.testing.assert_allclose(run(restored, x), run(head, x), atol=1e-6)


def test_keras_save_load_round_trip(tmp_path):
    inputs = keras.Input((16,))
    head = MLPHead(**init_kwargs(), name="projector")
    model = keras.Model(inputs, head(inputs))
    x = features(4, 16)
    model(x, training=True)
    expected = run(model, x)
    path = tmp_path / "head.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.get_layer("projector"), MLPHead)
    np.testing.assert_allclose(run(restored, x), expected, atol=1e-6)


def test_standalone_layer_save_load(tmp_path):
    head = MLPHead(**init_kwargs())
    x = features(4, 16)
    expected = run(head, x)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(head)
    )
    # The serialized build config builds the restored layer.
    assert restored.built
    restored.set_weights(head.get_weights())
    np.testing.assert_allclose(
        run(restored, x), expected, atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"hidden_dim": 0},
            r"Expected `hidden_dim` to be a positive integer\. "
            r"Received: hidden_dim=0",
        ),
        (
            {"output_dim": -3},
            r"Expected `output_dim` to be a positive integer\. "
            r"Received: output_dim=-3",
        ),
        ({"hidden_dim": 2.5}, r"Received: hidden_dim=2\.5"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLPHead(**init_kwargs(**kwargs))


def test_unknown_input_dim_raises():
    head = MLPHead(**init_kwargs())
    with pytest.raises(ValueError, match=r"last input dimension of `MLPHead`"):
        head.build((None, None))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_policy(policy):
    try:
        keras.mixed_precision.set_global_policy(policy)
        head = MLPHead(**init_kwargs())
        compute_dtype = keras.mixed_precision.global_policy().compute_dtype
        outputs = head(features(4, 16), training=True)
        assert keras.backend.standardize_dtype(outputs.dtype) == compute_dtype
        for layer in (head.hidden_dense, head.hidden_bn, head.output_dense):
            assert layer.dtype_policy.name == policy
        for weight in head.weights:
            assert weight.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
