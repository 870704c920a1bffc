"""The one evaluation transform: centre square crop, antialiased bilinear resize, normalisation.

Every place that feeds images to a trained encoder outside pre-training uses
`evaluation_transform`: the export's serving signatures (encoder and linear
classifier), the linear probe and kNN (through those signatures), the kNN
monitor, semi-supervised fine-tuning, transfer, the attacks and `embed`. In
order:

1. `to_unit_float`: uint8 (any integer dtype) -> float32 in [0, 1] by dividing by
   the dtype's maximum (torchvision's `ToTensor`); float input is taken to be in
   [0, 1] already.
2. `center_square_crop`: the largest centred square, `side = min(H, W)`,
   offsets `(H - side) // 2`, `(W - side) // 2` — the rule of the image-folder
   loader in `myol_keras.data`. A square image is left as it is.
3. `resize`: bilinear to `(image_size, image_size)` with antialiasing. When
   shrinking, this is PIL's `BILINEAR` (a triangle filter widened by the scale),
   which the reference's torchvision `Resize` runs on PIL images: STL-10's
   96 -> 64 px matches PIL within one grey level, where TensorFlow's plain
   bilinear resize (two taps) is off by up to about 6. At the same size it is
   the identity; when enlarging it is ordinary bilinear.
4. `normalize`: `(x - mean) / std` per channel.

All four are TensorFlow ops with dynamic height and width, so they run inside
SavedModel signatures (`[batch, None, None, 3]`), `tf.data` maps and
`tf.function`s, on batched `[N, H, W, C]` or single `[H, W, C]` images.

`fixed_size_transform` is the same transform for one static input size,
written with ops every converter knows (two matrix products, no
`ScaleAndTranslate`), for the ONNX and LiteRT exports (`myol_keras.export`):
for a fixed size the crop and the antialiased resize are a linear map per
axis, and `resize_matrix` reads the resize weights off `resize` itself.

Example:
```python
x = evaluation_transform(tf.zeros([2, 96, 120, 3], tf.uint8), 64,
                         mean=(0.4467, 0.4398, 0.4066), std=(0.2603, 0.2565, 0.2712))
x.shape  # TensorShape([2, 64, 64, 3])
```
"""

import numbers

import tensorflow as tf


def check_image_size(image_size):
    """`image_size` as an int; raises `ValueError` unless it is an int >= 1."""
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 1:
        raise ValueError(f"Expected `image_size` to be an int >= 1. Received: image_size={image_size!r}")
    return int(image_size)


def check_mean_std(mean, std):
    """`(mean, std)` as tuples of 3 floats; raises `ValueError` unless both are 3 numbers and std > 0."""
    for name, value in (("mean", mean), ("std", std)):
        if (not isinstance(value, (tuple, list)) or len(value) != 3
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)):
            raise ValueError(f"Expected `{name}` to be 3 numbers, one per channel. Received: {name}={value!r}")
    if not all(v > 0 for v in std):
        raise ValueError(f"Expected every value of `std` to be > 0. Received: std={std!r}")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def to_unit_float(images):
    """Integer images -> float32 in [0, 1] (divided by the dtype's maximum); float images -> float32.

    Args:
        images: `[N, H, W, C]` or `[H, W, C]`, uint8 (or another integer dtype) or float.

    Example:
    ```python
    to_unit_float(tf.constant([[[0, 51, 255]]], tf.uint8))  # [[[0., 0.2, 1.]]]
    ```
    """
    images = tf.convert_to_tensor(images)
    if images.dtype.is_integer:
        return tf.cast(images, tf.float32) / float(images.dtype.max)
    return tf.cast(images, tf.float32)


