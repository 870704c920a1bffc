"""Self-supervised methods, one module each, and the name -> class registry."""

from myol_keras.methods.base import BootstrapMethod
from myol_keras.methods.byol import BYOL
from myol_keras.methods.myol import MYOL

METHODS = {
    "byol": BYOL,
    "myol": MYOL,
}


def get_method(name):
    """The method class registered as `name` (e.g. "myol")."""
    if name not in METHODS:
        raise ValueError(
            f"Unknown method {name!r}. Choose one of: {', '.join(sorted(METHODS))}."
        )
    return METHODS[name]
