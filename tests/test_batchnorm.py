"""BatchNormalization: Keras' layer on TF's fused kernel, torch's running variance."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from myol_keras.batchnorm import BatchNormalization

MOMENTUM = 0.9
EPSILON = 1e-5


def _pair(shape, seed=0):
    """A fused layer and a Keras layer with the same (non-trivial) weights."""
    fused = BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON)
    plain = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON)
    fused.build(shape)
    plain.build(shape)
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    weights = [
        rng.uniform(0.5, 1.5, channels),  # gamma
        rng.normal(0, 0.3, channels),  # beta
        rng.normal(0, 0.2, channels),  # moving mean
        rng.uniform(0.5, 2.0, channels),  # moving variance
    ]
    weights = [w.astype("float32") for w in weights]
    fused.set_weights(weights)
    plain.set_weights(weights)
    return fused, plain, weights


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (16, 7)])
def test_training_matches_keras_output_gradients_and_torch_running_stats(shape):
    fused, plain, (gamma, beta, mean0, var0) = _pair(shape)
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, shape).astype("float32"))
    upstream = tf.constant(np.random.default_rng(2).normal(size=shape).astype("float32"))
    results = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            objective = tf.reduce_sum(y * upstream)
        grads = tape.gradient(objective, [x, layer.gamma, layer.beta])
        results.append((y.numpy(), [g.numpy() for g in grads]))
    (y_fused, g_fused), (y_plain, g_plain) = results
    np.testing.assert_allclose(y_fused, y_plain, atol=2e-5)
    for a, b in zip(g_fused, g_plain):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)

    # Running statistics as torch's BatchNorm: unbiased batch variance.
    axes = tuple(range(len(shape) - 1))
    n = int(np.prod([shape[a] for a in axes]))
    batch_mean = x.numpy().mean(axis=axes)
    batch_var = x.numpy().var(axis=axes)
    np.testing.assert_allclose(
        fused.moving_mean.numpy(), MOMENTUM * mean0 + (1 - MOMENTUM) * batch_mean, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        fused.moving_variance.numpy(),
        MOMENTUM * var0 + (1 - MOMENTUM) * batch_var * n / (n - 1),
        rtol=1e-5,
    )
    # ... where Keras' own layer uses the biased one.
    np.testing.assert_allclose(
        plain.moving_variance.numpy(), MOMENTUM * var0 + (1 - MOMENTUM) * batch_var, rtol=1e-5
    )


def test_inference_uses_moving_statistics_and_leaves_them_alone():
    shape = (4, 3, 3, 5)
    fused, plain, (gamma, beta, mean0, var0) = _pair(shape)
    x = np.random.default_rng(3).normal(size=shape).astype("float32")
    expected = gamma * (x - mean0) / np.sqrt(var0 + EPSILON) + beta
    np.testing.assert_allclose(fused(x, training=False).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(plain(x, training=False).numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(fused.moving_mean.numpy(), mean0)
    # trainable=False means inference mode even with training=True (Keras' rule).
    fused.trainable = False
    np.testing.assert_allclose(fused(x, training=True).numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(fused.moving_variance.numpy(), var0)


def test_epsilon_is_not_raised_to_the_fused_minimum():
    # tf.nn.fused_batch_norm would clamp epsilon to 1.001e-5; the layer must not.
    layer = BatchNormalization(epsilon=1e-9, center=False, scale=False)
    x = np.array([[0.0], [1e-3]], "float32")  # biased variance 2.5e-7
    y = layer(x, training=True).numpy()
    expected = 5e-4 / np.sqrt(2.5e-7 + 1e-9)  # 0.998; with 1.001e-5 it would be 0.156
    np.testing.assert_allclose(y[:, 0], [-expected, expected], rtol=1e-4)


def test_unsupported_cases_fall_back_to_keras():
    x = np.random.default_rng(4).normal(size=(4, 3, 6)).astype("float32")  # 3-D
    fused = BatchNormalization()
    plain = keras.layers.BatchNormalization()
    np.testing.assert_allclose(
        fused(x, training=True).numpy(), plain(x, training=True).numpy(), atol=1e-5
    )
    channels_first = BatchNormalization(axis=1)
    assert not channels_first._fused_applies(tf.zeros((2, 3, 4, 4)), None)
    synced = BatchNormalization(synchronized=True)
    assert not synced._fused_applies(tf.zeros((2, 4, 4, 3)), None)
    assert BatchNormalization()._fused_applies(tf.zeros((2, 4, 4, 3)), None)


def test_mixed_bfloat16_keeps_activations_in_bfloat16():
    shape = (8, 4, 4, 6)
    fused = BatchNormalization(dtype="mixed_bfloat16")
    reference = BatchNormalization()
    x = np.random.default_rng(5).normal(size=shape).astype("float32")
    y = fused(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(fused.moving_mean.dtype) == "float32"
    np.testing.assert_allclose(
        np.asarray(y, "float32"), reference(x, training=True).numpy(), atol=0.05
    )


def test_serialisation_round_trip_and_functional_use():
    layer = BatchNormalization(momentum=0.8, epsilon=1e-4, name="bn")
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is BatchNormalization  # ours, not keras.layers.BatchNormalization
    assert (restored.momentum, restored.epsilon, restored.name) == (0.8, 1e-4, "bn")
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, BatchNormalization()(inputs))
    assert model.output_shape == (None, 4, 4, 3)
    assert model(np.ones((2, 4, 4, 3), "float32"), training=True).shape == (2, 4, 4, 3)


def test_weight_files_written_with_keras_batchnorm_load_into_ours(tmp_path):
    # Keras keys layers in weight files by class name: checkpoints written
    # before this layer existed (with Keras' BatchNormalization) must load.
    def model(bn_class):
        inputs = keras.Input((4, 4, 3))
        x = keras.layers.Conv2D(5, 3, name="conv")(inputs)
        x = bn_class(name="bn_a")(x)
        x = keras.layers.Conv2D(2, 1, name="conv2")(x)
        return keras.Model(inputs, bn_class(name="bn_b")(x))

    old = model(keras.layers.BatchNormalization)
    x = np.random.default_rng(6).normal(size=(8, 4, 4, 3)).astype("float32")
    old(x, training=True)  # moving statistics away from their initial values
    path = str(tmp_path / "old.weights.h5")
    old.save_weights(path)
    new = model(BatchNormalization)
    new.load_weights(path)
    for a, b in zip(old.weights, new.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(new(x, training=False).numpy(), old(x, training=False).numpy(), atol=1e-5)


# --- stacked views: per-view statistics in one call (issue 17) ----------------------


def _sequential_and_stacked(shape, groups, seed, **layer_kwargs):
    """k sequential calls on one layer, one `view_groups(k)` call on its twin: outputs, gradients, layers."""
    from myol_keras.batchnorm import view_groups

    sequential, _, weights = _pair(shape, seed)
    stacked = BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON, **layer_kwargs)
    stacked.build(shape)
    stacked.set_weights(weights)
    rng = np.random.default_rng(seed + 1)
    # views with clearly different moments, so a pooled normalisation would show
    views = [tf.constant(rng.normal(2.0 * i, 1.0 + i, shape).astype("float32")) for i in range(groups)]
    upstream = [tf.constant(rng.normal(size=shape).astype("float32")) for _ in range(groups)]

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(views)
        seq_out = [sequential(v, training=True) for v in views]
        seq_obj = tf.add_n([tf.reduce_sum(y * u) for y, u in zip(seq_out, upstream)])
        with view_groups(groups):
            out = stacked(tf.concat(views, axis=0), training=True)
        obj = tf.reduce_sum(out * tf.concat(upstream, axis=0))
    seq_grads = tape.gradient(seq_obj, views + [sequential.gamma, sequential.beta])
    grads = tape.gradient(obj, views + [stacked.gamma, stacked.beta])
    return (tf.concat(seq_out, 0), seq_grads, sequential), (out, grads, stacked)


@pytest.mark.parametrize("shape,groups", [((6, 5, 4, 3), 2), ((16, 7), 3), ((4, 3, 3, 8), 3)])
def test_stacked_views_equal_sequential_per_view_calls(shape, groups):
    (seq_y, seq_g, seq_layer), (y, g, layer) = _sequential_and_stacked(shape, groups, seed=7)
    np.testing.assert_allclose(y.numpy(), seq_y.numpy(), atol=1e-5)
    for a, b in zip(g, seq_g):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, rtol=1e-5)
    # running statistics: m <- mu m + (1 - mu) stat_1, then stat_2 on top, ... (unbiased variance)
    np.testing.assert_allclose(layer.moving_mean.numpy(), seq_layer.moving_mean.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), seq_layer.moving_variance.numpy(), rtol=1e-6)


def test_stacked_views_normalise_each_view_with_its_own_moments():
    from myol_keras.batchnorm import current_view_groups, view_groups

    layer = BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON, center=False, scale=False)
    x = np.concatenate([np.full((4, 2), 10.0), np.full((4, 2), -3.0)]).astype("float32")
    x += np.random.default_rng(8).normal(size=x.shape).astype("float32")
    with view_groups(2):
        assert current_view_groups() == 2
        y = layer(x, training=True).numpy()
        # inference mode ignores the groups: moving statistics for every row
        np.testing.assert_allclose(
            layer(x, training=False).numpy(),
            (x - layer.moving_mean.numpy()) / np.sqrt(layer.moving_variance.numpy() + EPSILON), atol=1e-5)
    assert current_view_groups() == 1
    for view in (y[:4], y[4:]):
        np.testing.assert_allclose(view.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(view.std(axis=0), 1.0, atol=1e-3)
    with pytest.raises(ValueError, match="num_views"):
        with view_groups(0):
            pass


def test_stacked_views_on_the_keras_path_equal_sequential_calls():
    # A 3-D input takes Keras' own arithmetic (not the fused kernel): the views still get their own moments.
    from myol_keras.batchnorm import view_groups

    rng = np.random.default_rng(9)
    views = [rng.normal(3.0 * i, 1.0 + i, (4, 3, 5)).astype("float32") for i in range(2)]
    sequential, stacked = BatchNormalization(momentum=MOMENTUM), BatchNormalization(momentum=MOMENTUM)
    expected = np.concatenate([sequential(v, training=True).numpy() for v in views])
    with view_groups(2):
        got = stacked(np.concatenate(views), training=True).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(stacked.moving_mean.numpy(), sequential.moving_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(stacked.moving_variance.numpy(), sequential.moving_variance.numpy(), rtol=1e-6)


def test_the_factory_synchronises_inside_options_only():
    # --sync_batchnorm: every BatchNormalization of the backbone and heads built inside the block.
    from myol_keras import batchnorm
    from myol_keras.backbones import ResNet

    with batchnorm.options(synchronized=True):
        synced = ResNet(depth=18, stem="cifar", width=4)
        one = batchnorm.batch_normalization(momentum=MOMENTUM)
    plain = ResNet(depth=18, stem="cifar", width=4)

    def bns(model):
        return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]

    assert type(one) is BatchNormalization and one.synchronized and one.momentum == MOMENTUM
    assert bns(synced) and all(layer.synchronized for layer in bns(synced))
    assert bns(plain) and not any(layer.synchronized for layer in bns(plain))
    assert not batchnorm.batch_normalization().synchronized
