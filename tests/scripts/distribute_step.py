"""One BYOL step under MirroredStrategy (2 logical CPUs, synchronised BN) vs one device; SuNCEt on 2 replicas.

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
from myol_keras import losses  # noqa: E402
from myol_keras.methods import BYOL, MYOL, SuNCEt  # noqa: E402
from myol_keras.methods.suncet import LabelledBatches, gathered_suncet_loss  # noqa: E402

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
    result.update(suncet(mirrored, single, backbone))
    print(json.dumps(result))


CLASSES, PER_CLASS = 3, 2  # C x s on every replica


def official_suncet(z, targets, replicas, temperature=0.1):
    """`facebookresearch/suncet` `init_suncet_loss` on each rank, in NumPy: local anchors vs the gathered rows."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    local = len(z) // replicas
    per_rank = []
    for rank in range(replicas):
        mask = np.ones((local, len(z)))
        mask[np.arange(local), rank * local + np.arange(local)] = 0.0  # diag_mask: the anchor's own row only
        exp = np.exp(z[rank * local:(rank + 1) * local] @ z.T / temperature) * mask
        probs = exp / exp.sum(1, keepdims=True) @ targets
        per_rank.append(float(np.mean(np.sum(-targets[rank * local:(rank + 1) * local] * np.log(probs), 1))))
    return per_rank


def suncet(mirrored, single, backbone):
    """SuNCEt on 2 replicas: the gathered loss and gradient, the per-replica labelled blocks, one training step."""
    out = {}
    replicas = mirrored.num_replicas_in_sync
    rows = CLASSES * PER_CLASS
    rng = np.random.default_rng(5)
    z_all = rng.normal(size=(replicas * rows, 8)).astype("float32")
    t_all = np.tile(np.eye(CLASSES, dtype="float32"), (replicas * PER_CLASS, 1))  # row j*C + i: class i

    # 1. The loss of each replica and the gradient the step takes, against the official formula / one device.
    blocks = mirrored.experimental_distribute_values_from_function(
        lambda ctx: (z_all[ctx.replica_id_in_sync_group * rows:(ctx.replica_id_in_sync_group + 1) * rows],
                     t_all[ctx.replica_id_in_sync_group * rows:(ctx.replica_id_in_sync_group + 1) * rows]))

    @tf.function
    def replica_step(block):
        z, targets = tf.convert_to_tensor(block[0]), block[1]
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = gathered_suncet_loss(z, targets, 0.1)
            scaled = loss / replicas  # what BootstrapMethod.train_step differentiates
        return loss, tape.gradient(scaled, z)

    per_replica = mirrored.run(replica_step, args=(blocks,))
    out["suncet_replica_losses"] = [float(x) for x in mirrored.experimental_local_results(per_replica[0])]
    out["suncet_official_losses"] = official_suncet(z_all, t_all, replicas)
    z_var = tf.Variable(z_all)
    with tf.GradientTape() as tape:
        one = losses.suncet_loss(z_var, t_all, 0.1)
    out["suncet_one_replica_loss"] = float(one)
    grads = np.concatenate([np.asarray(g) for g in mirrored.experimental_local_results(per_replica[1])])
    out["suncet_grad_max_diff"] = float(np.max(np.abs(grads - tape.gradient(one, z_var).numpy())))
    out["suncet_grad_max"] = float(np.max(np.abs(grads)))

    # 2. LabelledBatches.attach(replicas=2): tf.distribute hands each replica one class-balanced block.
    images = np.random.default_rng(1).integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    batches = LabelledBatches(images, np.repeat(np.arange(4), 10), CLASSES, PER_CLASS, 1.0, seed=0, steps_per_epoch=5,
                              image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    stream = batches.attach(tf.data.Dataset.from_tensors(views()).repeat(), start_epoch=1, replicas=replicas)
    element = next(iter(mirrored.experimental_distribute_dataset(stream)))
    local = [mirrored.experimental_local_results(element[k]) for k in ("labelled", "labelled_targets", "epoch")]
    out["suncet_block_shapes"] = [list(x.shape) for x in local[0]]
    out["suncet_block_targets"] = [np.asarray(t).tolist() for t in local[1]]
    out["suncet_block_epochs"] = [np.asarray(e).tolist() for e in local[2]]
    out["suncet_view_shapes"] = [list(x.shape) for x in mirrored.experimental_local_results(element["views"][0])]

    # 3. One step on 2 replicas (synchronised BN) and on one device with the concatenated labelled batch.
    x1, x2 = views()
    labelled = rng.normal(size=(replicas * rows, 16, 16, 3)).astype("float32")
    data = {"views": (x1, x2), "labelled": labelled, "labelled_targets": t_all,
            "epoch": np.zeros(replicas * rows, "int32")}
    ref, dist = build(single, SuNCEt, backbone), build(mirrored, SuNCEt, backbone)
    dist.set_weights(ref.get_weights())
    z, _ = ref.online_forward(tf.concat([x1, x2, labelled], axis=0))
    out["suncet_official_on_model"] = float(np.mean(official_suncet(z.numpy()[2 * GLOBAL_BATCH:], t_all, replicas)))
    logs = [m.fit(tf.data.Dataset.from_tensors(data), epochs=1, verbose=0, shuffle=False).history for m in (ref, dist)]
    out["suncet_step_one_device"] = float(logs[0]["suncet_loss"][0])
    out["suncet_step_mirrored"] = float(logs[1]["suncet_loss"][0])
    out["suncet_step_loss_mirrored"] = float(logs[1]["loss"][0])
    out["suncet_iterations"] = int(dist.optimizer.iterations.numpy())
    return out


if __name__ == "__main__":
    sys.exit(main())
