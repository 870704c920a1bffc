"""A setting that a `with` block changes for its duration: per thread, or for the whole process.

The library's trace-time switches are read by layers when a `tf.function` is
traced. Two kinds:

* per thread (the default): switches a training step opens around its own
  forward passes — `batchnorm.view_groups` (stacked views with per-view
  BatchNorm), `GRADIENT_PASS` below. Per thread, because a `tf.distribute`
  strategy traces each replica's step in its own thread: one replica's block
  must not leak into another's trace.
* process-wide (`per_thread=False`): performance levers an entry point sets
  around `fit`, each declared beside the layer whose fast path it switches.
  The replica threads a strategy traces in must see them, and they are never
  model or config arguments (docs/DECISIONS.md §3: a saved model carries no speed
  switch).

Example:
```python
_GROUPS = ScopedSetting(default=1)

with _GROUPS.set(2):
    assert _GROUPS.value == 2
assert _GROUPS.value == 1
```
"""

import contextlib
import threading
import types


class ScopedSetting:
    """A value, `default` outside any `set` block; per thread unless `per_thread=False`.

    Args:
        default: the value outside every `set` block.
        per_thread: True: each thread sees only its own blocks. False: a block
            is seen by every thread of the process while it is open (for
            levers set around `fit`; two threads must not open blocks of the
            same process-wide setting at once).

    Example:
    ```python
    lever = ScopedSetting(default="auto", per_thread=False)
    with lever.set(0):
        model.fit(dataset)  # read by every replica thread when the step is traced
    ```
    """

    def __init__(self, default, per_thread=True):
        self._default = default
        self._state = threading.local() if per_thread else types.SimpleNamespace()

    @property
    def value(self):
        """The value of the innermost open `set` block (of this thread if per thread); `default` outside any."""
        return getattr(self._state, "value", self._default)

    @contextlib.contextmanager
    def set(self, value):
        """Within the block, `value`; the previous value again afterwards (nested blocks restore in order)."""
        previous = self.value
        self._state.value = value
        try:
            yield
        finally:
            self._state.value = previous


#: True inside the gradient pass of a training step: the forward passes whose gradient the optimizer
#: takes (`BootstrapMethod.train_step` opens it around its `GradientTape`). Layers with a training-only
#: fast path read it, so the step itself names no such path. Per thread: each replica's.
GRADIENT_PASS = ScopedSetting(default=False)
