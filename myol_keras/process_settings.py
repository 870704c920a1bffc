"""The process-wide settings a run touches, and how each is given back.

TensorFlow and Keras keep some state per process rather than per model: the thread pools, op
determinism, the global dtype policy and the global random generators. `pretrain()` changes them for
its run; this module holds the switches and the guards that put them back, so that a script (a
notebook, a sweep, a test session) is left as it was:

* `set_threads` — TensorFlow's intra-/inter-op threads; only before TensorFlow's first op, and the one
  setting a run keeps (TensorFlow 2.21 cannot change it afterwards);
* `op_determinism` — deterministic kernels for one block;
* `onednn_kernels_off` / `onednn_enabled` — oneDNN's CPU kernels, which `op_determinism` does not make
  deterministic: only an entry point can turn them off, before TensorFlow is imported;
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


ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def onednn_kernels_off():
    """Turn TensorFlow's oneDNN CPU kernels off for this process; True if they are off afterwards.

    TensorFlow decides at import whether to use oneDNN, so this works only before
    `import tensorflow` (afterwards it changes nothing and returns whether they are
    off anyway). Why a deterministic run needs it: on an x86 CPU (measured on an
    Intel Xeon with AMX, TensorFlow 2.21) a BYOL step at protocol Q1's size gives
    different weights from run to run with oneDNN on, op determinism or not (the
    last bits of the first update, then 1e-3 of the loss within two epochs); with
    oneDNN off two runs agree bit for bit, at 1.8x the step time there. oneDNN
    itself promises repeatable results in one environment (uxlfoundation/oneDNN#1443);
    we found no TensorFlow issue for this, so it is a setting, not a patch: to drop
    it, delete this function and its two callers.
    """
    import os
    import sys

    if "tensorflow" not in sys.modules:
        os.environ[ONEDNN_ENV] = "0"
        return True
    return not onednn_enabled()


def onednn_enabled():
    """Whether this process' TensorFlow runs oneDNN's CPU kernels (decided when it was imported)."""
    from tensorflow.python.util import _pywrap_util_port  # the public API does not say

    return bool(_pywrap_util_port.IsMklEnabled())


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
    if enabled and onednn_enabled():
        import warnings

        warnings.warn(f"deterministic=True, but TensorFlow was imported with oneDNN's CPU kernels on, which are not "
                      f"deterministic: set {ONEDNN_ENV}=0 before importing TensorFlow (the command line does) for a "
                      "run that repeats bit for bit", stacklevel=3)
    if enabled and not was_enabled:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not was_enabled:
            tf_config.disable_op_determinism()
