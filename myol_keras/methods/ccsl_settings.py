"""CCSL's and CSSL's settings (`ccsl.py`, RECONSTRUCTIONS), importable without TensorFlow (see `methods.settings`)."""

from myol_keras.methods.settings import MethodSetting

_BOTH = ("ccsl", "cssl")

SETTINGS = (
    MethodSetting("theta_pos", 0.8, "CCSL/CSSL (RECONSTRUCTION, not the official loss): pseudo-positive cosine "
                  "threshold theta+ (above 1: no pseudo-positives).", methods=_BOTH, argument="theta_pos"),
    MethodSetting("theta_neg", 0.2, "CCSL/CSSL (RECONSTRUCTION, not the official loss): pseudo-negative cosine "
                  "threshold theta- (below -1: no pseudo-negatives).", methods=_BOTH, argument="theta_neg"),
    MethodSetting("pos_weight", 1.0, "CCSL/CSSL (RECONSTRUCTION): weight w+ of the pseudo-positive term.",
                  methods=_BOTH, argument="pos_weight", minimum=0.0),
    MethodSetting("neg_weight", 1.0, "CCSL/CSSL (RECONSTRUCTION): weight w- of the pseudo-negative term.",
                  methods=_BOTH, argument="neg_weight", minimum=0.0),
    MethodSetting("cssl_temperature", 1.0, "CSSL (RECONSTRUCTION): temperature T of sigmoid(cos / T).",
                  methods=("cssl",), argument="temperature", above=0.0),
)


def _thresholds_ordered(values):
    if values["theta_neg"] > values["theta_pos"]:
        return (f"--theta_neg={values['theta_neg']:g} is above --theta_pos={values['theta_pos']:g}: the "
                "pseudo-negative threshold must not exceed the pseudo-positive one")
    return None


CROSS_RULES = ((("theta_neg", "theta_pos"), _thresholds_ordered),)
