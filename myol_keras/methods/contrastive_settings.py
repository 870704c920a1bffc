"""SimCLR's and MoCo's settings (`contrastive.py`), importable without TensorFlow (see `methods.settings`)."""

from myol_keras.methods.settings import MethodSetting

SETTINGS = (
    MethodSetting("simclr_temperature", 0.07, "SimCLR: NT-Xent temperature (0.07 in the MYOL reference).",
                  methods=("simclr",), argument="temperature", above=0.0),
    MethodSetting("moco_temperature", 0.07, "MoCo: InfoNCE temperature (0.07 in the MYOL reference).",
                  methods=("moco",), argument="temperature", above=0.0),
    MethodSetting("queue_size", 4096, "MoCo: queue length K (K mod batch_size = 0 as in the reference).",
                  methods=("moco",), argument="queue_size", minimum=1),
)
