"""The export formats: one `ExportFormat` record each, registered by name. Imports no TensorFlow.

The SavedModel is always written (TF Serving, the evaluations and
`load_backbone` read it). Every other format is a file beside it in the same
version directory, described by one record: its file name, the packages that
convert to it and run it, its converter, its runner and what its metadata
entry says. The built-in records live in `myol_keras.export.onnx` and
`myol_keras.export.litert` and are registered the first time the registry is
read; a plug-in adds its own with `register_format`:

```python
from myol_keras.export import ExportFormat, register_format

register_format(ExportFormat(name="npy_probe", file_name="probe.npy", converter=write_probe,
                             runner=ProbeRunner, runtime="numpy"))
myol_keras.export_encoder(backbone, "saved_models/run", image_size=32, mean=mean, std=std,
                          formats="saved_model,npy_probe")
```

`FORMATS` is a live, tuple-like view of the names (`"saved_model"` first,
then the built-in formats, then plug-ins in the order they were registered),
so `--export_formats` accepts a plug-in registered before the configuration
is validated.
"""

import collections.abc
import dataclasses
import importlib
import importlib.util
import typing

import numpy as np

SAVED_MODEL = "saved_model"
INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
INSTALL_HINT = 'pip install "myol_keras[export]"'
#: the modules whose `FORMAT` records are registered before any plug-in, in this order.
BUILTIN_MODULES = ("myol_keras.export.onnx", "myol_keras.export.litert")


class MissingDependencyError(ImportError, ValueError):
    """A format whose optional packages are not installed; the message names `pip install "myol_keras[export]"`.

    An `ImportError`, and a `ValueError` so the command-line tools report it in one line.
    """


class ConversionError(RuntimeError):
    """A converter that returned a file the runtime cannot use (e.g. TensorFlow ops left untranslated)."""


def _no_description():
    return None


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One export format written beside the SavedModel: its file, packages, converter, runner and metadata.

    The export (`export_encoder`, `add_formats`) calls
    `converter(model, serve, input_spec, path)` inside its temporary
    directory, then `runner(path)(probe)` on a probe batch, and keeps the file
    only if its embeddings equal the SavedModel's.

    Args:
        name: the name in `--export_formats` and `embed --format` (lower case, no comma).
        file_name: the file written into the version directory (e.g. `model.onnx`).
        converter: `(model, serve, input_spec, path) -> None`, writing the file at `path`.
            `serve` maps uint8 images `[batch, S, S, 3]` (`input_spec`, a `tf.TensorSpec`
            named `images` with S fixed) to `{"embedding": float32 [batch, D]}`, the
            preprocessing inside; `model` is the float32 Keras encoder `serve` calls.
            Import heavy packages inside it, not at module level.
        runner: `(path) -> callable`, the callable mapping uint8 images
            `[batch, S, S, 3]` to float32 embeddings `[batch, D]`, with an
            `input_size` attribute (S).
        packages: {import name: pip name} converting needs (looked up, not imported).
        runtime_packages: {import name: pip name} running the file needs.
        runtime: what runs the file, for the metadata (e.g. `"onnxruntime"`).
        describe_converter: `() -> str`, the converter and its version for the
            metadata (called after a successful conversion); None: not recorded.
        metadata: further fixed facts for the format's metadata entry (e.g. `{"opset": 17}`).
        install_hint: how to install the packages (the end of `MissingDependencyError`).

    Example:
    ```python
    register_format(ExportFormat(name="npy_probe", file_name="probe.npy", converter=write_probe,
                                 runner=ProbeRunner, runtime="numpy"))
    ```
    """

    name: str
    file_name: str
    converter: typing.Callable
    runner: typing.Callable
    packages: typing.Mapping[str, str] = dataclasses.field(default_factory=dict)
    runtime_packages: typing.Mapping[str, str] = dataclasses.field(default_factory=dict)
    runtime: str = ""
    describe_converter: typing.Callable[[], typing.Optional[str]] = _no_description
    metadata: typing.Mapping[str, typing.Any] = dataclasses.field(default_factory=dict)
    install_hint: str = INSTALL_HINT

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip().lower() \
                or "," in self.name or self.name == SAVED_MODEL:
            raise ValueError("Expected `name` to be a lower-case word without commas, other than 'saved_model'. "
                             f"Received: name={self.name!r}")
        if not isinstance(self.file_name, str) or not self.file_name or "/" in self.file_name \
                or self.file_name.startswith("."):
            raise ValueError("Expected `file_name` to be a plain file name (no directory, not hidden). "
                             f"Received: file_name={self.file_name!r}")
        for field in ("converter", "runner", "describe_converter"):
            if not callable(getattr(self, field)):
                raise ValueError(f"Expected `{field}` to be callable. Received: {field}={getattr(self, field)!r}")

    def converter_description(self):
        """The converter and its version for the metadata, or None."""
        return self.describe_converter()


_records = {}  # name -> ExportFormat, built-in formats first
_builtins_loaded = False


def _registry():
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        builtin = {}
        for module in BUILTIN_MODULES:
            record = importlib.import_module(module).FORMAT
            builtin[record.name] = record
        plugins = dict(_records)
        _records.clear()
        _records.update(builtin)
        _records.update(plugins)
    return _records


def register_format(record, *, replace=False):
    """Add `record` (an `ExportFormat`) to the formats `export_encoder` and `--export_formats` accept.

    Args:
        record: the `ExportFormat`.
        replace: allow replacing a registered format of the same name (it keeps its place).

    Raises:
        ValueError: not an `ExportFormat`, its name is taken, or its file name is another format's.

    Example:
    ```python
    register_format(ExportFormat(name="npy_probe", file_name="probe.npy", converter=write_probe,
                                 runner=ProbeRunner))
    ```
    """
    if not isinstance(record, ExportFormat):
        raise ValueError(f"Expected an ExportFormat. Received: record={record!r}")
    records = _registry()
    if record.name in records and not replace:
        raise ValueError(f"export format {record.name!r} is already registered; pass replace=True to replace it")
    clash = [r.name for r in records.values() if r.file_name == record.file_name and r.name != record.name]
    if clash:
        raise ValueError(f"export format {record.name!r} would write {record.file_name}, the file of {clash[0]!r}")
    records[record.name] = record
    return record


def unregister_format(name):
    """Remove the registered format `name` (a plug-in's, typically); raises `ValueError` if there is none."""
    records = _registry()
    if name not in records:
        raise ValueError(f"Expected a registered export format, one of {', '.join(records)}. Received: name={name!r}")
    return records.pop(name)


def get_format(name):
    """The `ExportFormat` registered as `name`.

    Raises:
        ValueError: no file format of that name (the SavedModel has no record).
    """
    records = _registry()
    if name not in records:
        raise ValueError(f"Expected a format with a file runner, one of {', '.join(records)}. Received: fmt={name!r}")
    return records[name]


def file_formats():
    """The registered `ExportFormat` records, in `FORMATS` order."""
    return tuple(_registry().values())


class _FormatNames(collections.abc.Sequence):
    """`("saved_model", <registered format names>...)`, read at each use (so it sees plug-ins)."""

    def _names(self):
        return (SAVED_MODEL, *_registry())

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self):
        return len(self._names())

    def __contains__(self, name):
        return name in self._names()

    def __eq__(self, other):
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, list, _FormatNames)) else other)

    def __hash__(self):
        return hash(self._names())

    def __repr__(self):
        return repr(self._names())


