"""BatchNormalization on TensorFlow's fused kernel, with torch's running statistics.

Keras 3's `BatchNormalization` computes the batch moments and the
normalisation as separate element-wise ops (`ops.moments`, then
`ops.batch_normalization`), and so does its gradient. On a CPU these are many
passes over every activation of a ResNet; TensorFlow's fused kernel
(`FusedBatchNormV3` and its gradient, rewritten to oneDNN on x86) does each
direction in one. `myol_keras.batchnorm.BatchNormalization` keeps Keras'
layer — the same variables, names, arguments and `trainable` semantics — and
only swaps the arithmetic where the fused kernel applies:

* 4-D channels-last inputs (`axis=-1`) and 2-D inputs (reshaped to
  `(batch, 1, 1, channels)`), without a mask, not `synchronized`, no renorm;
  everything else goes through Keras' own `call`.
* Training mode normalises with the biased batch variance and updates the
  moving variance with the *unbiased* one, `running = m·running + (1−m)·var·n/(n−1)`
  — what torch's `BatchNorm2d` does (Keras' own layer uses the biased
  variance there). The two differ by the factor n/(n−1): 1.00008 for a
  batch of 128 at 32×32, so this is a correction towards the reference, not
  a change of method.
* Weight files stay interchangeable with Keras' layer: Keras addresses a
  layer in `.weights.h5` / `.keras` files by its snake-cased *class name*
  (`batch_normalization_3`), which is why this class keeps Keras' name (a
  differently named class could not load checkpoints written before it).
* Mixed precision: the kernel takes float16/bfloat16 activations with float32
  statistics, so nothing is upcast to a float32 copy of the activations.
* **Stacked views** (`view_groups(k)`): inside the block, a training-mode call
  treats its batch as k equal views stacked along the batch axis and
  normalises each view with its own batch moments, updating the moving
  statistics exactly as k sequential calls would (view 1's statistics first,
  then view 2's on top, ...). A network can then run all the views of a step
  in one forward pass with the per-view BatchNorm the reference has
  (docs/METHODS.md §1.4, docs/DECISIONS.md §4.2). The fused path splits the batch (an alias,
  no copy), runs the kernel once per view with the previous view's running
  statistics as its input — the same arithmetic as k calls — and
  concatenates the outputs.
* **The factory** (`batch_normalization(**kwargs)`): what the backbones and
  heads call. It builds this layer, synchronised across replicas
  (`synchronized=True`: statistics over the global batch, Keras' own path)
  inside an `options(synchronized=True)` block — `--sync_batchnorm`, which
  `training` opens around model construction.

Example:
```python
bn = myol_keras.batchnorm.BatchNormalization(momentum=0.9, epsilon=1e-5)
y = bn(np.random.rand(8, 4, 4, 16).astype("float32"), training=True)
with myol_keras.batchnorm.view_groups(2):  # rows 0-3 and 4-7: two views
    y = bn(np.random.rand(8, 4, 4, 16).astype("float32"), training=True)
with myol_keras.batchnorm.options(synchronized=True):
    synced = myol_keras.batchnorm.batch_normalization(momentum=0.9)
```
"""

import contextlib

import keras
import tensorflow as tf

from myol_keras.scoped import ScopedSetting

_FUSED_DTYPES = ("float32", "float16", "bfloat16")
_VIEW_GROUPS = ScopedSetting(default=1)
_SYNCHRONIZED = ScopedSetting(default=False)


@contextlib.contextmanager
def options(synchronized=False):
    """Within the block, `batch_normalization()` builds layers with these options.

    Per thread, like every scoped setting: open it where the model is built.

    Args:
        synchronized: statistics over the global batch of all replicas
            (`keras.layers.BatchNormalization(synchronized=True)`, TF backend).

    Example:
    ```python
    with strategy.scope(), myol_keras.batchnorm.options(synchronized=True):
        backbone = myol_keras.ResNet(18, width=16)
    ```
    """
    with _SYNCHRONIZED.set(bool(synchronized)):
        yield


def batch_normalization(**kwargs):
    """The library's BatchNormalization layer, synchronised inside `options(synchronized=True)`.

    `BatchNormalization` below (Keras' layer on TF's fused kernel, torch's
    running variance); a synchronised layer takes Keras' own path.

    Args:
        **kwargs: arguments of `keras.layers.BatchNormalization`.
    """
    if _SYNCHRONIZED.value:
        kwargs.setdefault("synchronized", True)
    return BatchNormalization(**kwargs)


