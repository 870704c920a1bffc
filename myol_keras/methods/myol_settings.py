"""MYOL's settings (`myol.py`), importable without TensorFlow (see `methods.settings`)."""

from myol_keras.methods.settings import MethodSetting

SETTINGS = (
    MethodSetting("alpha", 2.0, "MYOL: Beta(alpha, alpha) of the per-sample mixing coefficient.",
                  methods=("myol",), argument="alpha", above=0.0),
    MethodSetting("gamma", 1.0, "MYOL: weight of the mixup term.", methods=("myol",), argument="gamma", minimum=0.0),
)
