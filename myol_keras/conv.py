"""Conv2D whose weight gradient, for small bf16 convolutions on a CPU, is one GEMM.

Workaround for a slow kernel choice upstream: in TensorFlow 2.21's bundled
oneDNN, the bf16 weight gradient of a 3×3 convolution (`Conv2DBackpropFilter`,
run as oneDNN's `jit_bf16:avx512_core_bf16` backward-weights kernel) is the
slowest part of our train step on an avx512_bf16 CPU without AMX, and slowest
of all where the feature maps are small: at 32 px ResNet-18's last two
stages (8×8 and 4×4) run it at 0.13–0.46 TFLOP/s, against 0.50–0.90 for the
same layers' forward pass and 0.37–0.70 for torch's oneDNN 3.12 on the same
shapes (`benchmarks/kernel_ceiling.py`, docs/PERFORMANCE.md). For a stride-1 "same"
convolution the weight gradient is a single matrix product,

    dW[i, j, c, o] = Σ_{n, y, x} x_pad[n, y + i, x + j, c] · dy[n, y, x, o],

i.e. `patches(x)ᵀ @ dy` with `patches` the k·k shifted copies of the padded
input side by side on the channel axis (k·k·C_in columns, N·H·W rows): at
4×4 × 512 channels that is 9 MB of copies and a GEMM oneDNN runs twice as
fast as the convolution kernel.

`Conv2D` is `keras.layers.Conv2D` with that gradient, used only where it
pays and only where a gradient is taken: in the gradient pass of a training
step (`scoped.GRADIENT_PASS`, which `BootstrapMethod.train_step` opens around
its `GradientTape`), on the TensorFlow backend, for stride-1, dilation-1,
ungrouped, channels-last "same" convolutions with an odd square kernel whose
static input side is at most the lever's side. Everywhere else — inference,
export, the target network, fine-tuning, other backends — it is Keras' layer
unchanged. The forward pass is the same `tf.nn.conv2d` and the input gradient
the same `Conv2DBackpropInput`, so only the weight gradient's summation order
differs.

The lever is a process-wide scoped setting, `gemm_weight_gradient_side`,
never a model or config argument: "auto" (outside any block) is
`DEFAULT_MAX_SIDE` for bf16 on a CPU-only machine and 0 elsewhere; an entry
point that wants another side opens the block around `fit` (the
`--gemm_weight_gradient_side` flag of `benchmarks/throughput.py`). It is read
when the training step is traced (the first `fit`).

To delete the workaround (when TensorFlow's oneDNN picks a fast bf16
backward-weights kernel): delete this file and, in `backbones.py`, import
`Conv2D` from `keras.layers` instead of `myol_keras.conv` — one line. Nothing
else in the library names it: the training step marks its gradient pass
generically, and the class keeps Keras' name, so weight files written with it
load into `keras.layers.Conv2D` (as `batchnorm.BatchNormalization` does).
Then drop its tests (`tests/test_conv.py`, the GEMM cases of
`tests/test_fast_paths.py`) and the benchmark flag that sets the lever.

Example:
```python
conv = myol_keras.conv.Conv2D(64, 3, padding="same", use_bias=False)
with myol_keras.conv.gemm_weight_gradient_side(8), myol_keras.scoped.GRADIENT_PASS.set(True):
    with tf.GradientTape() as tape:
        y = conv(tf.random.normal((8, 4, 4, 32)))
    kernel_gradient = tape.gradient(y, conv.kernel)
```
"""

import contextlib
import functools

import keras

from myol_keras.scoped import GRADIENT_PASS
from myol_keras.scoped import ScopedSetting

#: `auto_max_side`'s choice on a CPU in bf16: ResNet's last two stages at
#: 32 px (8×8 and 4×4). Measured in issue 17, side by side in one run
#: (`compare.py --ours_variant`): against TensorFlow's kernel everywhere, the
#: BYOL step +8 % (4 paired repetitions 1.06–1.08×) and MYOL +11 % at 8;
#: at 4 (the last stage only) BYOL gained 2–5 % in separate processes.
DEFAULT_MAX_SIDE = 8

_SIDE = ScopedSetting(default="auto", per_thread=False)


def check_side_setting(setting):
    """Raise `ValueError` unless `setting` is "auto" or an integer ≥ 0 (a `gemm_weight_gradient_side`)."""
    if setting != "auto" and (not isinstance(setting, int) or isinstance(setting, bool) or setting < 0):
        raise ValueError(
            f'Expected `gemm_weight_gradient_side` to be "auto" or an integer >= 0. Received: {setting!r}'
        )


@contextlib.contextmanager
def gemm_weight_gradient_side(setting):
    """Within the block, training steps traced take the GEMM weight gradient up to input side `setting`.

    Process-wide (every replica thread of a strategy sees it), read when a
    training step is traced; outside any block the setting is "auto".

    Args:
        setting: "auto" (`auto_max_side`: 8 for bf16 on a CPU-only machine,
            else 0) or the largest static input height and width (pixels)
            of the convolutions that take it; 0 turns the path off.

    Example:
    ```python
    with myol_keras.conv.gemm_weight_gradient_side(0):  # TensorFlow's kernel everywhere
        model.fit(dataset, epochs=10)
    ```
    """
    check_side_setting(setting)  # refused here, not when the step is traced
    with _SIDE.set(setting):
        yield


