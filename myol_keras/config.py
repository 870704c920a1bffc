"""`PretrainConfig`: every pre-training setting, its checks, and its JSON form.

The command line (`python -m myol_keras.main`) is generated from this class:
each field is one flag of the same name, default, help text and bounds, so a
Python script and a shell command describe a run with the same words.

```python
import myol_keras

config = myol_keras.PretrainConfig(method="myol", dataset="digits", epochs=2, width=4)
export_path = myol_keras.pretrain(config)
```

`validate()` raises `ValueError` with a one-line, actionable message for the
first bad setting it finds; it reads no data and writes nothing. What can only
be checked against the data (the image size against the stem, the batch size
against the number of images) is checked by `training.plan_run`, also before
anything is written. `config.json` in a run directory is `to_dict()` plus a
`"resolved"` section; `PretrainConfig.from_json` reads it back.

Reading settings imports no TensorFlow (docs/DECISIONS.md §3): each method's own
settings are declared beside it in a TensorFlow-free module
(`methods/<module>_settings.py`, collected by `methods.settings`), and the
choice lists that live in TensorFlow modules (datasets, normalisations,
export formats) are read when a flag is defined or a value is checked
(`choices_of`), not when this module is imported.
"""

import dataclasses
import json
import math
import os
import typing

from myol_keras import distribute
from myol_keras import precision
from myol_keras.methods import METHOD_NAMES
from myol_keras.methods import settings as method_settings
from myol_keras.schedule_choices import EMA_SCHEDULES
from myol_keras.schedule_choices import LR_SCHEDULES
from myol_keras.schedule_choices import WARMUP_MODES

BACKBONES = {"resnet18": 18, "resnet34": 34, "resnet50": 50}
STEMS = ("auto", "cifar", "64px")
AUGMENT_ON = ("host", "device")

#: settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = frozenset({
    "epochs", "verbose", "overwrite", "download", "data_dir", "cache_dir", "threads", "strategy", "augment_on",
    "steps_per_execution", "export_formats", "cluster_timeout", "monitor", "monitor_every", "monitor_knn_k",
})

#: the settings every method class takes (`BootstrapMethod`'s arguments); each method's own come from its
#: declaration (`methods.settings.constructor_arguments`).
SHARED_METHOD_ARGUMENTS = ("projector_hidden_dim", "projection_dim", "predictor_hidden_dim", "weight_decay", "seed")


def setting(default, help, *, choices=None, minimum=None, maximum=None, above=None, check=None, group=""):
    """A `PretrainConfig` field: default, help, and the bounds both the flags and `validate()` use.

    Args:
        default: the default value (today's flag default).
        help: one-line help text (the flag's).
        choices: allowed values (an enum flag), or a function returning them
            (called when a flag is defined or a value checked: for lists that
            live in modules importing TensorFlow).
        minimum: inclusive lower bound (absl `lower_bound`).
        maximum: inclusive upper bound (absl `upper_bound`).
        above: exclusive lower bound (checked by a validator).
        check: `value -> reason or None`, for rules no bound expresses.
        group: the help section the flag is listed under.
    """
    if choices is not None and not callable(choices):
        choices = tuple(choices)
    metadata = {"help": help, "choices": choices or None, "minimum": minimum,
                "maximum": maximum, "above": above, "check": check, "group": group}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choices_of(metadata):
    """The allowed values of a setting (its field's `metadata`), or None: a lazy list is read now."""
    choices = metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


def _dataset_names():
    from myol_keras.data import DATASETS

    return DATASETS


def _describe_datasets():
    """The `--dataset` help's list, generated from the data registry (which imports no TensorFlow)."""
    from myol_keras.data import describe_datasets

    return describe_datasets()


def _normalization_names():
    from myol_keras.data import NORMALIZATIONS

    return ("auto", *NORMALIZATIONS)


def _export_registry():
    """The export formats' names and checks, imported when needed: the one place naming their module."""
    from myol_keras.export import registry

    return registry


def _export_format_problem(value):
    return _export_registry().format_problem(value)


MONITORS = ("knn", "rank")


def _monitor_problem(value):
    names = [n.strip() for n in str(value).split(",") if n.strip()]
    if names in (["auto"], ["none"]):
        return None
    unknown = [n for n in names if n not in MONITORS]
    if unknown or not names:
        return f"choose auto, none or a comma-separated list of {', '.join(MONITORS)}"
    return None


