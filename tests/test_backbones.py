"""Tests for myol_keras.backbones (ResNet v1.5 with small-image stems)."""

import math

import keras
import numpy as np
import pytest

from myol_keras import backbones
from myol_keras.backbones import ResNet

# torchvision resnet{18,34,50}() parameters minus fc, with the 7×7 stem conv
# (3·64·49 = 9408) replaced by the 3×3 one (3·64·9 = 1728): −7680.
# 18: 11,689,512 − 513,000 − 7,680; 34: 21,797,672 − 513,000 − 7,680;
# 50: 25,557,032 − 2,049,000 − 7,680.
# Keras' own weight saving and get_weights() trigger this NumPy-2 warning.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
)

TORCHVISION_CIFAR_STEM_PARAMS = {18: 11_168_832, 34: 21_276_992, 50: 23_500_352}


def init_kwargs(**overrides):
    kwargs = {"depth": 18, "stem": "cifar", "width": 8}
    kwargs.update(overrides)
    return kwargs


def images(batch, size, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, size, size, 3)).astype("float32")


def run(model, x, training=False):
    return keras.ops.convert_to_numpy(model(x, training=training))


def feature_map_model(backbone):
    """The backbone up to the last stage (before global average pooling)."""
    return keras.Model(backbone.input, backbone.get_layer("avgpool").input)


@pytest.fixture(scope="module")
def full_resnet18():
    return backbones.resnet18(stem="cifar", width=64)


@pytest.mark.parametrize("depth", [18, 34, 50])
@pytest.mark.parametrize("stem", ["cifar", "64px"])
def test_output_shape_and_feature_dim(depth, stem):
    backbone = ResNet(**init_kwargs(depth=depth, stem=stem))
    expected_dim = (2048 if depth == 50 else 512) * 8 // 64
    assert backbone.feature_dim == expected_dim
    outputs = backbone(images(2, 32), training=False)
    assert tuple(outputs.shape) == (2, expected_dim)
    assert backbone.output_shape == (None, expected_dim)


@pytest.mark.parametrize(
    "stem, size, expected",
    [("cifar", 32, 4), ("64px", 32, 2), ("64px", 64, 4), ("cifar", 16, 2)],
)
def test_final_feature_map_size(stem, size, expected):
    backbone = ResNet(**init_kwargs(stem=stem))
    feature_map = feature_map_model(backbone)(images(1, size))
    assert tuple(feature_map.shape) == (1, expected, expected, 64)


def test_stage_sizes_cifar_stem_32px():
    backbone = ResNet(**init_kwargs(stem="cifar"))
    stages = [
        backbone.get_layer(f"layer{i}_block1_out").output for i in range(1, 5)
    ]
    outputs = keras.Model(backbone.input, stages)(images(1, 32))
    assert [tuple(o.shape[1:]) for o in outputs] == [
        (32, 32, 8),
        (16, 16, 16),
        (8, 8, 32),
        (4, 4, 64),
    ]


def test_64px_stem_max_pool_halves_before_the_stages():
    backbone = ResNet(**init_kwargs(stem="64px"))
    pooled = keras.Model(backbone.input, backbone.get_layer("maxpool").output)
    assert tuple(pooled(images(1, 64)).shape) == (1, 32, 32, 8)
    # The cifar stem has no max-pool.
    cifar = ResNet(**init_kwargs(stem="cifar"))
    names = [layer.name for layer in cifar.layers]
    assert "maxpool" not in names


def torch_conv2d(x, kernel, stride, padding):
    """NumPy reference of torch `F.conv2d` (NHWC input, HWIO kernel)."""
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    size = kernel.shape[0]
    out = (x.shape[1] - size) // stride + 1
    result = np.zeros((x.shape[0], out, out, kernel.shape[-1]), "float64")
    for i in range(out):
        for j in range(out):
            rows = slice(i * stride, i * stride + size)
            cols = slice(j * stride, j * stride + size)
            patch = x[:, rows, cols]
            result[:, i, j] = np.einsum("bhwc,hwco->bo", patch, kernel)
    return result


