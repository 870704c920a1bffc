"""Representation mixing's settings (`repmix.py`), importable without TensorFlow (see `methods.settings`)."""

from myol_keras.methods.settings import MethodSetting

SETTINGS = (
    MethodSetting("repmix_temperature", 0.5, "Representation mixing: xent_loss temperature.",
                  methods=("repmix",), argument="temperature", above=0.0),
    MethodSetting("repmix_reduction", "log_mean", "Representation mixing: -log(mean rho) (official) or mean(-log rho) "
                  "(standard NT-Xent).", methods=("repmix",), argument="reduction", choices=("log_mean", "mean_log")),
)
