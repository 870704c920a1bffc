"""A per-thread setting that a `with` block changes for its duration.

The library's trace-time switches — `batchnorm.view_groups` (stacked views
with per-view BatchNorm) and `conv.gemm_weight_gradients` (the GEMM weight
gradient) — are read by layers when a `tf.function` is traced, inside the
block a training step opens around its forward passes. Per thread, because
a `tf.distribute` strategy traces each replica's step in its own thread.

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


class ScopedSetting:
    """A value, `default` outside any `set` block, per thread.

    Args:
        default: the value outside every `set` block.
    """

    def __init__(self, default):
        self._default = default
        self._local = threading.local()

    @property
    def value(self):
        """The value of the innermost `set` block of this thread (`default` outside any)."""
        return getattr(self._local, "value", self._default)

    @contextlib.contextmanager
    def set(self, value):
        """Within the block, `value`; the previous value again afterwards (nested blocks restore in order)."""
        previous = self.value
        self._local.value = value
        try:
            yield
        finally:
            self._local.value = previous