def current_side_setting():
    """The `setting` of the open `gemm_weight_gradient_side` block ("auto" outside any)."""
    return _SIDE.value


def auto_max_side(compute_dtype, has_gpu):
    """`DEFAULT_MAX_SIDE` for bf16 compute on a CPU-only machine, else 0.

    The workaround targets oneDNN's CPU kernel; cuDNN and XLA on an
    accelerator have their own weight-gradient kernels, and in float32 the
    oneDNN kernel is fast (0.37 TFLOP/s against 0.44 forward).
    """
    return DEFAULT_MAX_SIDE if keras.backend.standardize_dtype(compute_dtype) == "bfloat16" and not has_gpu else 0


@functools.cache
def _has_gpu():
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def resolve_max_side(setting, compute_dtype):
    """The side a `gemm_weight_gradient_side` setting means for `compute_dtype`: "auto" or an integer ≥ 0."""
    check_side_setting(setting)
    return auto_max_side(compute_dtype, _has_gpu()) if setting == "auto" else setting


def current_max_side(compute_dtype):
    """The largest input side taking the GEMM weight gradient here: 0 outside a gradient pass."""
    if not GRADIENT_PASS.value:
        return 0
    return resolve_max_side(_SIDE.value, compute_dtype)


def patches_weight_gradient(x, dy, kernel_size):
    """Weight gradient of a stride-1 "same" convolution as `patches(x)ᵀ @ dy`.

    Args:
        x: input, `(N, H, W, C_in)`.
        dy: gradient of the output, `(N, H, W, C_out)`.
        kernel_size: odd kernel side k.

    Returns:
        The kernel's gradient, `(k, k, C_in, C_out)`, in `x`'s dtype.
    """
    import tensorflow as tf

    k, pad = kernel_size, kernel_size // 2
    height, width, c_in = x.shape[1], x.shape[2], x.shape[3]
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    # Column block (i, j) holds the input shifted by (i, j): the (i, j, c) order of the kernel's axes.
    patches = tf.concat(
        [padded[:, i:i + height, j:j + width, :] for i in range(k) for j in range(k)], axis=-1
    )
    c_out = dy.shape[-1]
    gradient = tf.matmul(tf.reshape(patches, [-1, k * k * c_in]), tf.reshape(dy, [-1, c_out]), transpose_a=True)
    return tf.reshape(gradient, [k, k, c_in, c_out])


def conv2d_gemm_weight_gradient(x, kernel):
    """`tf.nn.conv2d(x, kernel, 1, "SAME")` whose kernel gradient is `patches_weight_gradient`.

    Args:
        x: input tensor `(N, H, W, C_in)` with static H, W and C_in.
        kernel: `(k, k, C_in, C_out)` tensor, k odd.

    Returns:
        The convolution's output `(N, H, W, C_out)`.
    """
    import tensorflow as tf

    kernel_size = kernel.shape[0]

    @tf.custom_gradient
    def convolution(inputs, weights):
        def gradient(dy):
            input_gradient = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(inputs), filter=weights, out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME"
            )
            return input_gradient, patches_weight_gradient(inputs, dy, kernel_size)

        return tf.nn.conv2d(inputs, weights, strides=1, padding="SAME"), gradient

    return convolution(x, tf.convert_to_tensor(kernel))


@keras.saving.register_keras_serializable(package="myol_keras")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a GEMM weight gradient in a training step's gradient pass.

    Registered as `myol_keras>Conv2D`; weight files address it as Keras' own
    layer (same class name, variables and arguments).

    Args:
        **kwargs: every argument of `keras.layers.Conv2D`.

    Example:
    ```python
    conv = Conv2D(64, 3, padding="same", use_bias=False, name="conv")
    y = conv(keras.Input((4, 4, 32)))
    ```
    """

    def _gemm_applies(self, inputs):
        max_side = current_max_side(self.compute_dtype)
        if not max_side or keras.backend.backend() != "tensorflow":
            return False
        k = self.kernel_size
        if (k[0] != k[1] or k[0] % 2 == 0 or tuple(self.strides) != (1, 1) or tuple(self.dilation_rate) != (1, 1)
                or self.padding != "same" or self.groups != 1 or self.data_format != "channels_last"):
            return False
        shape = tuple(inputs.shape)
        if len(shape) != 4 or any(side is None for side in shape[1:]):
            return False
        return max(shape[1], shape[2]) <= max_side

    def convolution_op(self, inputs, kernel):
        if self._gemm_applies(inputs):
            return conv2d_gemm_weight_gradient(inputs, kernel)
        return super().convolution_op(inputs, kernel)