def torch_max_pool(x, size=3, stride=2, padding=1):
    """NumPy reference of torch `MaxPool2d(3, 2, padding=1)` (-inf padding)."""
    x = np.pad(
        x,
        ((0, 0), (padding, padding), (padding, padding), (0, 0)),
        constant_values=-np.inf,
    )
    out = (x.shape[1] - size) // stride + 1
    result = np.zeros((x.shape[0], out, out, x.shape[-1]))
    for i in range(out):
        for j in range(out):
            rows = slice(i * stride, i * stride + size)
            cols = slice(j * stride, j * stride + size)
            result[:, i, j] = x[:, rows, cols].max(axis=(1, 2))
    return result


@pytest.mark.parametrize("size", [8, 7])
def test_stride_2_conv_samples_the_torch_grid(size):
    inputs = keras.Input((size, size, 3))
    outputs = backbones._strided_conv3x3(inputs, 4, 2, "conv", None)
    model = keras.Model(inputs, outputs)
    x = images(2, size)
    kernel = model.get_layer("conv").kernel.numpy()
    expected = torch_conv2d(x, kernel, stride=2, padding=1)
    np.testing.assert_allclose(run(model, x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [16, 15])
def test_64px_stem_matches_torch_max_pool(size):
    backbone = ResNet(**init_kwargs(stem="64px"))
    stem_model = keras.Model(
        backbone.input,
        [
            backbone.get_layer("relu").output,
            backbone.get_layer("maxpool").output,
        ],
    )
    stem, pooled = map(
        keras.ops.convert_to_numpy, stem_model(images(2, size))
    )
    np.testing.assert_allclose(pooled, torch_max_pool(stem), rtol=1e-6)


def test_bottleneck_stride_on_3x3_conv_v1_5():
    backbone = ResNet(**init_kwargs(depth=50))
    for stage in (2, 3, 4):
        prefix = f"layer{stage}_block0"
        conv1 = backbone.get_layer(f"{prefix}_conv1").get_config()
        conv2 = backbone.get_layer(f"{prefix}_conv2").get_config()
        conv3 = backbone.get_layer(f"{prefix}_conv3").get_config()
        shortcut = backbone.get_layer(f"{prefix}_downsample_conv").get_config()
        assert tuple(conv1["kernel_size"]) == (1, 1)
        assert tuple(conv1["strides"]) == (1, 1)
        assert tuple(conv2["kernel_size"]) == (3, 3)
        assert tuple(conv2["strides"]) == (2, 2)
        assert tuple(conv3["strides"]) == (1, 1)
        assert tuple(shortcut["kernel_size"]) == (1, 1)
        assert tuple(shortcut["strides"]) == (2, 2)
        # torch pads (1, 1) on each side; Keras "same" would pad (0, 1).
        pad = backbone.get_layer(f"{prefix}_conv2_pad").get_config()
        assert tuple(map(tuple, pad["padding"])) == ((1, 1), (1, 1))
    # layer1 changes channels (8 → 32) at stride 1: a stride-1 projection.
    shortcut = backbone.get_layer("layer1_block0_downsample_conv").get_config()
    assert tuple(shortcut["strides"]) == (1, 1)


def test_basic_block_stride_on_first_conv_and_identity_shortcuts():
    backbone = ResNet(**init_kwargs(depth=18))
    for stage in (2, 3, 4):
        prefix = f"layer{stage}_block0"
        conv1 = backbone.get_layer(f"{prefix}_conv1").get_config()
        conv2 = backbone.get_layer(f"{prefix}_conv2").get_config()
        assert tuple(conv1["strides"]) == (2, 2)
        assert tuple(conv2["strides"]) == (1, 1)
    names = {layer.name for layer in backbone.layers}
    # Identity shortcut where the shape is unchanged (torchvision ResNet-18).
    assert "layer1_block0_downsample_conv" not in names
    assert "layer2_block1_downsample_conv" not in names
    downsamples = sorted(n for n in names if n.endswith("_downsample_conv"))
    assert downsamples == [
        f"layer{i}_block0_downsample_conv" for i in (2, 3, 4)
    ]


@pytest.mark.parametrize("depth", [18, 50])
def test_no_conv_bias_and_torch_batch_norm_settings(depth):
    backbone = ResNet(**init_kwargs(depth=depth, stem="64px"))
    convs = [l for l in backbone.layers if isinstance(l, keras.layers.Conv2D)]
    norms = [
        l
        for l in backbone.layers
        if isinstance(l, keras.layers.BatchNormalization)
    ]
    assert len(convs) == len(norms) == (20 if depth == 18 else 53)
    for conv in convs:
        assert not conv.use_bias
    for norm in norms:
        assert norm.momentum == pytest.approx(0.9)
        assert norm.epsilon == pytest.approx(1e-5)
        np.testing.assert_array_equal(norm.gamma.numpy(), 1.0)
        np.testing.assert_array_equal(norm.beta.numpy(), 0.0)


def test_resnet18_parameter_count_matches_torchvision(full_resnet18):
    trainable = sum(
        int(np.prod(v.shape)) for v in full_resnet18.trainable_weights
    )
    assert trainable == TORCHVISION_CIFAR_STEM_PARAMS[18]
    # Keras also counts the BN moving mean/variance (torch buffers): 2 × 4800.
    assert full_resnet18.count_params() == 11_168_832 + 2 * 4800
    assert full_resnet18.feature_dim == 512


@pytest.mark.parametrize("depth", [34, 50])
def test_resnet34_50_parameter_counts_match_torchvision(depth):
    backbone = ResNet(depth=depth, stem="64px", width=64)
    trainable = sum(int(np.prod(v.shape)) for v in backbone.trainable_weights)
    assert trainable == TORCHVISION_CIFAR_STEM_PARAMS[depth]


def test_stem_conv_torch_default_init(full_resnet18):
    kernel = full_resnet18.get_layer("conv1").kernel.numpy()
    assert kernel.shape == (3, 3, 3, 64)
    bound = 1.0 / math.sqrt(27)
    assert bound == pytest.approx(0.19245, abs=1e-5)
    assert np.abs(kernel).max() <= bound
    assert np.abs(kernel).max() > 0.95 * bound
    assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert abs(kernel.mean()) < 0.02


def test_conv_he_fan_out_init(full_resnet18):
    kernel = full_resnet18.get_layer("layer4_block1_conv2").kernel.numpy()
    fan_out = 3 * 3 * 512
    assert kernel.std() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.05)
    # Untruncated normal: values beyond 2σ exist (a truncated normal has none).
    assert np.abs(kernel).max() > 3 * math.sqrt(2.0 / fan_out)
    shortcut = full_resnet18.get_layer("layer4_block0_downsample_conv")
    assert shortcut.kernel.numpy().std() == pytest.approx(
        math.sqrt(2.0 / 512), rel=0.05
    )


