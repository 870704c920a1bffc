"""i-Mix's settings (`imix.py`), importable without TensorFlow (see `methods.settings`)."""

from myol_keras.methods.settings import MethodSetting

SETTINGS = (
    MethodSetting("imix_alpha", 1.0, "i-Mix: Beta(alpha, alpha) before max(lam, 1 - lam).",
                  methods=("imix",), argument="alpha", above=0.0),
)