def check_value(name, value, metadata):
    """The reason `value` breaks the bounds in `metadata`, or None. Used by `validate()` and the flags."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    choices = choices_of(metadata)
    if choices and value not in choices:
        return f"choose one of: {', '.join(map(str, choices))}"
    if metadata.get("above") is not None and not value > metadata["above"]:
        return f"must be > {metadata['above']:g}"
    if metadata.get("minimum") is not None and value < metadata["minimum"]:
        return f"must be >= {metadata['minimum']:g}"
    if metadata.get("maximum") is not None and value > metadata["maximum"]:
        return f"must be <= {metadata['maximum']:g}"
    if metadata.get("check") is not None:
        return metadata["check"](value)
    return None


# Reasons with more to say than the bound, keyed by setting name.
REASONS = {
    "batch_size": "too small: BatchNorm needs at least 2 images per batch; use --batch_size=2 or more (256 in the paper)",
    "lr": "the learning rate must be positive",
    "ema": "tau must be in [0, 1] (0.996 in the MYOL reference)",
    "epochs": "need at least 1 epoch",
    "steps_per_epoch": "use 0 for a full pass or a positive cap",
    "image_size": "use 0 for the dataset default or a positive size",
    "threads": "use 0 for TensorFlow's default or a positive count",
    "steps_per_execution": "must be 1 or more (1: one step per call)",
    "width": "must be a positive number of channels",
}


def reason_for(name, value):
    """Why setting `name` cannot be `value` (None if it can): the one place single-setting rules live."""
    field = _FIELDS[name]
    reason = check_value(name, value, field.metadata)
    if reason is None:
        return None
    if reason.startswith("choose one of"):
        return f"unknown value; {reason}"
    return REASONS.get(name, reason) if reason != "must be a finite number" else reason


def _faithful_warmup_has_no_cosine(values):
    if values["warmup_mode"] == "myol_faithful" and values["lr_schedule"] == "cosine":
        return ("--warmup_mode=myol_faithful reproduces the reference's constant 1.1x plateau and cannot be "
                "combined with --lr_schedule=cosine; use --warmup_mode=linear for a cosine decay")
    return None


def _sync_batchnorm_needs_replicas(values):
    if values["sync_batchnorm"] and values["strategy"] == "one_device":
        return ("--sync_batchnorm synchronises BatchNorm across replicas, but --strategy=one_device has one "
                "replica; use --strategy=mirrored or drop --sync_batchnorm")
    return None


#: the rules that tie several settings together: `(names they read, check(values) -> reason or None)`;
#: the methods' own rules come from their declarations (`methods.settings.cross_rules`).
CROSS_RULES = (
    (("warmup_mode", "lr_schedule"), _faithful_warmup_has_no_cosine),
    (("sync_batchnorm", "strategy"), _sync_batchnorm_needs_replicas),
    *method_settings.cross_rules(),
)


def cross_checks(values):
    """The reasons of the broken `CROSS_RULES` for the settings in `values` (a dict)."""
    return [reason for _, rule in CROSS_RULES if (reason := rule(values))]


def _plain_run_name(run_name):
    if run_name and (os.sep in run_name or run_name.startswith(".")):
        return f"use a plain name without '{os.sep}' and not starting with '.'"
    return None


def _with_method_settings(cls):
    """Add each method's declared settings (`methods.settings`) as fields, first in the "method" group."""
    declared = method_settings.method_settings()
    own = cls.__dict__["__annotations__"]
    clashes = [d.name for d in declared if d.name in own]
    if clashes:
        raise ValueError(f"method settings {clashes} clash with PretrainConfig settings of the same names")
    first = next(name for name in own if getattr(cls, name).metadata["group"] == "method")
    annotations = {}
    for name, kind in own.items():
        if name == first:
            for d in declared:
                annotations[d.name] = d.type
                setattr(cls, d.name, setting(d.default, d.help, choices=d.choices, minimum=d.minimum,
                                             maximum=d.maximum, above=d.above, group="method"))
        annotations[name] = kind
    cls.__annotations__ = annotations
    return cls


