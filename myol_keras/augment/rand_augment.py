"""`RandAugment`: the strong augmentation of CLSA's code (docs/METHODS.md §2.10).

As `data_processing/RandAugment.py` of `maple-research-lab/CLSA` draws it
(`RandAugment(n=5, m=10)`, FixMatch's pool): `num_ops` operations chosen
uniformly *with replacement* from the 14 below, each applied with probability
`rate` = 0.5 at a level `v` uniform in `1 .. magnitude - 1` (NumPy's
`randint(1, m)`: 1..9 for m = 10), every draw per sample. Levels map to
parameters with the code's formulas, `float(v) * max / 10 + bias` (float) or
`int(v * max / 10) + bias` (int):

| op | parameter at level v (1..9) |
|---|---|
| AutoContrast, Equalize, Identity | none |
| Brightness, Color, Contrast, Sharpness | factor `v * 0.9 / 10 + 0.05` (0.14..0.86: always a reduction) |
| Posterize | bits `int(v * 4 / 10) + 4` (4..7) |
| Rotate | `int(v * 30 / 10)` = 3v degrees (3..27), sign ±1 with p = 0.5 |
| ShearX, ShearY | `v * 0.3 / 10` (0.03..0.27), random sign |
| Solarize | threshold `256 - int(v * 256 / 10)` (231..26) |
| TranslateX, TranslateY | `int(±(v * 0.3 / 10) * size)` pixels |

The operations run on uint8 values, as PIL does there: the input is rounded
to the 256 levels of its value range first, and the output holds those
levels (`myol_keras.augment.randaugment_ops`, exact to Pillow).
"""

import keras
import tensorflow as tf

from myol_keras.augment import randaugment_ops as ops
from myol_keras.augment.common import (
    RandomAugmentation,
    as_batch,
    base_seed,
    is_int,
    is_number,
    restore_rank,
    split_seed,
)

PARAMETER_MAX = 10.0  # the `PARAMETER_MAX` of the FixMatch / CLSA code


def _float_parameter(maximum):
    """The code's `float(v) * max_v / PARAMETER_MAX` for levels v = 0..10."""
    return [float(v) * maximum / PARAMETER_MAX for v in range(11)]


def _int_parameter(maximum):
    """The code's `int(v * max_v / PARAMETER_MAX)` for levels v = 0..10."""
    return [int(v * maximum / PARAMETER_MAX) for v in range(11)]


# Name, function of (images, per-sample parameter), parameter table over the
# levels 0..10 (None: no parameter), and whether the parameter takes a random sign.
_ENHANCE = [v + 0.05 for v in _float_parameter(0.9)]
_OPS = (
    ("AutoContrast", lambda x, p: ops.autocontrast(x), None, False),
    ("Brightness", ops.brightness, _ENHANCE, False),
    ("Color", ops.color, _ENHANCE, False),
    ("Contrast", ops.contrast, _ENHANCE, False),
    ("Equalize", lambda x, p: ops.equalize(x), None, False),
    ("Identity", lambda x, p: x, None, False),
    ("Posterize", ops.posterize, [v + 4 for v in _int_parameter(4)], False),
    ("Rotate", ops.rotate, _int_parameter(30), True),
    ("Sharpness", ops.sharpness, _ENHANCE, False),
    ("ShearX", ops.shear_x, _float_parameter(0.3), True),
    ("ShearY", ops.shear_y, _float_parameter(0.3), True),
    ("Solarize", ops.solarize, [256 - v for v in _int_parameter(256)], False),
    ("TranslateX", ops.translate_x, _float_parameter(0.3), True),
    ("TranslateY", ops.translate_y, _float_parameter(0.3), True),
)
OP_NAMES = tuple(op[0] for op in _OPS)


def _parameter(index, levels, signs, images):
    """The per-sample parameter of op `index` for `levels` and `signs` (float64)."""
    name, _, table, signed = _OPS[index]
    if table is None:
        return tf.zeros_like(signs)
    value = tf.gather(tf.constant(table, tf.float64), levels)
    if signed:
        value = value * signs
    if name in ("TranslateX", "TranslateY"):
        axis = 2 if name == "TranslateX" else 1
        size = tf.cast(tf.shape(images)[axis], tf.float64)
        value = tf.cast(tf.cast(value * size, tf.int64), tf.float64)  # int() truncates to 0
    return value


