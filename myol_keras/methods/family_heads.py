"""Projection heads of the contrastive baselines (docs/METHODS.md §2.6, §2.8, §2.9).

The BYOL-family `MLPHead` (Dense-BN-ReLU-Dense) lives in `myol_keras.heads`;
the SimCLR/MoCo heads of the MYOL reference have no BatchNorm
(`Linear-ReLU-Linear`), and representation mixing uses
`Linear-BN-LeakyReLU-Linear`.
"""

import keras

from myol_keras import batchnorm
from myol_keras import heads as heads_lib


@keras.saving.register_keras_serializable(package="myol_keras")
class ContrastiveHead(keras.layers.Layer):
    """Dense → [BatchNormalization] → ReLU/LeakyReLU → Dense, torch-initialised.

    Args:
        hidden_dim: hidden units.
        output_dim: output units.
        batch_norm: BatchNormalization after the hidden Dense (momentum 0.9,
            eps 1e-5, as torch's BatchNorm1d).
        negative_slope: 0 for ReLU; 0.01 is torch's LeakyReLU default (RM).
    """

    def __init__(self, hidden_dim=2048, output_dim=128, batch_norm=False, negative_slope=0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self.batch_norm = bool(batch_norm)
        self.negative_slope = float(negative_slope)
        self.hidden_dense = keras.layers.Dense(
            self.hidden_dim, kernel_initializer=heads_lib.torch_linear_kernel_initializer(),
            name="hidden_dense", dtype=self.dtype_policy,
        )
        self.hidden_bn = (
            batchnorm.batch_normalization(
                momentum=heads_lib.BN_MOMENTUM, epsilon=heads_lib.BN_EPSILON, name="hidden_bn",
                dtype=self.dtype_policy,
            )
            if self.batch_norm
            else None
        )
        self.output_dense = keras.layers.Dense(
            self.output_dim, kernel_initializer=heads_lib.torch_linear_kernel_initializer(),
            bias_initializer=heads_lib.torch_linear_bias_initializer(self.hidden_dim),
            name="output_dense", dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        self.hidden_dense.bias_initializer = heads_lib.torch_linear_bias_initializer(input_shape[-1])
        self.hidden_dense.build(input_shape)
        hidden_shape = (*input_shape[:-1], self.hidden_dim)
        if self.hidden_bn is not None:
            self.hidden_bn.build(hidden_shape)
        self.output_dense.build(hidden_shape)

    def call(self, inputs, training=None):
        x = self.hidden_dense(inputs)
        if self.hidden_bn is not None:
            x = self.hidden_bn(x, training=training)
        x = keras.ops.leaky_relu(x, self.negative_slope) if self.negative_slope else keras.ops.relu(x)
        return self.output_dense(x)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "hidden_dim": self.hidden_dim, "output_dim": self.output_dim,
            "batch_norm": self.batch_norm, "negative_slope": self.negative_slope,
        })
        return config
