"""Shared command-line plumbing: absl flags with one-line usage errors (exit 2).

Each `python -m` tool owns a private `flags.FlagValues`, so several tools can
be imported (and run in-process from tests or from `main`) without clashing
flag names such as `--dataset` or `--batch_size`.

Example:
```python
FLAGS = flags.FlagValues()
flags.DEFINE_string("saved_model", None, "Encoder export.", flag_values=FLAGS)

def main(argv=None):
    return cli.run_tool("myol_keras.embed", FLAGS, argv, _run, __doc__)
```
"""

import os
import sys

from absl import flags

from myol_keras.native_logs import quiet_native_stderr

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class UsageError(ValueError):
    """A bad command line or input: one line on stderr, exit status 2."""


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

    `body` returns the exit status (or None for 0). `UsageError`,
    `FileNotFoundError` and `ValueError` raised by it are usage errors.
    """
    parse_flags(prog, flag_values, sys.argv if argv is None else argv, doc)
    from absl import logging

    logging.set_verbosity(logging.ERROR)
    with quiet_native_stderr():
        import tensorflow  # noqa: F401  (the import prints native logs)
    try:
        status = body()
    except (UsageError, FileNotFoundError, ValueError) as e:
        fail(prog, e)
    return 0 if status is None else status


def parse_fraction(text, name):
    """`"8/255"`, `"0.03"` -> float; raises UsageError naming the flag."""
    text = str(text).strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--{name}: cannot read {text!r} as a number (write 0.03 or 8/255)") from None
