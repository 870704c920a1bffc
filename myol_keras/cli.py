"""Shared command-line plumbing: absl flags with one-line usage errors (exit 2).

Each `python -m` tool owns a private `flags.FlagValues`, so several tools can
be imported (and run in-process from tests or from `main`) without clashing
flag names such as `--dataset` or `--batch_size`.

Flags are checked by absl itself (`lower_bound=`, `DEFINE_enum`, validators,
and the parsers here for fractions such as `8/255` and lists of numbers), so
a bad value fails while parsing, before TensorFlow is imported. The library
functions a tool calls raise `ValueError` / `FileNotFoundError`; `run_tool`
turns those, and absl's errors, into `prog: error: <one line>` and exit 2.
This module imports nothing from myol_keras.

Example:
```python
FLAGS = flags.FlagValues()
flags.DEFINE_string("saved_model", None, "Encoder export.", flag_values=FLAGS)

cli.require(FLAGS, "saved_model", "an encoder export, saved_models/<name>")

def _run():
    cli.call_with_flags(embed_folder, FLAGS)  # flags named after the arguments

main = cli.entry_point("myol_keras.embed", FLAGS, _run, __doc__)
```
"""

import math
import os
import sys

from absl import flags

from myol_keras.native_logs import quiet_native_stderr

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def fail(prog, message, status=2):
    """Print `prog: error: message` on one line and exit with `status`."""
    message = " ".join(str(message).split())
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def parse_flags(prog, flag_values, argv, doc=None):
    """Parse `argv` into `flag_values`; `--help` prints usage (exit 0), errors exit 2."""
    flag_values.unparse_flags()
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv[1:]):
        print((doc or prog).strip())
        print()
        print(flag_values.get_help())
        raise SystemExit(0)
    try:
        rest = flag_values(list(argv))
    except flags.Error as e:
        fail(prog, e)
    if len(rest) > 1:
        fail(prog, f"unexpected positional arguments: {' '.join(rest[1:])} (flags are written --name=value)")
    return rest


def run_tool(prog, flag_values, argv, body, doc=None):
    """Parse flags, then run `body()`; usage errors become one line and exit 2.

    `body` returns the exit status (or None for 0). `ValueError` and
    `FileNotFoundError` raised by it are usage errors.
    """
    parse_flags(prog, flag_values, sys.argv if argv is None else argv, doc)
    from absl import logging

    logging.set_verbosity(logging.ERROR)
    with quiet_native_stderr():
        import tensorflow  # noqa: F401  (the import prints native logs)
    try:
        status = body()
    except (FileNotFoundError, ValueError) as e:
        fail(prog, e)
    return 0 if status is None else status


def entry_point(prog, flag_values, body, doc=None):
    """The `main(argv=None)` of a `python -m` tool: `run_tool(prog, flag_values, argv, body, doc)`.

    Example:
    ```python
    main = cli.entry_point(PROG, FLAGS, _run, __doc__)

    if __name__ == "__main__":
        raise SystemExit(main())
    ```
    """

    def main(argv=None):
        return run_tool(prog, flag_values, argv, body, doc)

    main.__doc__ = f"Entry point of `python -m {prog}`, usable in-process: `main([prog, '--flag=value', ...])`."
    return main


def call_with_flags(function, flag_values, **overrides):
    """`function(**arguments)`, each argument taken from the flag of the same name (or `overrides`).

    The tools name their flags after the arguments of the library function they
    run, so the flags reach it without a hand-written list; arguments without a
    flag keep their defaults.
    """
    import inspect

    arguments = {name: flag_values[name].value for name in inspect.signature(function).parameters
                 if name in flag_values}
    arguments.update(overrides)
    return function(**arguments)


def parse_fraction(text, name=None):
    """`"8/255"`, `"0.03"` -> float; raises `ValueError` (naming the flag `name`, if given)."""
    text = str(text).strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        value = math.nan
    if not math.isfinite(value):
        where = f"--{name}: " if name else ""
        raise ValueError(f"{where}cannot read {text!r} as a finite number (write 0.03 or 8/255)")
    return value