def test_convs_are_initialised_independently():
    backbone = ResNet(**init_kwargs())
    a = backbone.get_layer("layer1_block0_conv1").kernel.numpy()
    b = backbone.get_layer("layer1_block0_conv2").kernel.numpy()
    assert not np.allclose(a, b)


def test_get_config_from_config_round_trip():
    backbone = ResNet(**init_kwargs(depth=50, stem="64px"), name="encoder")
    config = backbone.get_config()
    assert config == {
        "name": "encoder",
        "trainable": True,
        "depth": 50,
        "stem": "64px",
        "width": 8,
    }
    restored = ResNet.from_config(config)
    assert restored.get_config() == config
    assert restored.feature_dim == backbone.feature_dim
    restored.set_weights(backbone.get_weights())
    x = images(2, 32)
    np.testing.assert_allclose(run(restored, x), run(backbone, x), atol=1e-6)


def test_factories_and_trainable_in_config():
    backbone = backbones.resnet34(stem="64px", width=8, trainable=False)
    assert (backbone.depth, backbone.stem, backbone.width) == (34, "64px", 8)
    assert backbone.get_config()["trainable"] is False
    assert not ResNet.from_config(backbone.get_config()).trainable
    assert backbones.resnet50(width=8).depth == 50
    assert backbones.resnet18(width=8).depth == 18


