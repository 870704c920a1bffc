"""myol_keras.conv: the GEMM weight gradient equals TensorFlow's convolution gradient, and only applies where asked."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from myol_keras import conv
from myol_keras import scoped


def test_patches_weight_gradient_by_hand():
    # x = [[1, 2], [3, 4]], dy = 1 everywhere, 3x3 "same": dW[i, j] sums the padded input
    # over the 2x2 window shifted by (i, j):
    # x_pad = [[0,0,0,0], [0,1,2,0], [0,3,4,0], [0,0,0,0]].
    x = tf.constant([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None]
    dy = tf.ones((1, 2, 2, 1))
    got = conv.patches_weight_gradient(x, dy, 3).numpy()[:, :, 0, 0]
    np.testing.assert_array_equal(got, [[1, 3, 2], [4, 10, 6], [3, 7, 4]])


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_patches_weight_gradient_is_tensorflows_filter_gradient(kernel_size):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, 5, 4, 6)), tf.float64)
    dy = tf.constant(rng.normal(size=(3, 5, 4, 7)), tf.float64)
    expected = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=[kernel_size, kernel_size, 6, 7],
                                               out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME")
    np.testing.assert_allclose(conv.patches_weight_gradient(x, dy, kernel_size), expected, rtol=1e-12, atol=1e-12)


def _gradients(layer, x, max_side, gradient_pass=True):
    with tf.GradientTape() as tape, conv.gemm_weight_gradient_side(max_side), scoped.GRADIENT_PASS.set(gradient_pass):
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.cast(tf.range(y.shape[-1]), tf.float32))
    dx, dw = tape.gradient(loss, [x, layer.kernel])
    return y, dx, dw


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("mixed_bfloat16", 2e-2)])
def test_layer_gradients_equal_keras_conv2d(dtype, tolerance, gemm_calls):
    ours = conv.Conv2D(8, 3, padding="same", use_bias=False, dtype=dtype, name="conv")
    theirs = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, dtype=dtype, name="conv")
    x = tf.random.stateless_normal((4, 4, 4, 5), seed=[1, 2])
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())

    y, dx, dw = _gradients(ours, x, max_side=4)
    assert len(gemm_calls) == 1 and gemm_calls[0].dtype == ours.compute_dtype  # bf16 activations under the mixed policy
    y_ref, dx_ref, dw_ref = _gradients(theirs, x, max_side=4)
    np.testing.assert_array_equal(tf.cast(y, tf.float32), tf.cast(y_ref, tf.float32))  # the same forward op
    np.testing.assert_array_equal(dx, dx_ref)  # the same input-gradient op
    scale = float(tf.reduce_max(tf.abs(dw_ref)))
    np.testing.assert_allclose(dw / scale, dw_ref / scale, atol=tolerance, rtol=0)
    assert dw.dtype == tf.float32  # the gradient of the float32 variable


def test_layer_takes_the_gemm_path_only_where_it_applies(gemm_calls):
    x = tf.random.stateless_normal((2, 4, 4, 3), seed=[0, 0])
    same = conv.Conv2D(2, 3, padding="same", use_bias=False)
    for layer, max_side in [
        (same, 0),  # off
        (same, 3),  # the input side 4 is above max_side
        (conv.Conv2D(2, 3, strides=2, padding="same", use_bias=False), 8),
        (conv.Conv2D(2, 3, padding="valid", use_bias=False), 8),
        (conv.Conv2D(2, 2, padding="same", use_bias=False), 8),  # even kernel: "same" pads unevenly
        (conv.Conv2D(2, 3, padding="same", dilation_rate=2, use_bias=False), 8),
    ]:
        _gradients(layer, x, max_side)
    assert gemm_calls == []
    same(x)  # outside any block
    _gradients(same, x, 4, gradient_pass=False)  # the lever alone: not a training step's gradient pass
    assert gemm_calls == []
    _gradients(same, x, 4)
    assert [tuple(x.shape) for x in gemm_calls] == [(2, 4, 4, 3)]
    assert conv.current_side_setting() == "auto" and conv.current_max_side("float32") == 0  # defaults again


def test_the_lever_is_process_wide_and_the_gradient_pass_per_thread():
    # A tf.distribute strategy traces each replica's step in its own thread: the lever an entry
    # point sets around fit must reach them, the gradient pass a replica opens must not leak.
    import threading

    seen = []

    def replica():
        seen.append((conv.current_side_setting(), scoped.GRADIENT_PASS.value))
        with scoped.GRADIENT_PASS.set(True):
            seen.append(conv.current_max_side("bfloat16"))

    with conv.gemm_weight_gradient_side(4), scoped.GRADIENT_PASS.set(True):
        thread = threading.Thread(target=replica)
        thread.start()
        thread.join()
    assert seen == [(4, False), 4]


def test_max_side_settings():
    assert conv.auto_max_side("bfloat16", has_gpu=False) == conv.DEFAULT_MAX_SIDE == 8
    assert conv.auto_max_side("bfloat16", has_gpu=True) == 0
    assert conv.auto_max_side("float32", has_gpu=False) == 0
    assert conv.resolve_max_side(0, "bfloat16") == 0 and conv.resolve_max_side(8, "float32") == 8
    assert conv.resolve_max_side("auto", "float32") == 0
    for bad in (-1, 2.5, True, "on"):
        with pytest.raises(ValueError, match="gemm_weight_gradient_side"):
            conv.resolve_max_side(bad, "float32")
    with pytest.raises(ValueError, match="gemm_weight_gradient_side"):
        with conv.gemm_weight_gradient_side(-1):
            pass
    assert conv.current_side_setting() == "auto"


def test_the_lever_is_no_argument_of_the_model():
    from conftest import tiny_method
    from myol_keras.methods import BYOL

    model = tiny_method(BYOL)
    assert "gemm_weight_gradient_side" not in model.get_config()
    with pytest.raises(ValueError, match="gemm_weight_gradient_side"):
        tiny_method(BYOL, gemm_weight_gradient_side=8)  # Keras refuses an unknown argument


def test_weight_files_address_it_as_keras_conv2d(tmp_path):
    # Keras names a layer in weight files after its class: checkpoints written with
    # keras.layers.Conv2D load into conv.Conv2D and back.
    def model(layer_cls):
        inputs = keras.Input((4, 4, 3))
        return keras.Model(inputs, layer_cls(2, 3, padding="same", use_bias=False)(inputs))

    keras.utils.set_random_seed(0)
    theirs = model(keras.layers.Conv2D)
    path = str(tmp_path / "conv.weights.h5")
    theirs.save_weights(path)
    ours = model(conv.Conv2D)
    ours.load_weights(path)
    np.testing.assert_array_equal(ours.get_weights()[0], theirs.get_weights()[0])
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ours.layers[1]))
    assert type(restored) is conv.Conv2D