def center_square_crop(images):
    """The largest centred square of each image: `side = min(H, W)`, offsets `(H - side) // 2`, `(W - side) // 2`.

    Args:
        images: `[N, H, W, C]` or `[H, W, C]`; H and W may be dynamic.

    Example:
    ```python
    center_square_crop(tf.zeros([2, 96, 120, 3])).shape  # TensorShape([2, 96, 96, 3])
    ```
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    side = tf.minimum(height, width)
    top = (height - side) // 2
    left = (width - side) // 2
    return images[..., top:top + side, left:left + side, :]


def resize(images, image_size):
    """Bilinear resize to `(image_size, image_size)` with antialiasing (PIL's `BILINEAR` when shrinking).

    Args:
        images: float `[N, H, W, C]` or `[H, W, C]`.
        image_size: the output height and width.

    Example:
    ```python
    resize(tf.zeros([2, 96, 96, 3]), 64).shape  # TensorShape([2, 64, 64, 3])
    ```
    """
    image_size = check_image_size(image_size)
    return tf.image.resize(images, (image_size, image_size), method="bilinear", antialias=True)


def normalize(images, mean, std):
    """`(images - mean) / std` per channel, in float32.

    Args:
        images: float `[..., 3]` images.
        mean: 3 floats.
        std: 3 floats > 0.

    Example:
    ```python
    normalize(tf.fill([1, 2, 2, 3], 0.5), (0.5,) * 3, (0.25,) * 3)  # all zeros
    ```
    """
    mean, std = check_mean_std(mean, std)
    images = tf.cast(images, tf.float32)
    return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def resize_pixels(images, image_size):
    """The pixel part of the transform: `to_unit_float`, `center_square_crop`, `resize` -> [0, 1] pixels.

    What an attack perturbs: the images at the encoder's resolution, before the
    normalisation the model applies inside (`serve_pixels`).

    Args:
        images: uint8 images (or float pixels in [0, 1]), `[N, H, W, 3]` or `[H, W, 3]`.
        image_size: the output height and width.

    Example:
    ```python
    resize_pixels(tf.zeros([2, 96, 120, 3], tf.uint8), 64).shape  # TensorShape([2, 64, 64, 3])
    ```
    """
    return resize(center_square_crop(to_unit_float(images)), image_size)


def evaluation_transform(images, image_size, mean, std):
    """The evaluation transform: `to_unit_float`, `center_square_crop`, `resize`, `normalize`.

    Args:
        images: uint8 images (or float pixels in [0, 1]), `[N, H, W, 3]` or `[H, W, 3]`, any H and W.
        image_size: the encoder's input size (the training image size).
        mean: 3 floats, the normalisation mean in [0, 1] pixel units.
        std: 3 floats > 0, the normalisation std.

    Returns:
        float32 `[N, image_size, image_size, 3]` (or unbatched) normalised images.

    Example:
    ```python
    x = evaluation_transform(tf.zeros([2, 96, 96, 3], tf.uint8), 64, (0.5,) * 3, (0.25,) * 3)
    x.shape  # TensorShape([2, 64, 64, 3])
    ```
    """
    image_size = check_image_size(image_size)
    mean, std = check_mean_std(mean, std)
    return normalize(resize_pixels(images, image_size), mean, std)


def resize_matrix(size_in, size_out):
    """The `[size_out, size_in]` float32 matrix of `resize` along one axis (numpy, computed eagerly).

    `resize` (TensorFlow's `ScaleAndTranslate` with a triangle kernel) is
    separable: row i of the matrix holds the weights output pixel i gives the
    input pixels, read off by resizing the unit vectors along that axis.

    Example:
    ```python
    m = resize_matrix(96, 64)  # then x[64, 64] = m @ x[96, 96] @ m.T per channel
    ```
    """
    size_in, size_out = check_image_size(size_in), check_image_size(size_out)
    with tf.init_scope():  # eager even inside a tf.function: the weights become constants
        units = tf.eye(size_in)[:, :, None, None]  # size_in images of [size_in, 1, 1]
        columns = tf.image.resize(units, (size_out, 1), method="bilinear", antialias=True)
        return tf.transpose(columns[:, :, 0, 0]).numpy()


def fixed_size_transform(images, image_size, mean, std):
    """`evaluation_transform` for images of one static size, with converter-friendly ops.

    The same crop rule, resize weights and normalisation, as two batched
    matrix products per image: the centre square crop is folded into the
    resize matrices (`resize_matrix`, zero weights outside the square), so
    tf2onnx and the LiteRT converter can translate it (neither knows
    `ScaleAndTranslate`), and a runtime handed another size fails in the
    products' shape check instead of computing on a wrong crop (the LiteRT
    interpreter lets a caller resize H and W as well as the batch).
    Agrees with `evaluation_transform` to float rounding (tested to 1e-5).

    Args:
        images: uint8 images (or float pixels in [0, 1]) `[N, H, W, 3]` whose H
            and W are known when traced (the batch may be dynamic).
        image_size, mean, std: as for `evaluation_transform`.

    Example:
    ```python
    fixed_size_transform(tf.zeros([2, 96, 120, 3], tf.uint8), 64, (0.5,) * 3, (0.25,) * 3).shape  # [2, 64, 64, 3]
    ```
    """
    import numpy as np

    image_size = check_image_size(image_size)
    mean, std = check_mean_std(mean, std)
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or images.shape[1] is None or images.shape[2] is None:
        raise ValueError(f"Expected images shaped [batch, H, W, C] with a static H and W. Received: shape={images.shape}")
    height, width = int(images.shape[1]), int(images.shape[2])
    side = min(height, width)
    weights = resize_matrix(side, image_size)
    rows = np.zeros((image_size, height), np.float32)
    columns = np.zeros((image_size, width), np.float32)
    rows[:, (height - side) // 2:(height - side) // 2 + side] = weights
    columns[:, (width - side) // 2:(width - side) // 2 + side] = weights
    # Batched matmuls rather than tf.einsum: with a dynamic batch, the LiteRT converter of TF 2.21 lowers
    # this einsum to a RESHAPE whose static shape keeps a -1, and the interpreter refuses the file
    # ("BytesRequired number of elements overflowed", as in tensorflow/tensorflow#62565).
    x = tf.transpose(to_unit_float(images), [0, 3, 1, 2])  # [N, C, H, W]
    x = tf.matmul(tf.matmul(tf.constant(rows), x), tf.constant(columns), transpose_b=True)  # [N, C, S, S]
    return normalize(tf.transpose(x, [0, 2, 3, 1]), mean, std)