class FractionParser(flags.FloatParser):
    """absl's float parser (with its bounds) that also reads fractions such as `8/255`.

    Args:
        lower_bound, upper_bound: inclusive bounds, as for `flags.DEFINE_float`.
        hint: appended to the bound in error messages.
    """

    def __init__(self, lower_bound=None, upper_bound=None, hint=""):
        super().__init__(lower_bound, upper_bound)
        if hint:
            self.syntactic_help = f"{self.syntactic_help} ({hint})"

    def convert(self, argument):
        if isinstance(argument, str):
            return parse_fraction(argument)
        return super().convert(argument)


class ListOfParser(flags.ListParser):
    """A comma-separated list whose items are parsed, and bounded, by `item_parser` (e.g. `flags.IntegerParser(1)`)."""

    def __init__(self, item_parser):
        super().__init__()
        self.item_parser = item_parser
        self.syntactic_help = f"a comma-separated list; each item {item_parser.syntactic_help}"

    def parse(self, argument):
        return [self.item_parser.parse(item) for item in super().parse(argument)]


class FractionSerializer(flags.ArgumentSerializer):
    """Writes multiples of 1/255 as `k/255` (help texts, flagfiles), other values as floats."""

    def serialize(self, value):
        if isinstance(value, (list, tuple)):
            return ",".join(self.serialize(v) for v in value)
        steps = float(value) * 255
        return f"{round(steps)}/255" if steps and abs(steps - round(steps)) < 1e-6 else repr(float(value))


def _caller():
    """The module that called our caller, named as absl's own DEFINE_* name it (for `--help`)."""
    name = sys._getframe(2).f_globals.get("__name__")
    return sys.argv[0] if name == "__main__" else name


def DEFINE_fraction(name, default, help, flag_values, *, lower_bound=None, upper_bound=None, hint=""):  # noqa: N802 (absl's naming)
    """A float flag that also accepts `a/b`, checked by absl against the bounds."""
    return flags.DEFINE(FractionParser(lower_bound, upper_bound, hint), name, default, help, flag_values,
                        FractionSerializer(), module_name=_caller())


def DEFINE_list_of(name, default, help, item_parser, flag_values):  # noqa: N802 (absl's naming)
    """A comma-separated list flag whose items `item_parser` converts and bounds."""
    serializer = FractionSerializer() if isinstance(item_parser, FractionParser) else flags.CsvListSerializer(",")
    return flags.DEFINE(ListOfParser(item_parser), name, default, help, flag_values, serializer,
                        module_name=_caller())


def require(flag_values, name, hint):
    """Make `--name` required: parsing fails with `flag --name=None: --name=... is required (hint)`."""
    flags.register_validator(name, bool, message=f"--{name}=DIR is required ({hint})", flag_values=flag_values)


def define_evaluation_flags(flag_values, export_flag, export_help, hint, *, extraction=False):
    """The flags every evaluation tool has: the export (required), the labelled data, a test-image cap.

    Args:
        flag_values: the tool's `flags.FlagValues`.
        export_flag: `saved_model` (an encoder) or `classifier`.
        export_help: its help text.
        hint: what to pass, for the "is required" error.
        extraction: also `--feature_batch_size` and `--max_train_images` (tools that extract features).
    """
    module = _caller()

    def define(kind, name, default, help, **kwargs):
        getattr(flags, f"DEFINE_{kind}")(name, default, help, flag_values=flag_values, module_name=module, **kwargs)

    define("string", export_flag, None, export_help)
    require(flag_values, export_flag, hint)
    define("string", "dataset", "", "Labelled dataset (default: the export's pre-training dataset).")
    define("string", "data_dir", None, "Data directory / file of the dataset (default: the export's, if any).")
    define("bool", "download", True, "Let tfds download a missing dataset.")
    define("integer", "max_test_images", 0, "Cap on test images (0: all).", lower_bound=0)
    if extraction:
        define("integer", "feature_batch_size", 256, "Images per call during feature extraction.", lower_bound=1)
        define("integer", "max_train_images", 0, "Cap on train images (0: all; for quick checks).", lower_bound=0)
