"""Self-supervised methods, one module each, and the name -> class registry."""

from myol_keras.methods.base import BootstrapMethod
from myol_keras.methods.byol import BYOL
from myol_keras.methods.ccsl import CCSL, CSSL
from myol_keras.methods.contrastive import MoCo, SimCLR
from myol_keras.methods.imix import IMix
from myol_keras.methods.myol import MYOL
from myol_keras.methods.repmix import RepMix
from myol_keras.methods.tribyol import TriBYOL
from myol_keras.methods.unmix import UnMix

METHODS = {
    "byol": BYOL,
    "myol": MYOL,
    "unmix": UnMix,
    "imix": IMix,
    "tribyol": TriBYOL,
    "repmix": RepMix,
    "ccsl": CCSL,
    "cssl": CSSL,
    "simclr": SimCLR,
    "moco": MoCo,
}


def get_method(name):
    """The method class registered as `name` (e.g. "myol")."""
    if name not in METHODS:
        raise ValueError(
            f"Unknown method {name!r}. Choose one of: {', '.join(sorted(METHODS))}."
        )
    return METHODS[name]