def test_keras_save_load_round_trip(tmp_path):
    backbone = ResNet(**init_kwargs(stem="64px"))
    x = images(3, 32)
    backbone(x, training=True)  # move the BN statistics away from 0 / 1
    expected = run(backbone, x)
    path = tmp_path / "backbone.keras"
    backbone.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, ResNet)
    assert restored.get_config() == backbone.get_config()
    np.testing.assert_allclose(run(restored, x), expected, atol=1e-6)
    # Another batch and image size after reloading.
    assert tuple(restored(images(1, 48), training=False).shape) == (1, 64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"depth": 20},
            r"Expected `depth` to be one of \(18, 34, 50\)\. "
            r"Received: depth=20",
        ),
        (
            {"stem": "imagenet"},
            r"Expected `stem` to be one of \('cifar', '64px'\)\. "
            r"Received: stem='imagenet'",
        ),
        (
            {"width": 0},
            r"Expected `width` to be a positive integer\. Received: width=0",
        ),
        ({"width": 8.0}, r"Received: width=8\.0"),
        ({"depth": 18.0}, r"Received: depth=18\.0"),
        ({"depth": [18]}, r"Received: depth=\[18\]"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNet(**init_kwargs(**kwargs))


def test_bad_stem_in_minimum_image_size_raises():
    with pytest.raises(ValueError, match=r"Expected `stem` to be one of"):
        backbones.minimum_image_size("tiny")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_policy(policy):
    try:
        keras.mixed_precision.set_global_policy(policy)
        backbone = ResNet(**init_kwargs(depth=50))
        compute_dtype = keras.mixed_precision.global_policy().compute_dtype
        outputs = backbone(images(2, 16), training=True)
        assert keras.backend.standardize_dtype(outputs.dtype) == compute_dtype
        outputs = keras.ops.convert_to_numpy(keras.ops.cast(outputs, "float32"))
        assert np.all(np.isfinite(outputs))
        for weight in backbone.weights:
            assert weight.dtype == "float32"
        saved = backbone.get_config()
        assert "dtype" not in saved
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_dtype_argument_sets_layer_policy():
    backbone = ResNet(**init_kwargs(), dtype="mixed_bfloat16")
    assert backbone.get_layer("conv1").dtype_policy.name == "mixed_bfloat16"
    outputs = backbone(images(1, 16))
    assert keras.backend.standardize_dtype(outputs.dtype) == "bfloat16"
    restored = ResNet.from_config(backbone.get_config())
    norm = restored.get_layer("layer4_block1_bn2")
    assert norm.dtype_policy.name == "mixed_bfloat16"


def test_minimum_image_size_values():
    assert backbones.MINIMUM_IMAGE_SIZE == {"cifar": 9, "64px": 17}
    assert backbones.minimum_image_size("cifar") == 9
    assert backbones.minimum_image_size("64px") == 17


@pytest.mark.parametrize("stem", ["cifar", "64px"])
def test_output_at_exactly_the_minimum_size(stem):
    backbone = ResNet(**init_kwargs(stem=stem))
    size = backbones.minimum_image_size(stem)
    feature_map = feature_map_model(backbone)
    # At the minimum the last stage is 2×2; one pixel less and it is 1×1.
    assert tuple(feature_map(images(1, size)).shape[1:3]) == (2, 2)
    assert tuple(feature_map(images(1, size - 1)).shape[1:3]) == (1, 1)
    outputs = run(backbone, images(2, size), training=True)
    assert outputs.shape == (2, backbone.feature_dim)
    assert np.all(np.isfinite(outputs))
