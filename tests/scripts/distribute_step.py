"""One BYOL step under MirroredStrategy (2 logical CPUs, synchronised BN) vs one device.

Run as a script: the logical devices must be configured before TensorFlow
initialises. Prints one JSON line with the comparison.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from myol_keras import batchnorm  # noqa: E402
from myol_keras.backbones import ResNet  # noqa: E402
from myol_keras.callbacks import EMATargetUpdate  # noqa: E402
from myol_keras.methods import BYOL, MYOL  # noqa: E402

GLOBAL_BATCH = 8


def small_backbone():
    """Conv-BN-ReLU twice and a global pool: ResNet's layer types, a fraction of its tracing time."""
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for i, filters in enumerate((4, 8)):
        x = keras.layers.Conv2D(filters, 3, strides=i + 1, padding="same", use_bias=False)(x)
        x = batchnorm.batch_normalization(momentum=0.9, epsilon=1e-5)(x)
        x = keras.layers.ReLU()(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs)


def build(strategy, cls, backbone="small"):
    with strategy.scope(), batchnorm.options(synchronized=True):
        model = cls(
            small_backbone() if backbone == "small" else ResNet(depth=18, stem="cifar", width=4),
            projector_hidden_dim=32, projection_dim=16, predictor_hidden_dim=32,
            weight_decay=1e-2, seed=3,
        )
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    return model


def views():
    rng = np.random.default_rng(0)
    return tuple(rng.normal(size=(GLOBAL_BATCH, 16, 16, 3)).astype("float32") for _ in range(2))


def one_step(model):
    ds = tf.data.Dataset.from_tensors(views())
    history = model.fit(ds, epochs=1, callbacks=[EMATargetUpdate(0.9)], verbose=0, shuffle=False)
    return history.history["loss"][0]


def main():
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.OneDeviceStrategy("/cpu:0")
    result = {"replicas": mirrored.num_replicas_in_sync}

    keras.utils.set_random_seed(0)
    backbone = sys.argv[1] if len(sys.argv) > 1 else "small"
    ref = build(single, BYOL, backbone)
    dist = build(mirrored, BYOL, backbone)
    dist.set_weights(ref.get_weights())
    names = [v.path for v in ref.weights]
    before = [np.array(w) for w in ref.get_weights()]
    result["loss_one_device"] = float(one_step(ref))
    result["loss_mirrored"] = float(one_step(dist))
    diffs = {}
    for name, a, b, w0 in zip(names, ref.get_weights(), dist.get_weights(), before):
        diffs[name] = (float(np.max(np.abs(a - b))), float(np.max(np.abs(a - w0))))
    result["max_weight_diff"] = max(d for d, _ in diffs.values())
    result["worst"] = max(diffs, key=lambda k: diffs[k][0])
    index = {id(v): i for i, v in enumerate(ref.weights)}
    target_ids = [index[id(t)] for t, _ in ref.ema_pairs]
    online_ids = [index[id(v)] for v in ref.optimized_variables]
    result["target_params_moved"] = sum(1 for i in target_ids if diffs[names[i]][1] > 0)
    result["num_target_params"] = len(target_ids)
    result["online_params_moved"] = sum(1 for i in online_ids if diffs[names[i]][1] > 0)
    result["num_online_params"] = len(online_ids)
    result["max_target_diff"] = max(diffs[names[i]][0] for i in target_ids)
    result["max_online_diff"] = max(diffs[names[i]][0] for i in online_ids)
    result["iterations"] = [int(ref.optimizer.iterations.numpy()), int(dist.optimizer.iterations.numpy())]
    result["sync_bn"] = all(
        getattr(layer, "synchronized", False)
        for layer in dist._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
    )

    myol = build(mirrored, MYOL, backbone)
    result["myol_loss"] = float(one_step(myol))

    def draw():
        lam, _ = myol.sample_mixing(GLOBAL_BATCH // 2, myol.mixing_seed())
        return lam

    lams = mirrored.experimental_local_results(mirrored.run(tf.function(draw)))
    result["myol_lams"] = [np.asarray(lam).round(6).tolist() for lam in lams]

    # The in-step EMA (each replica moves its copy of the mirrored targets, in replica
    # context) equals the callback's EMA (cross-replica context), two steps each. Keras
    # 3.15 / TF 2.21 cannot run steps_per_execution > 1 under MirroredStrategy at all
    # (even a plain Sequential model fails), so both run one step per execution here.
    two_steps = tf.data.Dataset.from_tensors(views()).repeat(2)
    a = build(mirrored, BYOL, backbone)
    b = build(mirrored, BYOL, backbone)
    b.set_weights(a.get_weights())
    a.fit(two_steps, epochs=1, callbacks=[EMATargetUpdate(0.9)], verbose=0, shuffle=False)
    b.fit(two_steps, epochs=1, callbacks=[EMATargetUpdate(0.9, in_step=True)], verbose=0, shuffle=False)
    result["in_step_ema_max_diff"] = max(float(np.max(np.abs(x - y))) for x, y in zip(a.get_weights(), b.get_weights()))
    result["in_step_iterations"] = int(b.optimizer.iterations.numpy())
    result["in_step_target_moved"] = bool(any(
        not np.allclose(t.numpy(), o.numpy()) for t, o in b.ema_pairs))
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
