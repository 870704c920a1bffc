"""ResNet-18/34/50 (v1.5) backbones for small images.

The networks follow torchvision's ResNet (v1.5: the stride of a bottleneck block
sits on its 3×3 conv), with the stem the MYOL reference uses (docs/METHODS.md §1.1): a
3×3 stride-1 conv, then either no max-pool (CIFAR, 32 px) or the torch max-pool
(STL-10 and Tiny-ImageNet at 64 px). The classifier is removed: the output is
the global-average-pooled feature vector.

Layer names follow torchvision's module names (`conv1`, `bn1`,
`layer2_block0_conv2`, `layer2_block0_downsample_bn`, ...) so weights can be
ported by name.
"""

import keras

from myol_keras import batchnorm
from myol_keras.conv import Conv2D

BLOCK_TYPES = {18: "basic", 34: "basic", 50: "bottleneck"}
STACK_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
STEMS = ("cifar", "64px")
BOTTLENECK_EXPANSION = 4

# Smallest input side at which the last stage still has a 2×2 feature map.
# Every stride-2 layer (3×3 conv or the stem's 3×3 max-pool, padding 1) maps
# a side m to ceil(m / 2); the "cifar" stem halves 3 times, "64px" 4 times.
# With a 1×1 last stage and batch size 1, the last BatchNormalization layers see
# one value per channel in training mode and output β. Smaller inputs still run.
MINIMUM_IMAGE_SIZE = {"cifar": 9, "64px": 17}

BN_MOMENTUM = 0.9  # torch momentum 0.1
BN_EPSILON = 1e-5


def minimum_image_size(stem):
    """Return the smallest input side for which the last stage is ≥ 2×2.

    Args:
        stem: `"cifar"` or `"64px"`.

    Returns:
        An `int`: 9 for `"cifar"` (9 → 9, 5, 3, 2) and 17 for `"64px"`
        (17 → 9 after the max-pool → 9, 5, 3, 2).
    """
    _check_stem(stem)
    return MINIMUM_IMAGE_SIZE[stem]


def _check_stem(stem):
    if stem not in STEMS:
        raise ValueError(
            f"Expected `stem` to be one of {STEMS}. Received: stem={stem!r}"
        )


def _he_fan_out():
    # torch `kaiming_normal_(mode="fan_out", nonlinearity="relu")`. A fresh
    # instance per layer: an unseeded Keras initializer repeats its values.
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def _torch_default_conv():
    # torch's default Conv2d init, U(±1/sqrt(fan_in)).
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )


def _conv(filters, kernel_size, stride, name, dtype, initializer=None):
    """Bias-free conv; stride-2 3×3 convs pad explicitly by 1 as torch does."""
    padding = "same" if stride == 1 else "valid"
    return Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=initializer or _he_fan_out(),
        name=name,
        dtype=dtype,
    )


def _batch_norm(name, dtype):
    return batchnorm.batch_normalization(
        axis=-1,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        name=name,
        dtype=dtype,
    )


def _strided_conv3x3(x, filters, stride, name, dtype):
    if stride > 1:
        # Keras "same" pads (0, 1) for a stride-2 conv on an even side; torch
        # pads (1, 1). Pad explicitly so the sampling grid matches torch.
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad", dtype=dtype)(x)
    return _conv(filters, 3, stride, name, dtype)(x)


def _shortcut(x, filters, stride, name, dtype):
    if stride == 1 and x.shape[-1] == filters:
        return x
    x = _conv(filters, 1, stride, f"{name}_downsample_conv", dtype)(x)
    return _batch_norm(f"{name}_downsample_bn", dtype)(x)


def apply_basic_block(x, filters, stride=1, name=None, dtype=None):
    """Two 3×3 convs (stride on the first), BN after each, identity shortcut.

    Args:
        x: input tensor, channels last.
        filters: output channels.
        stride: stride of the first 3×3 conv (and of the projection shortcut).
        name: prefix of the layer names.
        dtype: dtype policy forwarded to every layer.

    Returns:
        The block's output tensor.
    """
    shortcut = _shortcut(x, filters, stride, name, dtype)
    x = _bn_relu(_strided_conv3x3(x, filters, stride, f"{name}_conv1", dtype), name, 1, dtype)
    x = _conv(filters, 3, 1, f"{name}_conv2", dtype)(x)
    return _bn_add_relu(x, shortcut, name, 2, dtype)


