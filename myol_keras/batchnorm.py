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

Example:
```python
bn = myol_keras.batchnorm.BatchNormalization(momentum=0.9, epsilon=1e-5)
y = bn(np.random.rand(8, 4, 4, 16).astype("float32"), training=True)
```
"""

import keras
import tensorflow as tf

_FUSED_DTYPES = ("float32", "float16", "bfloat16")


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
        if not self._fused_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
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
        moving_mean = tf.cast(self.moving_mean, tf.float32)
        moving_variance = tf.cast(self.moving_variance, tf.float32)
        is_training = bool(training and self.trainable)
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
        if is_training:
            self.moving_mean.assign(tf.cast(new_mean, self.moving_mean.dtype))
            self.moving_variance.assign(tf.cast(new_variance, self.moving_variance.dtype))
        if flat:
            y = y[:, 0, 0, :]
        return y
