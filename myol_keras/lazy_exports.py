"""Packages whose public names are imported on first use (PEP 562), so that importing one is cheap.

`myol_keras.data` and `myol_keras.export` re-export their modules' public names this way: reading the
dataset or format names imports no TensorFlow, using a loader or an exporter does.

Example:
```python
# in a package's __init__.py
__getattr__, __dir__ = lazy_exports.attach(__name__, {"load_thing": "things"}, ("things",), globals())
```
"""

import importlib


def attach(package, exports, submodules, namespace):
    """The `(__getattr__, __dir__)` pair of a package that imports its names on first use.

    Args:
        package: the package's `__name__`.
        exports: {public name: submodule that defines it}.
        submodules: submodule names reachable as attributes (`package.submodule`).
        namespace: the package's `globals()`: a name, once imported, is stored there.
    """

    def __getattr__(name):
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(exports) | set(submodules))

    return __getattr__, __dir__
