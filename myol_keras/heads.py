"""MLP projector and predictor heads (BYOL, MYOL; docs/METHODS.md §1.2)."""

import math

import keras

from myol_keras import batchnorm

BN_MOMENTUM = 0.9  # torch momentum 0.1
BN_EPSILON = 1e-5


def torch_linear_kernel_initializer():
    """torch `nn.Linear` default kernel init, U(±1/√fan_in)."""
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )


def torch_linear_bias_initializer(fan_in):
    """torch `nn.Linear` default bias init, U(±1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(minval=-bound, maxval=bound)


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Expected `{name}` to be a positive integer. "
            f"Received: {name}={value!r}"
        )


@keras.saving.register_keras_serializable(package="myol_keras")
class MLPHead(keras.layers.Layer):
    """Dense → BatchNormalization → ReLU → Dense, the BYOL projector/predictor.

    Both Dense layers have a bias; there is no BatchNormalization on the
    output (MYOL `algo.py: MLP`, BYOL). The Dense layers are initialised as
    torch's `nn.Linear`: kernel `VarianceScaling(1/3, "fan_in", "uniform")`
    and bias U(±1/√fan_in); the first layer's bias bound depends on the input
    dimension, so it is set in `build()`. BatchNormalization uses
    `momentum=0.9` (torch 0.1) and `epsilon=1e-5`.

    Reference: Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020.

    Args:
        hidden_dim: units of the hidden layer (2048 in MYOL, 4096 in BYOL).
        output_dim: units of the output (128 in MYOL, 256 in BYOL).
        **kwargs: other `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch, input_dim)` features.
        training: BatchNormalization mode.

    Returns:
        `(batch, output_dim)` in the layer's compute dtype.

    Example:
    ```python
    projector = myol_keras.heads.MLPHead(hidden_dim=2048, output_dim=128)
    z = projector(np.zeros((4, 512), "float32"), training=True)  # (4, 128)
    ```
    """

    def __init__(self, hidden_dim=2048, output_dim=128, **kwargs):
        _check_positive_int(hidden_dim, "hidden_dim")
        _check_positive_int(output_dim, "output_dim")
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim
        self.hidden_dense = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=torch_linear_kernel_initializer(),
            # Replaced in build() once fan_in is known.
            bias_initializer="zeros",
            name="hidden_dense",
            dtype=self.dtype_policy,
        )
        self.hidden_bn = batchnorm.batch_normalization(
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            name="hidden_bn",
            dtype=self.dtype_policy,
        )
        self.hidden_relu = keras.layers.ReLU(
            name="hidden_relu", dtype=self.dtype_policy
        )
        self.output_dense = keras.layers.Dense(
            output_dim,
            kernel_initializer=torch_linear_kernel_initializer(),
            bias_initializer=torch_linear_bias_initializer(hidden_dim),
            name="output_dense",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        fan_in = input_shape[-1]
        if fan_in is None:
            raise ValueError(
                "Expected the last input dimension of `MLPHead` to be known. "
                f"Received: input_shape={input_shape}"
            )
        self.hidden_dense.bias_initializer = torch_linear_bias_initializer(
            fan_in
        )
        self.hidden_dense.build(input_shape)
        hidden_shape = (*input_shape[:-1], self.hidden_dim)
        self.hidden_bn.build(hidden_shape)
        self.output_dense.build(hidden_shape)

    def call(self, inputs, training=None):
        x = self.hidden_dense(inputs)
        x = self.hidden_bn(x, training=training)
        x = self.hidden_relu(x)
        return self.output_dense(x)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"hidden_dim": self.hidden_dim, "output_dim": self.output_dim}
        )
        return config


def projection_head(hidden_dim=2048, output_dim=128, name="projector"):
    """The projector g: `MLPHead` with the MYOL sizes (2048 → 128) by default.

    BYOL's paper sizes are `hidden_dim=4096, output_dim=256`.
    """
    return MLPHead(hidden_dim=hidden_dim, output_dim=output_dim, name=name)


def prediction_head(hidden_dim=2048, output_dim=128, name="predictor"):
    """The predictor q: `MLPHead` with the MYOL sizes (2048 → 128) by default.

    Its input is the projector output; `output_dim` must match it.
    """
    return MLPHead(hidden_dim=hidden_dim, output_dim=output_dim, name=name)
