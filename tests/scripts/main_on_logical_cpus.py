"""`python -m myol_keras.main` in a process whose CPU is split into N logical devices.

    python tests/scripts/main_on_logical_cpus.py N --strategy=mirrored ...

`--strategy=mirrored` then runs N replicas in one process: the one-process
reference a multi-worker run with N workers is compared with. The logical
devices must be configured before TensorFlow initialises, hence a script.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if any(a in ("--deterministic", "--deterministic=true") for a in sys.argv):  # as main.run does, before the import
    from myol_keras import process_settings

    process_settings.onednn_kernels_off()

import tensorflow as tf  # noqa: E402

count = int(sys.argv[1])
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])

from myol_keras import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main.main(["myol_keras.main", *sys.argv[2:]]))
