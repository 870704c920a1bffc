"""Self-supervised methods, one module each, and the name -> class registry.

The registry names each method's module and class, so it is read without
importing them: `METHOD_NAMES` and each method's settings
(`methods.settings`, declared beside the method in `<module>_settings.py`)
import no TensorFlow. The classes load on first use (PEP 562): `METHODS`,
`get_method(name)` and `from myol_keras.methods import MYOL` import the
method modules, and with them Keras and TensorFlow.

Example:
```python
from myol_keras.methods import METHOD_NAMES, get_method

model = get_method("myol")(myol_keras.ResNet(18, width=16), alpha=2.0)
```
"""

import importlib

#: method name -> (module in this package, class name), in the order of `--method`'s choices.
REGISTRY = {
    "byol": ("byol", "BYOL"),
    "myol": ("myol", "MYOL"),
    "unmix": ("unmix", "UnMix"),
    "imix": ("imix", "IMix"),
    "tribyol": ("tribyol", "TriBYOL"),
    "repmix": ("repmix", "RepMix"),
    "ccsl": ("ccsl", "CCSL"),
    "cssl": ("ccsl", "CSSL"),
    "simclr": ("contrastive", "SimCLR"),
    "moco": ("contrastive", "MoCo"),
    "clsa": ("clsa", "CLSA"),
    "suncet": ("suncet", "SuNCEt"),
}
METHOD_NAMES = tuple(REGISTRY)

#: the other public classes, by module (imported on first use like the methods).
_OTHER_CLASSES = {"BootstrapMethod": "base"}


def get_method(name):
    """The method class registered as `name` (e.g. "myol"); imports its module."""
    if name not in REGISTRY:
        raise ValueError(
            f"Unknown method {name!r}. Choose one of: {', '.join(sorted(REGISTRY))}."
        )
    module, class_name = REGISTRY[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), class_name)


def __getattr__(name):
    if name == "METHODS":
        value = {method: get_method(method) for method in REGISTRY}
    elif name in _OTHER_CLASSES:
        value = getattr(importlib.import_module(f"{__name__}.{_OTHER_CLASSES[name]}"), name)
    else:
        classes = {class_name: method for method, (_, class_name) in REGISTRY.items()}
        if name not in classes:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = get_method(classes[name])
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), "METHODS", *_OTHER_CLASSES, *(c for _, c in REGISTRY.values())})
