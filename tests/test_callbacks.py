"""`InputWait`: the share of the epoch spent waiting for input (issue 19).

Timing tests on a loaded machine: the slow pipeline sleeps 80 ms per batch in
a background map while the step takes about a millisecond, the fast one has
every batch ready while the host spends 40 ms per step elsewhere; the bounds
(above 50 %, below 20 %) leave a wide margin on both sides.
"""

import time

import numpy as np
import pytest
import tensorflow as tf

import keras

from myol_keras.callbacks import InputWait

STEPS = 6


@pytest.fixture(autouse=True)
def no_op_determinism():
    # A `--deterministic` run earlier in the same pytest process leaves op determinism on (it is
    # process-wide), and under it InputWait logs nothing by design; these tests need the clock.
    # TF exports only `enable_op_determinism`; its query and its inverse live in tf.python.
    from tensorflow.python.framework import config as tf_config

    was_enabled = tf_config.is_op_determinism_enabled()
    tf_config.disable_op_determinism()
    yield
    if was_enabled:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def _model(steps_per_execution=1):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=steps_per_execution)
    return model


def _dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(4).repeat()


def _slow(x, y):
    def sleep(value):
        time.sleep(0.08)
        return value

    x = tf.py_function(sleep, [x], tf.float32)
    x.set_shape([None, 8])
    return x, y


class _BusyHost(keras.callbacks.Callback):
    """40 ms of host work before every step (a step slower than the pipeline)."""

    def on_train_batch_begin(self, batch, logs=None):
        time.sleep(0.04)


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_a_slow_pipeline_is_input_bound(steps_per_execution):
    wait = InputWait()
    ds = wait.instrument(_dataset().map(_slow).prefetch(1))
    history = _model(steps_per_execution).fit(ds, epochs=2, steps_per_epoch=STEPS, verbose=0, shuffle=False,
                                              callbacks=[wait])
    # The second epoch: the first one also traces the train function.
    assert history.history["input_bound_percent"][1] > 50.0
    assert int(wait._batches.numpy()) == 2 * STEPS  # every step counted, also inside one execution


def test_a_ready_pipeline_is_not_input_bound():
    wait = InputWait()
    ds = wait.instrument(_dataset().cache().prefetch(4))
    history = _model().fit(ds, epochs=2, steps_per_epoch=STEPS, verbose=0, shuffle=False,
                                 callbacks=[wait, _BusyHost()])
    percent = history.history["input_bound_percent"]
    assert all(0.0 <= p < 20.0 for p in percent), percent


def test_the_instrumented_dataset_yields_the_same_elements():
    ds = _dataset().take(3)
    wait = InputWait()
    for (a, b), (c, d) in zip(ds, wait.instrument(ds)):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert int(wait._batches.numpy()) == 3
    assert wait.instrument(ds).element_spec == ds.element_spec


def test_an_uninstrumented_dataset_is_an_error():
    with pytest.raises(ValueError, match=r"InputWait saw no batch: pass the training dataset through"):
        _model().fit(_dataset(), epochs=1, steps_per_epoch=2, verbose=0, shuffle=False,
                     callbacks=[InputWait()])


def test_instrument_refuses_a_strategy_scope_and_other_inputs():
    wait = InputWait()
    with pytest.raises(ValueError, match="tf.data.Dataset. Received: ndarray"):
        wait.instrument(np.zeros(3))
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        with pytest.raises(ValueError, match=r"outside strategy.scope\(\)"):
            wait.instrument(_dataset())


def test_under_op_determinism_the_dataset_is_left_alone():
    tf.config.experimental.enable_op_determinism()  # switched back off by the fixture
    ds = tf.data.Dataset.range(3)
    wait = InputWait()
    assert wait.instrument(ds) is ds and not wait.enabled
    logs = {}
    wait.on_epoch_begin(0)
    wait.on_train_batch_end(0)  # no "saw no batch" error
    wait.on_epoch_end(0, logs)
    assert logs == {}