def apply_bottleneck_block(x, filters, stride=1, name=None, dtype=None):
    """1×1 → 3×3 (stride here: v1.5) → 1×1 ×4 expansion, BN after each conv.

    Args:
        x: input tensor, channels last.
        filters: channels of the inner convs; the block outputs `4 * filters`.
        stride: stride of the 3×3 conv (and of the projection shortcut).
        name: prefix of the layer names.
        dtype: dtype policy forwarded to every layer.

    Returns:
        The block's output tensor.
    """
    out_filters = filters * BOTTLENECK_EXPANSION
    shortcut = _shortcut(x, out_filters, stride, name, dtype)
    x = _bn_relu(_conv(filters, 1, 1, f"{name}_conv1", dtype)(x), name, 1, dtype)
    x = _bn_relu(_strided_conv3x3(x, filters, stride, f"{name}_conv2", dtype), name, 2, dtype)
    x = _conv(out_filters, 1, 1, f"{name}_conv3", dtype)(x)
    return _bn_add_relu(x, shortcut, name, 3, dtype)


def _bn_relu(x, name, index, dtype):
    """BatchNorm `<name>_bn<index>` then ReLU `<name>_relu<index>`."""
    x = _batch_norm(f"{name}_bn{index}", dtype)(x)
    return keras.layers.ReLU(name=f"{name}_relu{index}", dtype=dtype)(x)