@keras.saving.register_keras_serializable(package="myol_keras")
class RandAugment(RandomAugmentation):
    """RandAugment as CLSA's code applies it: `num_ops` FixMatch ops, each with p = `rate`.

    Per sample and per slot: an operation uniform over the 14 of `OP_NAMES`
    (with replacement), a level uniform in `1 .. magnitude - 1`, a coin with
    probability `rate` that applies it, and a sign for the geometric ops.
    The parameters follow the table of this module's docstring, and each
    operation gives the pixels Pillow gives (`randaugment_ops`), so the input
    is first rounded to 256 levels of `value_range`. Keras core `RandAugment`
    is a different recipe (other operations and magnitudes, one factor per
    call). In inference mode the input is returned unchanged.

    Args:
        num_ops: int >= 0, operations per image (CLSA: 5).
        magnitude: int in [2, 10]; levels are drawn in `1 .. magnitude - 1`
            (CLSA: `m = 10`, levels 1..9 of 10).
        rate: float in [0, 1], probability of applying each drawn op (0.5).
        value_range: `(0, 1)` (float images, the default) or `(0, 255)`.
        seed: optional int, seed of the layer's `SeedGenerator`.
        **kwargs: standard layer arguments (`name`, ...).

    Example:

    >>> layer = RandAugment(num_ops=5, magnitude=10, seed=0)
    >>> layer(tf.random.uniform([4, 32, 32, 3])).shape
    TensorShape([4, 32, 32, 3])
    """

    def __init__(self, num_ops=5, magnitude=10, rate=0.5, value_range=(0, 1), seed=None, **kwargs):
        if not is_int(num_ops) or num_ops < 0:
            raise ValueError(f"Expected `num_ops` to be an int >= 0. Received: num_ops={num_ops}")
        if not is_int(magnitude) or not 2 <= magnitude <= 10:
            raise ValueError(
                f"Expected `magnitude` to be an int in [2, 10]. Received: magnitude={magnitude}"
            )
        if not is_number(rate) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"Expected `rate` to be a float in [0, 1]. Received: rate={rate}")
        if tuple(value_range) not in ((0, 1), (0, 255)):
            raise ValueError(
                "Expected `value_range` to be (0, 1) or (0, 255). "
                f"Received: value_range={value_range}"
            )
        super().__init__(seed=seed, **kwargs)
        self.num_ops = int(num_ops)
        self.magnitude = int(magnitude)
        self.rate = float(rate)
        self.value_range = tuple(int(v) for v in value_range)

    def get_random_transformation(self, images, training=True, seed=None):
        """Per-sample draws, each `[N, num_ops]`: `ops`, `levels` (int32), `apply` (bool), `signs` (±1.0)."""
        images, _ = as_batch(images)
        shape = [tf.shape(images)[0], self.num_ops]
        op_seed, level_seed, apply_seed, sign_seed = split_seed(base_seed(self.generator, seed), 4)
        uniform = tf.random.stateless_uniform
        return {
            "ops": uniform(shape, op_seed, 0, len(_OPS), dtype=tf.int32),
            "levels": uniform(shape, level_seed, 1, self.magnitude, dtype=tf.int32),
            "apply": uniform(shape, apply_seed) < self.rate,
            "signs": tf.where(uniform(shape, sign_seed) < 0.5, -1.0, 1.0),
        }

    def transform_images(self, images, transformation, training=True):
        """Applies the drawn ops slot after slot on the 256 levels of `value_range`."""
        images, unbatched = as_batch(images)
        if not training:
            return restore_rank(tf.cast(images, self.compute_dtype), unbatched)
        scale = 255.0 / self.value_range[1]
        levels = tf.round(tf.clip_by_value(tf.cast(images, tf.float32) * scale, 0.0, 255.0))
        for slot in range(self.num_ops):
            chosen = tf.where(transformation["apply"][:, slot], transformation["ops"][:, slot], -1)
            for index, (_, function, _, _) in enumerate(_OPS):
                if OP_NAMES[index] == "Identity":
                    continue
                levels = _apply_op(
                    levels,
                    tf.where(tf.equal(chosen, index))[:, 0],
                    index,
                    function,
                    transformation["levels"][:, slot],
                    tf.cast(transformation["signs"][:, slot], tf.float64),
                )
        return restore_rank(tf.cast(levels / scale, self.compute_dtype), unbatched)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_ops": self.num_ops,
                "magnitude": self.magnitude,
                "rate": self.rate,
                "value_range": self.value_range,
                "seed": self.seed,
            }
        )
        return config


def _apply_op(images, selected, index, function, levels, signs):
    """Op `index` on the samples `selected` (int64 `[M]`, possibly empty), scattered back."""
    subset = tf.gather(images, selected)
    parameter = _parameter(index, tf.gather(levels, selected), tf.gather(signs, selected), subset)
    outputs = function(subset, parameter)
    return tf.tensor_scatter_nd_update(images, selected[:, None], outputs)
