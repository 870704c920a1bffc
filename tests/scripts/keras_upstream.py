"""Keras' own `fit` of a plain model in the two cases this library works around; one JSON line out.

    python keras_upstream.py steps_per_execution   # MirroredStrategy on 2 logical CPUs, steps_per_execution=2
    TF_CONFIG=... python keras_upstream.py multi_worker   # one worker of a MultiWorkerMirroredStrategy cluster

Prints `{"case": ..., "ok": true}` if Keras trained, else `{"case": ..., "ok": false, "error": "<exception type>", "message": "<its text>"}`.
The tests that run it (tests/test_distribute.py) expect the failure: when Keras trains, the
workaround it stands for can be deleted.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402


def strategy_for(case):
    if case == "steps_per_execution":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=30)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def main(case):
    strategy = strategy_for(case)
    import keras
    import numpy as np

    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse", steps_per_execution=2 if case == "steps_per_execution" else 1)
    x = np.ones((16, 3), "float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(4).repeat()
    try:
        model.fit(dataset, epochs=1, steps_per_epoch=4, verbose=0)
        result = {"case": case, "ok": True}
    except Exception as e:  # noqa: BLE001 (the failure is the finding)
        message = " ".join(str(e).split())
        result = {"case": case, "ok": False, "error": type(e).__name__, "message": message[:4000]}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