@contextlib.contextmanager
def view_groups(num_views):
    """Within the block, training-mode BatchNorm calls normalise `num_views` stacked views apart.

    Every `myol_keras.batchnorm.BatchNormalization` called in training mode
    inside the block splits its batch into `num_views` equal parts along
    axis 0 (view 1 = the first rows) and computes each part's moments on
    their own; the moving statistics move once per view, in view order, as
    if each view had been its own call. Inference-mode calls (moving
    statistics) are unaffected. The batch must divide by `num_views`.
    It is read when a layer is called (in a `tf.function`, when it is
    traced), so wrap the forward pass itself.

    Args:
        num_views: how many views the batch stacks (1: an ordinary call).

    Example:
    ```python
    with view_groups(2):
        z = network(tf.concat([view1, view2], axis=0), training=True)
    z1, z2 = tf.split(z, 2)  # as network(view1), network(view2) one after the other
    ```
    """
    if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 1:
        raise ValueError(f"Expected `num_views` to be a positive integer. Received: num_views={num_views!r}")
    with _VIEW_GROUPS.set(num_views):
        yield


def current_view_groups():
    """The `num_views` of the innermost `view_groups` block (1 outside any)."""
    return _VIEW_GROUPS.value


@keras.saving.register_keras_serializable(package="myol_keras")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed with TensorFlow's fused kernel.

    Registered as `myol_keras>BatchNormalization`, so configs name it apart
    from Keras' own layer, while weight files address both the same way.

    Args:
        **kwargs: every argument of `keras.layers.BatchNormalization`
            (`axis`, `momentum`, `epsilon`, `center`, `scale`, initialisers,
            `synchronized`, ...). The fused path needs `axis=-1` (or the last
            axis), 2-D or 4-D inputs, no mask, no renorm and
            `synchronized=False`; otherwise the layer behaves exactly as
            Keras' own.

    Example:
    ```python
    bn = BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn1")
    x = keras.Input((32, 32, 16))
    y = bn(x)
    ```
    """

    def _fused_applies(self, inputs, mask):
        if mask is not None or self.renorm or getattr(self, "synchronized", False):
            return False
        if keras.backend.backend() != "tensorflow":
            return False
        rank = len(inputs.shape)
        if rank not in (2, 4) or self.axis not in (-1, rank - 1):
            return False
        return keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES

    def call(self, inputs, training=None, mask=None):
        groups = current_view_groups()
        if groups > 1 and training and self.trainable:
            return self._call_per_view(inputs, groups, mask)
        if not self._fused_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        return self._fused_call(inputs, bool(training and self.trainable))

    def _call_per_view(self, inputs, groups, mask):
        """Training mode on `groups` stacked views: each view's own moments, sequential running statistics."""
        views = tf.split(inputs, groups, axis=0)
        if not self._fused_applies(inputs, mask):
            # Keras' own arithmetic once per view; each call assigns the moving
            # statistics and the next reads them (ordered on the variable).
            masks = tf.split(mask, groups, axis=0) if mask is not None else [None] * groups
            return tf.concat(
                [super(BatchNormalization, self).call(v, training=True, mask=m) for v, m in zip(views, masks)],
                axis=0,
            )
        mean = variance = None
        outputs = []
        for view in views:
            y, mean, variance = self._fused_call(view, True, mean, variance, assign=False)
            outputs.append(y)
        self.moving_mean.assign(tf.cast(mean, self.moving_mean.dtype))
        self.moving_variance.assign(tf.cast(variance, self.moving_variance.dtype))
        return tf.concat(outputs, axis=0)

    def _fused_call(self, inputs, is_training, moving_mean=None, moving_variance=None, assign=True):
        """FusedBatchNormV3 on `inputs`; with `assign=False`, `(y, new_mean, new_variance)`."""
        compute_dtype = keras.backend.standardize_dtype(self.compute_dtype)
        x = tf.convert_to_tensor(inputs)
        if keras.backend.standardize_dtype(x.dtype) != compute_dtype:
            x = tf.cast(x, compute_dtype)
        flat = len(x.shape) == 2
        if flat:
            x = x[:, tf.newaxis, tf.newaxis, :]
        channels = x.shape[-1]
        gamma = (
            tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
        )
        beta = (
            tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
        )
        if moving_mean is None:
            moving_mean = tf.cast(self.moving_mean, tf.float32)
            moving_variance = tf.cast(self.moving_variance, tf.float32)
        # FusedBatchNormV3 directly: tf.nn.fused_batch_norm would raise
        # epsilon to 1.001e-5. With exponential_avg_factor f in training, the
        # kernel returns (1-f)*old + f*batch statistics, the batch variance
        # Bessel-corrected, as torch's running_var.
        y, new_mean, new_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=gamma,
            offset=beta,
            mean=moving_mean,
            variance=moving_variance,
            epsilon=float(self.epsilon),
            exponential_avg_factor=float(1.0 - self.momentum) if is_training else 1.0,
            data_format="NHWC",
            is_training=is_training,
        )
        if flat:
            y = y[:, 0, 0, :]
        if not assign:
            return y, new_mean, new_variance
        if is_training:
            self.moving_mean.assign(tf.cast(new_mean, self.moving_mean.dtype))
            self.moving_variance.assign(tf.cast(new_variance, self.moving_variance.dtype))
        return y