def _bn_add_relu(x, shortcut, name, index, dtype):
    """A block's end: BatchNorm `<name>_bn<index>`, the shortcut added, ReLU `<name>_out`."""
    x = _batch_norm(f"{name}_bn{index}", dtype)(x)
    x = keras.layers.Add(name=f"{name}_add", dtype=dtype)([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out", dtype=dtype)(x)


def apply_stack(x, filters, blocks, stride, block_type, name=None, dtype=None):
    """A stage: `blocks` residual blocks, the first one with `stride`.

    Args:
        x: input tensor, channels last.
        filters: `filters` argument of each block.
        blocks: number of blocks.
        stride: stride of the first block.
        block_type: `"basic"` or `"bottleneck"`.
        name: prefix of the layer names (`"layer1"` ... `"layer4"`).
        dtype: dtype policy forwarded to every layer.

    Returns:
        The stage's output tensor.
    """
    if block_type == "basic":
        block_fn = apply_basic_block
    elif block_type == "bottleneck":
        block_fn = apply_bottleneck_block
    else:
        raise ValueError(
            "Expected `block_type` to be one of ('basic', 'bottleneck'). "
            f"Received: block_type={block_type!r}"
        )
    for i in range(blocks):
        x = block_fn(
            x,
            filters,
            stride=stride if i == 0 else 1,
            name=f"{name}_block{i}",
            dtype=dtype,
        )
    return x


@keras.saving.register_keras_serializable(package="myol_keras")
class ResNet(keras.Model):
    """ResNet v1.5 backbone with a small-image stem, without classifier.

    torchvision's ResNet ("v1.5": the stride of a bottleneck block is on its
    3×3 conv, that of a basic block on its first 3×3 conv; convs have no bias;
    the shortcut is a 1×1 conv with the block's stride plus BatchNormalization
    when the shape changes; the last BN of a block is not zero-initialised).
    The 7×7 stride-2 stem is replaced, as in the MYOL reference (`model.py`),
    by a 3×3 stride-1 conv + BN + ReLU; the `"64px"` stem then keeps torch's
    3×3 stride-2 max-pool (padding 1). The output is the global average of the
    last stage.

    Initialisers follow torch: every conv draws from
    `VarianceScaling(2.0, "fan_out", "untruncated_normal")` (kaiming normal,
    fan out), except the stem conv, which keeps torch's default
    U(±1/√fan_in) = `VarianceScaling(1/3, "fan_in", "uniform")` (bound 0.19245
    for 3 input channels). BatchNormalization uses `momentum=0.9` (torch 0.1)
    and `epsilon=1e-5`, γ = 1 and β = 0.

    Minimum image size: the input side must be at least
    `minimum_image_size(stem)` (9 for `"cifar"`, 17 for `"64px"`) for the last
    stage to be at least 2×2. Each stride-2 layer maps a side m to ceil(m/2):
    the `"cifar"` stem halves 3 times (32 → 32, 16, 8, 4), the `"64px"` stem 4
    times (64 → 32 after the max-pool → 32, 16, 8, 4). Smaller inputs run, but
    the last stage is then 1×1 and its BatchNormalization layers see a single
    value per channel when the batch has one image. The spatial size is
    dynamic, so this is documented rather than checked.

    References:
        - He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
        - torchvision `models/resnet.py` (ResNet v1.5).
        - MYOL (Yang et al., ECAI 2024), `model.py`: the 3×3 stem, max-pool
          removed for CIFAR only.

    Args:
        depth: 18, 34 (basic blocks) or 50 (bottleneck blocks).
        stem: `"cifar"` (3×3 stride-1 conv, no max-pool; CIFAR-10/100) or
            `"64px"` (the same conv, then a 3×3 stride-2 max-pool; STL-10 and
            Tiny-ImageNet at 64 px).
        width: channels of the first stage; the stages have
            `width * (1, 2, 4, 8)` channels (×4 at the output of a bottleneck
            block). 64 gives the standard networks; 8 or 16 tiny test models.
        dtype: optional dtype policy for every layer; by default the global
            policy (`mixed_float16` and `mixed_bfloat16` work).
        name: model name.
        **kwargs: other `keras.Model` arguments (`trainable`).

    Call arguments:
        inputs: normalised float images `(batch, height, width, 3)`, any
            spatial size at least the minimum.
        training: BatchNormalization mode.

    Returns:
        Features `(batch, feature_dim)` in the compute dtype, with
        `feature_dim = 512 * width / 64` for depth 18/34 and `2048 * width / 64`
        for depth 50.

    Example:
    ```python
    backbone = myol_keras.backbones.ResNet(depth=18, stem="cifar")
    features = backbone(np.zeros((2, 32, 32, 3), "float32"))  # (2, 512)
    tiny = myol_keras.backbones.resnet50(stem="64px", width=8)
    tiny.feature_dim  # 256
    ```
    """

    def __init__(
        self, depth=18, stem="cifar", width=64, dtype=None, name=None, **kwargs
    ):
        if not isinstance(depth, int) or depth not in BLOCK_TYPES:
            raise ValueError(
                f"Expected `depth` to be one of {tuple(BLOCK_TYPES)}. "
                f"Received: depth={depth!r}"
            )
        _check_stem(stem)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(
                "Expected `width` to be a positive integer. "
                f"Received: width={width!r}"
            )
        block_type = BLOCK_TYPES[depth]
        expansion = BOTTLENECK_EXPANSION if block_type == "bottleneck" else 1

        # === Functional Model ===
        inputs = keras.Input(shape=(None, None, 3), name="images")
        x = _conv(
            width, 3, 1, "conv1", dtype, initializer=_torch_default_conv()
        )(inputs)
        x = _batch_norm("bn1", dtype)(x)
        x = keras.layers.ReLU(name="relu", dtype=dtype)(x)
        if stem == "64px":
            # torch MaxPool2d(3, 2, padding=1) pads with -inf; after the ReLU
            # every value is ≥ 0, so zero padding gives the same result.
            x = keras.layers.ZeroPadding2D(1, name="maxpool_pad", dtype=dtype)(
                x
            )
            x = keras.layers.MaxPooling2D(
                3, strides=2, padding="valid", name="maxpool", dtype=dtype
            )(x)
        for i, blocks in enumerate(STACK_DEPTHS[depth]):
            x = apply_stack(
                x,
                width * 2**i,
                blocks,
                stride=1 if i == 0 else 2,
                block_type=block_type,
                name=f"layer{i + 1}",
                dtype=dtype,
            )
        outputs = keras.layers.GlobalAveragePooling2D(
            name="avgpool", dtype=dtype
        )(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        # === Config ===
        self.depth = depth
        self.stem = stem
        self.width = width
        self.block_type = block_type
        self.feature_dim = 8 * width * expansion
        self._layer_dtype = dtype

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "depth": self.depth,
            "stem": self.stem,
            "width": self.width,
        }
        if self._layer_dtype is not None:
            config["dtype"] = keras.dtype_policies.serialize(
                keras.dtype_policies.get(self._layer_dtype)
            )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


def resnet18(stem="cifar", width=64, **kwargs):
    """ResNet-18 v1.5 backbone (basic blocks 2-2-2-2); see `ResNet`."""
    return ResNet(depth=18, stem=stem, width=width, **kwargs)


def resnet34(stem="cifar", width=64, **kwargs):
    """ResNet-34 v1.5 backbone (basic blocks 3-4-6-3); see `ResNet`."""
    return ResNet(depth=34, stem=stem, width=width, **kwargs)


def resnet50(stem="cifar", width=64, **kwargs):
    """ResNet-50 v1.5 backbone (bottleneck blocks 3-4-6-3); see `ResNet`."""
    return ResNet(depth=50, stem=stem, width=width, **kwargs)
