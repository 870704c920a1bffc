"""Un-Mix's settings (`unmix.py`), importable without TensorFlow (see `methods.settings`)."""

from myol_keras.methods.settings import MethodSetting

SETTINGS = (
    MethodSetting("unmix_prob", 0.5, "Un-Mix: probability of global mixup (else CutMix) per batch.",
                  methods=("unmix",), argument="mix_prob", minimum=0.0, maximum=1.0),
    MethodSetting("unmix_target_view", "x1", "Un-Mix: target of the mixtures: x1 (its own view, MYOL reference) or x2 "
                  "(the official README pairing).", methods=("unmix",), argument="target_view", choices=("x1", "x2")),
)
