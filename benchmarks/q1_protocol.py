"""What protocol Q1 is: its flags, its probe, the Q1-batch schedule, the run names, its robust and
semi-supervised settings, and which rows are Q1 rows (docs/METHODS.md §3; the protocol issue's text).

`quality.py` runs it, `q1_tables.py` tabulates its rows and `results_doc.py` writes `docs/RESULTS.md` from
them; each reads the definition here, so a change of the protocol is one change.

    >>> run_name_for("myol", 3, 25, batch_size=64)
    'q1-myol-s3-b64'
"""

import csv
from pathlib import Path

Q1_FLAGS = [
    "--dataset=npz", "--normalization=cifar10", "--image_size=32",
    "--backbone=resnet18", "--stem=cifar", "--width=16",
    "--projector_hidden_dim=2048", "--projection_dim=128", "--predictor_hidden_dim=2048",
    "--batch_size=128", "--drop_remainder=true", "--epochs=50",
    "--lr=0.025", "--lr_scaling=none", "--momentum=0.9", "--weight_decay=1e-4",
    "--warmup_epochs=10", "--warmup_mode=linear", "--lr_schedule=constant",
    "--ema=0.996", "--ema_schedule=constant", "--precision=float32",
    "--alpha=2.0", "--gamma=1.0", "--verbose=2",
    "--shuffle_buffer=0",  # today's default, passed so that a later change of the default cannot change Q1
]
PROBE = {"epochs": 100, "batch_size": 64, "lr": 0.2, "momentum": 0.9}  # the linear probe on frozen features
PRECISION_TAGS = {"float32": "float32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}  # run-name suffixes
CURVE = {"eps": (0.25, 0.5, 1.0, 2.0, 4.0), "steps": 10, "restarts": 2}  # issue 26's robustness curve, eps in /255
ROBUST_SPACES = ("pixel", "normalized_clip01")  # Q1-robust's attack spaces (docs/METHODS.md §3.4)
LABEL_FRACTIONS = (0.01, 0.1)  # Q1-semisup (docs/METHODS.md §3.2)


def run_name_for(method, seed, epochs, precision="float32", batch_size=128):
    """`q1-<method>-s<seed>`, suffixed when batch size, epochs or precision leave protocol Q1."""
    name = f"q1-{method}-s{seed}" + ("" if batch_size == 128 else f"-b{batch_size}")
    name += "" if epochs == q1_batch_schedule(batch_size)[0] else f"-e{epochs}"
    return name + ("" if precision == "float32" else f"-{PRECISION_TAGS.get(precision, precision)}")


def q1_batch_schedule(batch_size):
    """Q1-batch (docs/METHODS.md §3.5 at Q1 scale): epochs and warm-up epochs for batch `batch_size`.

    The number of iterations stays about Q1's (50 epochs at B = 128: 50 * B / 128
    epochs, rounded down) and so does the warm-up's (10 * B / 128 epochs, which
    may be fractional); the learning rate is unchanged.

    >>> q1_batch_schedule(32), q1_batch_schedule(64), q1_batch_schedule(128)
    ((12, 2.5), (25, 5.0), (50, 10.0))
    """
    return 50 * batch_size // 128, 10 * batch_size / 128


def read_history(run_dir):
    """The rows of a run directory's `history.csv` (dicts of strings), one per epoch."""
    with open(Path(run_dir) / "history.csv") as f:
        return list(csv.DictReader(f))


def batch_size_of(result):
    """A row's batch size (rows written before Q1-batch have none: 128; the random floor 0)."""
    return result.get("batch_size", 0 if result["method"] == "random" else 128)


def is_q1(result):
    """Protocol Q1 proper: float32, B = 128, 50 epochs (or the random floor)."""
    return (result.get("precision", "float32") == "float32" and batch_size_of(result) in (0, 128)
            and result["epochs"] in (0, 50))