@dataclasses.dataclass
@_with_method_settings
class PretrainConfig:
    """Every setting of a pre-training run; the defaults are the command line's.

    Args (grouped as in `--help`; each is the flag of the same name):
        method, dataset, data_dir, download, normalization, cache_dir,
            image_size: what to train on (`image_size=0`: the dataset's
            default; `cache_dir=""`: `data.cache.default_cache_dir()`).
        backbone, width, stem, projector_hidden_dim, projection_dim,
            predictor_hidden_dim: the network.
        alpha, gamma (MYOL), unmix_prob, ..., ema, ema_schedule: the
            method's hyper-parameters. Each method's own settings (MYOL's
            alpha and gamma, MoCo's queue_size, ...) are declared beside it
            in `methods/<module>_settings.py`, together with the constructor
            argument each feeds (`method_kwargs()`); ema and ema_schedule
            drive `EMATargetUpdate`.
        batch_size, drop_remainder, epochs, steps_per_epoch, lr, lr_scaling,
            weight_decay, momentum, warmup_epochs, warmup_mode, lr_schedule:
            optimisation.
        precision, jit_compile, augment_on, steps_per_execution, strategy,
            sync_batchnorm, seed, deterministic, shuffle_buffer, threads,
            verbose: execution.
        run_name, run_dir, export_dir, overwrite, export_formats: outputs.

    Example:
    ```python
    config = PretrainConfig(method="byol", dataset="npz", data_dir="data.npz", epochs=5)
    config.validate()
    config.to_json("byol.json"); PretrainConfig.from_json("byol.json")
    ```
    """

    # --- what to train on -------------------------------------------------------
    method: str = setting("myol", "Pre-training method (ccsl and cssl are RECONSTRUCTIONS with theta+=0.8, theta-=0.2, "
                          "not the official losses; see docs/METHODS.md).", choices=METHOD_NAMES, group="data")
    dataset: str = setting("digits", f"Dataset: {_describe_datasets()}.", choices=_dataset_names, group="data")
    data_dir: typing.Optional[str] = setting(None, "tfds data directory, or the local file/folder of npz, folder, "
                                             "stl10_binary, tiny_imagenet.", group="data")
    download: bool = setting(True, "Let tfds download a dataset that is not prepared yet.", group="data")
    normalization: str = setting("auto", "Mean/std: 'auto' (the dataset's own) or a named set.",
                                 choices=_normalization_names, group="data")
    cache_dir: str = setting("", "Where the decoded images of folder, tiny_imagenet, stl10_binary and npz data are "
                             "cached (built once with a progress line, then memory-mapped by later runs and the "
                             "evaluations); empty: $MYOL_KERAS_CACHE_DIR, else ~/.cache/myol_keras.", group="data")
    image_size: int = setting(0, "Training image size in pixels (0: the dataset's default, e.g. 32 CIFAR, 64 STL-10).",
                              minimum=0, group="data")
    # --- network ----------------------------------------------------------------
    backbone: str = setting("resnet18", "ResNet v1.5 depth.", choices=BACKBONES, group="network")
    width: int = setting(64, "Channels of the first ResNet stage (64 = standard; 8-16 for tiny test models).",
                         minimum=1, group="network")
    stem: str = setting("auto", "ResNet stem: cifar (3x3 s1, no max-pool), 64px (with max-pool); auto: 64px for "
                        "images >= 64 px.", choices=STEMS, group="network")
    projector_hidden_dim: int = setting(2048, "Projector MLP hidden width.", minimum=1, group="network")
    projection_dim: int = setting(128, "Projection / prediction size.", minimum=1, group="network")
    predictor_hidden_dim: int = setting(2048, "Predictor MLP hidden width.", minimum=1, group="network")
    # --- method (each method's own settings are inserted first: `_with_method_settings`) --
    ema: float = setting(0.996, "Base EMA momentum tau of the target network.", minimum=0.0, maximum=1.0, group="method")
    ema_schedule: str = setting("constant", "tau constant (MYOL reference) or cosine to 1 (BYOL paper).",
                                choices=EMA_SCHEDULES, group="method")
    # --- optimisation -------------------------------------------------------------
    batch_size: int = setting(256, "Global batch size.", minimum=2, group="optimisation")
    drop_remainder: bool = setting(True, "Drop the last partial batch (a batch of one breaks BatchNorm).",
                                   group="optimisation")
    epochs: int = setting(500, "Pre-training epochs.", minimum=1, group="optimisation")
    steps_per_epoch: int = setting(0, "Cap on steps per epoch (0: one pass over the data).", minimum=0,
                                   group="optimisation")
    lr: float = setting(0.05, "Learning rate (absolute; see --lr_scaling).", above=0.0, group="optimisation")
    lr_scaling: str = setting("none", "linear: multiply --lr by batch_size/256.", choices=("none", "linear"),
                              group="optimisation")
    weight_decay: float = setting(1e-4, "Coupled L2 weight decay on every parameter (torch SGD semantics).",
                                  minimum=0.0, group="optimisation")
    momentum: float = setting(0.9, "SGD momentum.", minimum=0.0, maximum=1.0, group="optimisation")
    warmup_epochs: float = setting(10.0, "Warm-up epochs (may be fractional: W = warmup_epochs * steps per epoch).",
                                   minimum=0.0, group="optimisation")
    warmup_mode: str = setting("linear", "linear: to --lr; myol_faithful: the reference's warm-up to a 1.1x plateau.",
                               choices=WARMUP_MODES, group="optimisation")
    lr_schedule: str = setting("constant", "After the warm-up: constant (MYOL reference) or cosine to 0.",
                               choices=LR_SCHEDULES, group="optimisation")
    # --- execution ----------------------------------------------------------------
    precision: str = setting("auto", "auto: mixed_float16 on GPU, mixed_bfloat16 on CPUs with native bf16, else float32.",
                             choices=precision.PRECISIONS, group="execution")
    jit_compile: bool = setting(False, "Compile the training step with XLA (for GPUs/TPUs; about 2x slower on the CPUs "
                                "measured, docs/PERFORMANCE.md).", group="execution")
    augment_on: str = setting("host", "Where the views are computed: host (tf.data CPU threads) or device (inside the "
                              "training step, e.g. on the GPU).", choices=AUGMENT_ON, group="execution")
    steps_per_execution: int = setting(1, "Training steps per tf.function call (fewer host round trips, mainly for "
                                       "GPUs); the EMA then runs inside the step, so results are unchanged. Must "
                                       "divide the steps per epoch.", minimum=1, group="execution")
    strategy: str = setting("auto", "tf.distribute strategy: auto (mirrored over several GPUs, else one device), "
                            "one_device, mirrored (all local GPUs, or the logical CPUs), multi_worker "
                            "(MultiWorkerMirroredStrategy from TF_CONFIG). --batch_size is the global batch.",
                            choices=distribute.STRATEGIES, group="execution")
    cluster_timeout: int = setting(300, "Seconds every worker of a --strategy=multi_worker cluster has to arrive; "
                                   "then the others stop with one line naming the missing ones.", minimum=1,
                                   group="execution")
    sync_batchnorm: bool = setting(False, "Synchronised BatchNorm: statistics over the global batch across replicas "
                                   "(under --strategy=mirrored/multi_worker).", group="execution")
    seed: int = setting(0, "Random seed (weights, augmentation, mixing).", minimum=0, group="execution")
    deterministic: bool = setting(False, "Runs that repeat bit for bit: TensorFlow op determinism and, from the command "
                                         "line, oneDNN's CPU kernels off (slower).", group="execution")
    shuffle_buffer: int = setting(0, "0: every epoch is a full permutation of the data set, drawn from (seed, epoch) "
                                  "(indices are shuffled, then batches gathered). N > 1: the previous pipeline, a "
                                  "tf.data shuffle buffer of N images in source order (local: class-clustered batches "
                                  "on class-sorted folders; all images in memory), kept to resume runs started with "
                                  "it (they recorded 10000). 1: source order.", minimum=0, group="execution")
    threads: int = setting(0, "CPU threads for TensorFlow ops (intra- and inter-op); 0: TensorFlow's default.",
                           minimum=0, group="execution")
    verbose: int = setting(1, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.",
                           minimum=0, maximum=2, group="execution")
    # --- monitoring ---------------------------------------------------------------
    monitor: str = setting("auto", "Online monitors during training, in history.csv and TensorBoard: comma-separated "
                           "knn (kNN top-1 of the online encoder on a fixed labelled subsample: 512 training images "
                           "as the bank, 256 test images as queries), rank (std of the l2-normalised embeddings and "
                           "RankMe on a fixed batch, with a collapse warning); auto: knn,rank when the data set has "
                           "labels, else rank; none: off.", check=_monitor_problem, group="monitoring")
    monitor_every: int = setting(1, "Run the monitors every N epochs (and after the last).", minimum=1,
                                 group="monitoring")
    monitor_knn_k: int = setting(20, "Neighbours of the kNN monitor (its bank holds about 51 images per class on "
                                 "10 classes, so k stays well below a class's share of the bank).", minimum=1,
                                 group="monitoring")
    # --- outputs ------------------------------------------------------------------
    run_name: str = setting("", "Run name (default: derived from method, dataset, backbone, size, batch, seed).",
                            check=_plain_run_name, group="outputs")
    run_dir: str = setting("runs", "Parent directory of run directories.", group="outputs")
    export_dir: str = setting("saved_models", "Export root: the encoder goes to <export_dir>/<run_name>/<version>/.",
                              group="outputs")
    overwrite: bool = setting(False, "Start the run again even if its run directory holds a finished or partial run.",
                              group="outputs")
    export_formats: str = setting("saved_model", "Comma-separated export formats, written side by side in the version "
                                  "directory: saved_model (always written), onnx (model.onnx, for ONNX Runtime / "
                                  "Triton), litert (model.tflite, for phones); onnx and litert need "
                                  "pip install \"myol_keras[export]\" and take a fixed input size.",
                                  check=_export_format_problem, group="outputs")

    # --- checks ---------------------------------------------------------------------

    def validate(self):
        """Raise `ValueError` (one line) for the first unusable setting; returns self. Writes nothing."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = annotation_type(field)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, field.name, value)
            if value is None and field.default is None:
                continue
            if expected is not None and not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(f"--{field.name}={value!r}: expected {expected.__name__}")
            reason = reason_for(field.name, value)
            if reason:
                raise ValueError(f"--{field.name}={value!r}: {reason}")
        for reason in cross_checks(dataclasses.asdict(self)):
            raise ValueError(reason)
        distribute.validate_strategy(self.strategy)
        formats = _export_registry()
        try:  # before training: a missing converter must not surface after the last epoch
            formats.check_dependencies([f for f in formats.parse_formats(self.export_formats) if f != "saved_model"])
        except formats.MissingDependencyError as e:
            raise formats.MissingDependencyError(f"--export_formats={self.export_formats}: {e}") from None
        from myol_keras import rundir

        rundir.check_writable_directory(self.run_dir, "--run_dir")
        rundir.check_writable_directory(self.export_dir, "--export_dir")
        return self

    # --- what the settings mean -----------------------------------------------------------

    @property
    def depth(self):
        """The ResNet depth of `backbone`."""
        return BACKBONES[self.backbone]

    def method_kwargs(self):
        """Constructor arguments of the method class (besides the backbone)."""
        kwargs = {name: getattr(self, name) for name in SHARED_METHOD_ARGUMENTS}
        arguments = method_settings.constructor_arguments(self.method)
        kwargs.update({argument: getattr(self, name) for argument, name in arguments.items()})
        return kwargs

    def learning_rate(self):
        """`lr`, times batch_size / 256 with `lr_scaling="linear"`."""
        return self.lr * (self.batch_size / 256.0 if self.lr_scaling == "linear" else 1.0)

    def default_run_name(self, image_size):
        return self.run_name or f"{self.method}-{self.dataset}-{self.backbone}w{self.width}-{image_size}px-b{self.batch_size}-s{self.seed}"

    def changed_from(self, saved):
        """Settings (not in `RESUMABLE_CHANGES`) whose value differs from the `saved` dict."""
        mine = self.to_dict()
        return sorted(k for k, v in mine.items() if k not in RESUMABLE_CHANGES and k in saved and saved[k] != v)

    # --- JSON -------------------------------------------------------------------------------

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """A config from a dict; unknown names are an error (a typo must not pass silently)."""
        values = {k: v for k, v in dict(values).items() if k != "resolved"}
        unknown = sorted(set(values) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; see PretrainConfig for the names")
        return cls(**values)

    def to_json(self, path):
        from myol_keras import rundir

        return rundir.atomic_write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path):
        """Read a config written by `to_json`, or a run directory's `config.json`."""
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def annotation_type(field):
    """The Python type of a setting: str, int, float or bool (Optional[...] unwrapped)."""
    annotation = field.type
    if isinstance(annotation, str):
        annotation = {"str": str, "int": int, "float": float, "bool": bool}.get(annotation)
    if typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation if annotation in (str, int, float, bool) else None


_FIELDS = {f.name: f for f in dataclasses.fields(PretrainConfig)}


def fields():
    """The settings, in definition order (`dataclasses.Field`s with help and bounds in `metadata`)."""
    return list(_FIELDS.values())