#: every format name, `saved_model` first: a live view of the registry (`tuple(FORMATS)` for a snapshot).
FORMATS = _FormatNames()


def parse_formats(formats):
    """`"saved_model,onnx"` or a sequence of names -> a tuple in `FORMATS` order, `saved_model` always first.

    The SavedModel is always written: TF Serving, the evaluations and
    `load_backbone` read it, and the other formats are checked against it.

    Raises:
        ValueError: an unknown or empty name.
    """
    names = [n.strip() for n in formats.split(",")] if isinstance(formats, str) else [str(n).strip() for n in formats]
    reason = format_problem(names)
    if reason:
        raise ValueError(f"Expected export formats from {', '.join(FORMATS)}. Received: formats={formats!r} ({reason})")
    return tuple(f for f in FORMATS if f == SAVED_MODEL or f in names)


def format_problem(names):
    """Why `names` (a list, or a comma-separated string) are not export formats, or None."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        shown = ", ".join(repr(n) for n in unknown)
        return f"unknown export format {shown}; choose from: {', '.join(FORMATS)} (comma-separated)"
    return None


def check_dependencies(formats, runtime_only=False):
    """Raise `MissingDependencyError` unless the packages of every format in `formats` are installed.

    Looks the packages up without importing them. Exporting needs the converter
    and the runtime (each file is checked against the SavedModel when written);
    running a file needs the runtime only (`runtime_only=True`).
    """
    for fmt in formats:
        if fmt == SAVED_MODEL:
            continue
        record = get_format(fmt)
        needed = {**({} if runtime_only else record.packages), **record.runtime_packages}
        missing = [pip_name for module, pip_name in needed.items() if importlib.util.find_spec(module) is None]
        if missing:
            action = "running" if runtime_only else "exporting to"
            raise MissingDependencyError(
                f"{action} {fmt} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                f"installed: {record.install_hint}")


def import_package(module, fmt, runtime_only=False):
    """`importlib.import_module(module)` after `check_dependencies([fmt])`: a converter's or runner's lazy import."""
    check_dependencies([fmt], runtime_only=runtime_only)
    return importlib.import_module(module)


def load_runner(fmt, path):
    """A callable running the `fmt` file at `path` (e.g. `OnnxRunner`, `LiteRTRunner`).

    Raises:
        ValueError: `fmt` is not a registered file format.
        MissingDependencyError: its runtime is not installed.
    """
    record = get_format(fmt)
    return record.runner(path)


def check_images(images, size):
    """`images` as a uint8 array `[batch, size, size, 3]`; raises `ValueError` naming the fixed size otherwise."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"Expected uint8 images shaped [batch, {size}, {size}, 3] (the file's fixed input size). "
                         f"Received: {images.dtype} images of shape {images.shape}")
    return images


def probe_images(input_size, batch=2, seed=0):
    """The uint8 probe batch `[batch, S, S, 3]` every file is run on and compared with the SavedModel at export."""
    return np.random.default_rng(seed).integers(0, 256, size=(batch, input_size, input_size, 3), dtype=np.uint8)
