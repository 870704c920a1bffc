"""The process-wide settings a run touches, and how each is given back.

TensorFlow and Keras keep some state per process rather than per model: the thread pools, op
determinism, the global dtype policy and the global random generators. `pretrain()` changes them for
its run; this module holds the switches and the guards that put them back, so that a script (a
notebook, a sweep, a test session) is left as it was:

* `set_threads` — TensorFlow's intra-/inter-op threads; only before TensorFlow's first op, and the one
  setting a run keeps (TensorFlow 2.21 cannot change it afterwards);
* `op_determinism` — deterministic kernels for one block;
* `process_settings_restored` — the dtype policy and the Python/NumPy random states after one block.

Example:
```python
with process_settings_restored(), op_determinism(True):
    ...  # build, fit, export
```
"""

import contextlib


def set_threads(threads):
    """Use `threads` CPU threads for TensorFlow ops (0: its default). Warns if TF already runs."""
    import warnings

    import tensorflow as tf

    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        warnings.warn("threads ignored: TensorFlow is already initialised in this process", stacklevel=2)


@contextlib.contextmanager
def process_settings_restored():
    """Keras' global dtype policy and the Python/NumPy global random states as they were, after the block.

    A run sets the dtype policy (`precision.set_precision`) and seeds every global generator
    (`keras.utils.set_random_seed`); without this, a script's next model after `pretrain()` would be built in
    the run's precision (e.g. bfloat16) and its NumPy draws would repeat the run's. (Determinism has its own
    guard, `op_determinism`. TensorFlow's thread counts cannot change once its runtime has started — TF 2.21
    raises — so `threads` is applied only before the first op and is the one setting a run keeps.)
    """
    import random

    import keras
    import numpy as np

    policy = keras.config.dtype_policy()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@contextlib.contextmanager
def op_determinism(enabled):
    """TensorFlow's deterministic ops for one run (if `enabled`), then the process' previous state back.

    `tf.config.experimental.enable_op_determinism()` is process-wide and TensorFlow 2.21 exports no way
    back: the query and the switch-off (`is_op_determinism_enabled`, `disable_op_determinism`) live only
    in `tensorflow.python.framework.config`. Without them a `deterministic=True` run would leave every
    later run of the process (a notebook, a sweep, a test session) on the slower deterministic kernels,
    and `callbacks.InputWait`, which needs the clock that determinism refuses, silent.

    Args:
        enabled: switch determinism on for the block (False leaves the process as it is).
    """
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config  # the switch-off is not in tf.config

    was_enabled = tf_config.is_op_determinism_enabled()
    if enabled and not was_enabled:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not was_enabled:
            tf_config.disable_op_determinism()
