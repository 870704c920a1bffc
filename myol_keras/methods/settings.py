"""Each method's own settings, declared beside it without TensorFlow, collected for `PretrainConfig`.

A method module `methods/<module>.py` with hyper-parameters of its own
declares them in `methods/<module>_settings.py`: `SETTINGS`, a tuple of
`MethodSetting` (the flag's name, default, help and bounds, and the
constructor argument it feeds), and, where settings constrain each other,
`CROSS_RULES`. `myol_keras.config` collects them (`method_settings`,
`cross_rules`): each becomes a `PretrainConfig` field and a flag of the same
name, and `PretrainConfig.method_kwargs()` hands it to the method's class.

Why a module of its own and not the class's module: a method class
subclasses `keras.Model`, so importing it imports TensorFlow (~6 s), and
reading settings (`import myol_keras.config`, `--help`, a bad flag) must
not. A settings module imports nothing but this one; the method module sits
next to it, and a test checks that every declared argument is one its class
accepts, with the same default.

Example (`methods/myol_settings.py`):
```python
SETTINGS = (
    MethodSetting("alpha", 2.0, "MYOL: Beta(alpha, alpha) of the mixing coefficient.",
                  methods=("myol",), argument="alpha", above=0.0),
)
```
"""

import dataclasses
import importlib
import importlib.util
import typing


@dataclasses.dataclass(frozen=True)
class MethodSetting:
    """One setting of one or more methods: a `PretrainConfig` field, a flag and a constructor argument.

    The default's type (str, int, float) is the setting's type.

    Args:
        name: the flag and `config.json` key (unique over all methods).
        default: the flag's default; equal to the constructor's default.
        help: one-line help text of the flag.
        methods: the registered method names (`methods.REGISTRY`) it feeds.
        argument: the constructor argument of those methods' classes it feeds.
        choices: allowed values (an enum flag).
        minimum, maximum: inclusive bounds.
        above: exclusive lower bound.

    Example:
    ```python
    MethodSetting("queue_size", 4096, "MoCo: queue length K.", methods=("moco",), argument="queue_size", minimum=1)
    ```
    """

    name: str
    default: typing.Any
    help: str
    methods: tuple
    argument: str
    choices: typing.Optional[tuple] = None
    minimum: typing.Optional[float] = None
    maximum: typing.Optional[float] = None
    above: typing.Optional[float] = None

    @property
    def type(self):
        return type(self.default)


def settings_modules():
    """The `<module>_settings` modules of the registered methods, in registry order, each once."""
    from myol_keras.methods import REGISTRY

    found = []
    for module in dict.fromkeys(module for module, _ in REGISTRY.values()):
        name = f"myol_keras.methods.{module}_settings"
        if importlib.util.find_spec(name) is not None:
            found.append(importlib.import_module(name))
    return found


def method_settings():
    """Every method's `MethodSetting`s, in registry order. Raises `ValueError` for a clash or an unknown method."""
    from myol_keras.methods import REGISTRY

    settings, names = [], set()
    for module in settings_modules():
        for setting in module.SETTINGS:
            if setting.name in names:
                raise ValueError(f"{module.__name__}: setting {setting.name!r} is declared twice")
            unknown = [m for m in setting.methods if m not in REGISTRY]
            if unknown:
                raise ValueError(f"{module.__name__}: setting {setting.name!r} feeds unknown method(s) {unknown}")
            names.add(setting.name)
            settings.append(setting)
    return tuple(settings)


def cross_rules():
    """The methods' rules that tie several settings together: `(names they read, check(values) -> reason or None)`."""
    return tuple(rule for module in settings_modules() for rule in getattr(module, "CROSS_RULES", ()))


def constructor_arguments(method):
    """`{constructor argument: setting name}` of the registered method `method`."""
    return {s.argument: s.name for s in method_settings() if method in s.methods}
