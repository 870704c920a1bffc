"""Protocol Q1: pre-train on the shared CIFAR-10 subset, then linear-probe.

    python benchmarks/quality.py --methods=byol,myol --seeds=0,1,2 --jobs=2

Q1 (the quality-benchmark issue; `../shared/benchmarks/REFERENCE.md` has the
official MYOL code's figures under the same protocol):

* data: `../shared/data/cifar10_subset.npz` (4,660 train / 932 test images),
  CIFAR-10 normalisation, the MYOL view recipe at 32 px;
* ResNet-18 v1.5, CIFAR stem, width 16 (128-d features); heads 2048 -> 128;
* batch 128 (last partial batch dropped), 50 epochs, SGD lr 0.025, momentum
  0.9, coupled L2 1e-4, linear warm-up over 10 epochs then constant, EMA tau
  0.996 constant, float32, MYOL alpha=2 gamma=1;
* linear probe on frozen inference-mode features of the un-augmented
  normalised images: Dense with bias, SGD 0.2 Nesterov momentum 0.9, cosine
  over 100 epochs per step, batch 64 reshuffled each epoch, no weight decay;
  the last-epoch top-1 on the 932 test images.

Q1-batch (`--batch_sizes=32,64,128`, docs/METHODS.md §3.5 at this scale): 50·B/128
epochs and 10·B/128 warm-up epochs at the same learning rate.

Q1-robust and Q1-semisup (`--protocols=robust,semisup`) use the B = 128
encoders of the runs `q1-<method>-s<seed>` (their run directories under
`--work_dir`; `--encoders_only` trains missing ones without probing):

* robust: the Q1 probe above, then FGSM 4/255 and 8/255 and PGD (eps 4/255,
  alpha = eps, 8 and 16 steps, random start keyed on the run's seed) on all
  932 test images (docs/METHODS.md §3.4), in the `pixel` and `normalized_clip01`
  attack spaces, against pixels -> CIFAR-10 normalisation -> encoder
  (inference mode) -> probe; rows in `--robust_output`;
* semisup: docs/METHODS.md §3.2 fine-tuning on 1 % and 10 % of the labels
  (class-balanced, seeded), 20 epochs, batch 32, flip only; rows in
  `--semisup_output`.

Every finished run is appended to `--output` (JSON) and skipped when the
script runs again, so runs accumulate across sessions. `--jobs=2` runs two
runs side by side with one thread each (the best use of 2 cores). The
method `random` is the floor: a randomly initialised encoder, probed.

This script runs the protocol; `q1_protocol.py` beside it defines it (flags,
probe, schedules, run names) and `q1_tables.py` prints and plots the rows.
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure the checkout this script is in, not whichever copy pip installed
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "cifar10_subset.npz"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # q1_protocol.py and q1_tables.py, beside this script

from q1_protocol import CURVE, LABEL_FRACTIONS, PRECISION_TAGS, PROBE, Q1_FLAGS, ROBUST_SPACES  # noqa: E402
from q1_protocol import batch_size_of, q1_batch_schedule, read_history, run_name_for  # noqa: E402
from q1_tables import (batch_size_table, markdown_table, plot_batch_sizes, plot_results, plot_robust,  # noqa: E402
                       reference_comparison, robust_table, semisup_table)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def linear_probe(train_x, train_y, test_x, test_y, num_classes, seed, epochs=PROBE["epochs"], return_classifier=False,
                 return_predictions=False):
    """Q1's linear probe on cached features.

    Returns (top-1 %, top-5 %), then the trained classifier if asked, then the
    predicted class of every test image (int array) if asked.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from myol_keras.heads import torch_linear_bias_initializer, torch_linear_kernel_initializer

    keras.utils.set_random_seed(seed)
    steps_per_epoch = math.ceil(len(train_x) / PROBE["batch_size"])
    total = steps_per_epoch * epochs
    schedule = keras.optimizers.schedules.CosineDecay(PROBE["lr"], decay_steps=total, alpha=0.0)
    classifier = keras.Sequential([
        keras.Input((train_x.shape[1],)),
        keras.layers.Dense(
            num_classes,
            kernel_initializer=torch_linear_kernel_initializer(),
            bias_initializer=torch_linear_bias_initializer(train_x.shape[1]),
        ),
    ])
    classifier.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=PROBE["momentum"], nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    ds = (
        tf.data.Dataset.from_tensor_slices((train_x, train_y))
        .shuffle(len(train_x), seed=seed, reshuffle_each_iteration=True)
        .batch(PROBE["batch_size"])
    )
    classifier.fit(ds, epochs=epochs, verbose=0, shuffle=False)
    logits = classifier.predict(test_x, batch_size=512, verbose=0)
    top1 = float(np.mean(np.argmax(logits, 1) == test_y) * 100)
    top5 = float(np.mean(np.any(np.argsort(-logits, 1)[:, :5] == test_y[:, None], 1)) * 100)
    out = (top1, top5) + ((classifier,) if return_classifier else ())
    return out + ((np.argmax(logits, 1),) if return_predictions else ())


def cifar10_stats():
    """Q1's normalisation: the CIFAR-10 (mean, std) as float32 arrays."""
    import numpy as np

    from myol_keras.data import NORMALIZATIONS

    return tuple(np.asarray(v, "float32") for v in NORMALIZATIONS["cifar10"])


def q1_features(backbone, images):
    """Inference-mode features of un-augmented uint8 images, normalised as in Q1, in batches of 256."""
    import numpy as np

    mean, std = cifar10_stats()
    out = []
    for i in range(0, len(images), 256):
        batch = (images[i:i + 256].astype("float32") / 255.0 - mean) / std
        out.append(backbone(batch, training=False).numpy())
    return np.concatenate(out)


def probe_backbone(backbone, data_path, seed, epochs=PROBE["epochs"], return_classifier=False, return_predictions=False):
    """Features of the un-augmented, normalised images (inference mode), then the probe (see `linear_probe`)."""
    import numpy as np

    arrays = np.load(data_path)
    train_y = arrays["y_train"].astype("int64").ravel()
    test_y = arrays["y_test"].astype("int64").ravel()
    return linear_probe(q1_features(backbone, arrays["x_train"]), train_y, q1_features(backbone, arrays["x_test"]), test_y,
                        10, seed, epochs, return_classifier=return_classifier, return_predictions=return_predictions)


def worker(method, seed, data_path, work_dir, threads, epochs, probe_epochs, precision="float32", steps_per_epoch=0,
           batch_size=128, encoder_only=False, robust_curve=None):
    """Train one run through the CLI (resumable), probe its export; print a JSON result line.

    With `encoder_only` the run is trained (or found finished) and not probed:
    the robustness and semi-supervised protocols need the encoders of runs whose
    Q1 row is already in the JSON (run directories are gitignored scratch).
    With `robust_curve` (a dict of `robust_curve_run` keywords) the row also
    holds the pixel-space robustness curve of the same encoder and probe.

    The row carries its provenance (`provenance.py`: commit, versions, data
    hash, CPU, load, the command), the run's resolved `config.json`, the CLI
    arguments it was trained with and the probe's prediction for every test image.
    """
    load_at_start = _provenance().load_average()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from myol_keras import export
    from myol_keras import main as cli

    run_name = run_name_for(method, seed, epochs, precision, batch_size) + ("-smoke" if steps_per_epoch else "")
    start = time.time()
    images_per_second = None
    history = None
    if method == "random":
        import keras

        from myol_keras.backbones import ResNet

        keras.utils.set_random_seed(seed)
        backbone = ResNet(depth=18, stem="cifar", width=16)
        pretrain_seconds = seconds_of_steps = 0.0
    else:
        argv = ["myol_keras.main", f"--method={method}", f"--data_dir={data_path}", *Q1_FLAGS,
                f"--epochs={epochs}", f"--batch_size={batch_size}", f"--warmup_epochs={q1_batch_schedule(batch_size)[1]}",
                f"--seed={seed}", f"--threads={threads}", f"--precision={precision}", f"--steps_per_epoch={steps_per_epoch}",
                f"--run_dir={work_dir}/runs", f"--export_dir={work_dir}/saved_models", f"--run_name={run_name}"]
        cli.main(argv)
        pretrain_seconds = time.time() - start
        run_dir = Path(work_dir) / "runs" / run_name
        with open(run_dir / "config.json") as f:
            run_config = json.load(f)
        rows = read_history(run_dir)
        speeds = [float(r["images_per_second"]) for r in rows[1:] if r.get("images_per_second")]
        images_per_second = sum(speeds) / len(speeds) if speeds else None
        seconds_of_steps = train_seconds(rows, run_config["resolved"]["steps_per_epoch"], run_config["batch_size"])
        # The run directories live in the gitignored work dir; the loss curve travels in the JSON.
        history = {"loss": [round(float(r["loss"]), 6) for r in rows if r.get("loss")]}
        with open(run_dir / "DONE") as f:
            export_path = json.load(f)["export"]
        if encoder_only:
            print("Q1ENCODER " + json.dumps({"method": method, "seed": seed, "batch_size": batch_size, "export": export_path,
                                             "pretrain_seconds": round(pretrain_seconds, 1)}), flush=True)
            return
        backbone = export.load_backbone(export_path)
    probe_start = time.time()
    top1, top5, classifier, predictions = probe_backbone(backbone, data_path, seed, probe_epochs, return_classifier=True,
                                                         return_predictions=True)
    probe_seconds = round(time.time() - probe_start, 1)
    curve = None
    if robust_curve is not None:
        curve = robust_curve_run(backbone, classifier, data_path, seed, **robust_curve)
    result = {
        "method": method, "seed": seed, "epochs": epochs if method != "random" else 0,
        "batch_size": batch_size if method != "random" else 0,
        "top1": top1, "top5": top5,
        "pretrain_seconds": round(pretrain_seconds, 1),
        "train_seconds": round(seconds_of_steps, 1),
        "probe_seconds": probe_seconds,
        "images_per_second": images_per_second, "threads": threads,
        "cpu": cpu_model(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "run_name": run_name, "precision": precision,
        "predictions": "".join(str(int(p)) for p in predictions),
    }
    if history:
        result["history"] = history
    if curve is not None:
        result["robust_curve"] = curve
    result["provenance"] = row_provenance(data_path, load_at_start,
                                          json.loads(os.environ.get("MYOL_Q1_COMMAND", "null")) or sys.argv)
    if method != "random":
        result["provenance"]["cli_argv"] = argv[1:]
        result["provenance"]["config"] = run_config
    print("Q1RESULT " + json.dumps(result), flush=True)


def train_seconds(history_rows, steps_per_epoch, batch_size):
    """Seconds spent in training steps, summed over every epoch of a run's history.

    The driver's wall clock (`pretrain_seconds`) covers only the process that
    finished the run: a run resumed after epoch k loses its first k epochs. Each
    history row holds its epoch's images/s (`callbacks.Throughput`), so
    steps x batch / (images/s) is that epoch's seconds, whichever process trained
    it. The epoch-end monitors and checkpoint writes are not counted.

    Args:
        history_rows: the rows of the run's `history.csv` (dicts), one per epoch.
        steps_per_epoch: optimizer steps per epoch (the resolved value in `config.json`).
        batch_size: global batch size.

    Example:
    >>> train_seconds([{"images_per_second": "100"}, {"images_per_second": "50"}], 10, 20)
    6.0
    """
    missing = [i for i, r in enumerate(history_rows) if not r.get("images_per_second")]
    if missing or not history_rows:
        raise ValueError(f"history has no images_per_second for epoch(s) {missing or 'any'}")
    return sum(steps_per_epoch * batch_size / float(r["images_per_second"]) for r in history_rows)


def run_train_seconds(run_dir):
    """`train_seconds` of a finished run directory (its `history.csv` and `config.json`)."""
    with open(Path(run_dir) / "config.json") as f:
        config = json.load(f)
    return train_seconds(read_history(run_dir), config["resolved"]["steps_per_epoch"], config["batch_size"])


def short_q1_run(method, data_path, work_dir, run_name, *, epochs, steps_per_epoch, seed, threads=1, extra=()):
    """Train the first `epochs` epochs of a Q1 run through the CLI, in this process; return its history rows.

    For the short measurements (`step_cost.py`, `suncet_diagnosis.py`): Q1's flags, no monitors,
    `steps_per_epoch` steps per epoch (0: Q1's 36), `extra` CLI flags last. Raises `RuntimeError` if the
    CLI exits non-zero.
    """
    from myol_keras import main as cli

    argv = ["myol_keras.main", f"--method={method}", f"--data_dir={data_path}", *Q1_FLAGS, f"--epochs={epochs}",
            f"--steps_per_epoch={steps_per_epoch}", f"--seed={seed}", f"--threads={threads}", "--monitor=none",
            f"--run_dir={work_dir}/runs", f"--export_dir={work_dir}/saved_models", f"--run_name={run_name}", *extra]
    status = cli.main(argv)
    if status:
        raise RuntimeError(f"{run_name}: the CLI exited {status}")
    return read_history(Path(work_dir) / "runs" / run_name)


def fill_train_seconds(path, work_dir):
    """Add `train_seconds` to the rows of `path` written before the field existed.

    Reads each row's run directory under `work_dir`; the row records that the
    value was filled in later, and by which commit. Returns the number of rows filled.
    """
    commit, dirty = _provenance().git_state()
    filled = []

    def fill(results):
        for row in results:
            if "train_seconds" in row or row["method"] == "random":
                continue
            run_dir = Path(work_dir) / "runs" / row["run_name"]
            if not (run_dir / "history.csv").exists():
                raise FileNotFoundError(f"{row['run_name']}: no history.csv under {run_dir.parent}")
            row["train_seconds"] = round(run_train_seconds(run_dir), 1)
            row["train_seconds_filled"] = {"commit": commit, "dirty": dirty, "from": str(run_dir / "history.csv")}
            filled.append(row["run_name"])

    update_results(path, fill)
    return len(filled)


def _provenance():
    """`benchmarks/provenance.py` as a module (this script runs as a file, not from a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_provenance", Path(__file__).resolve().parent / "provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the robustness curve (issue 26): pixel space, an eps sweep, PGD with the standard step and restarts -------------


def robust_curve_run(backbone, classifier, data_path, seed, *, eps=CURVE["eps"], steps=CURVE["steps"],
                     restarts=CURVE["restarts"], max_test_images=0, batch_size=100):
    """The robustness curve of one encoder + its Q1 probe on the test images.

    Pixel space ([0, 1] pixels -> CIFAR-10 normalisation -> encoder in inference
    mode -> probe). For each eps (in 1/255 units): L-inf PGD with `steps` steps of
    the standard size 2.5 * eps / steps, from `restarts` random starts (restart r
    of batch b keyed on (seed, r, b)); an image is robust if it is classified
    correctly clean and after every restart. Beside it the paper's faithful
    number: PGD-8 at 4/255 with alpha = eps in the `normalized_clip01` space,
    next to its eps = 0 control (the [0, 1] clip of the normalised image alone).

    Returns `{"clean", "eps", "robust" (% per eps), "robust_bits" (per eps, one
    '0'/'1' per test image), "faithful": {"clip_only", "pgd8_4"}, settings, seconds}`.
    """
    import numpy as np
    import tensorflow as tf

    from myol_keras.evaluation import attack

    start = time.time()
    pixels, labels, mean, std, model_fn = attacked_model(backbone, classifier, data_path, max_test_images)
    n = len(labels)

    def correct(x, y):
        return np.argmax(model_fn(x).numpy(), 1) == y

    clean = np.zeros(n, bool)
    robust = {e: np.zeros(n, bool) for e in eps}
    clip_only, faithful = np.zeros(n, bool), np.zeros(n, bool)
    for b, lo in enumerate(range(0, n, batch_size)):
        x = tf.convert_to_tensor(pixels[lo:lo + batch_size])
        y = labels[lo:lo + batch_size]
        clean[lo:lo + len(y)] = ok = correct(x, y)
        for e in eps:
            alive = ok.copy()
            for r in range(restarts):
                key = (seed * 1000 + r) * 1000 + b
                x_adv = attack.pgd(model_fn, x, y, e / 255.0, steps, alpha=2.5 * (e / 255.0) / steps, seed=key)
                alive &= correct(x_adv, y)
            robust[e][lo:lo + len(y)] = alive
        kw = {"attack_space": "normalized_clip01", "mean": tuple(mean), "std": tuple(std)}
        clip_only[lo:lo + len(y)] = correct(attack.pgd(model_fn, x, y, 0.0, 1, alpha=0.0, random_start=False, **kw), y)
        faithful[lo:lo + len(y)] = correct(attack.pgd(model_fn, x, y, 4 / 255, 8, seed=seed + b, **kw), y)
        print(f"robust curve: {lo + len(y)}/{n} images ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)

    def pct(bits):
        return 100.0 * float(np.mean(bits))

    def as_bits(bits):
        return "".join("1" if v else "0" for v in bits)

    return {"num_test": int(n), "clean": pct(clean), "clean_bits": as_bits(clean), "eps": [float(e) for e in eps],
            "robust": [pct(robust[e]) for e in eps], "robust_bits": [as_bits(robust[e]) for e in eps],
            "steps": int(steps), "restarts": int(restarts), "alpha": "2.5 * eps / steps",
            "faithful": {"space": "normalized_clip01", "clip_only": pct(clip_only), "pgd8_4": pct(faithful),
                         "clip_only_bits": as_bits(clip_only), "pgd8_4_bits": as_bits(faithful)},
            "seconds": round(time.time() - start, 1)}


def load_results(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return []


def finished_keys(path):
    """(method, seed, batch size, epochs, precision) of every row in `path`."""
    return {(r["method"], r["seed"], batch_size_of(r), r["epochs"], r.get("precision", "float32")) for r in load_results(path)}


def claim_run(work_dir, run_name):
    """An open file holding an exclusive lock on `<work_dir>/<run_name>.claim`, or None if another driver holds it.

    Two drivers on one JSON may list the same run: each claims a run before it
    starts it and keeps the claim until its row is written (closing the file, or
    the driver's death, releases it), then re-reads the JSON under the claim.
    """
    import fcntl

    handle = open(Path(work_dir) / f"{run_name}.claim", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def update_results(path, change):
    """Apply `change(rows)` (in place) to the rows of `path` under an exclusive lock, then replace the file
    atomically, so two invocations can share one JSON. Nothing is written if `change` raises."""
    import fcntl

    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results(path)
        change(results)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, path)


def append_result(path, result):
    """Append `result` to the rows of `path` (`update_results`)."""
    update_results(path, lambda results: results.append(result))


# --- Q1-robust and Q1-semisup: the B = 128 encoders of runs q1-<method>-s<seed> -------------------------------------




def cpu_description():
    """`"<model> (<flags>)"`: the CPU model and the SIMD flags that matter for TensorFlow here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_common", Path(__file__).resolve().parent / "bench_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    model, flags, cpus = common.cpu_info()
    return f"{model} ({cpus} logical CPUs; {', '.join(flags) or 'no AVX2/AVX-512'})"


def encoder_export(work_dir, run_name):
    """The export path in `<work_dir>/runs/<run_name>/DONE`, or None if the run has not finished."""
    done = Path(work_dir) / "runs" / run_name / "DONE"
    if not done.exists():
        return None
    with open(done) as f:
        return json.load(f)["export"]


def missing_encoder_hint(method, seed, work_dir, smoke=False):
    """The one line naming the command that trains a missing encoder."""
    extra = "" if Path(work_dir).resolve() == (ROOT / "benchmarks" / "q1").resolve() else f" --work_dir={work_dir}"
    extra += " --smoke" if smoke else ""
    return (f"missing encoder q1-{method}-s{seed}: make it with `python benchmarks/quality.py --encoders_only "
            f"--methods={method} --seeds={seed} --batch_sizes=128{extra}`")


def attacked_model(backbone, classifier, data_path, max_test_images=0):
    """`(pixels in [0, 1], labels, mean, std, model_fn)`: Q1's test images and the model an attack sees,
    pixels -> CIFAR-10 normalisation -> encoder (inference mode) -> probe."""
    import numpy as np
    import tensorflow as tf

    arrays = np.load(data_path)
    n = max_test_images or len(arrays["x_test"])
    pixels = arrays["x_test"][:n].astype("float32") / 255.0
    labels = arrays["y_test"][:n].astype("int64").ravel()
    mean, std = cifar10_stats()
    m, s = tf.constant(mean), tf.constant(std)

    def model_fn(p):
        return classifier(backbone((p - m) / s, training=False))

    return pixels, labels, mean, std, model_fn


def robust_runs(backbone, data_path, seed, *, spaces=ROBUST_SPACES, attacks=None, probe_epochs=PROBE["epochs"],
                max_test_images=0, compiled=True, verbose=False):
    """Q1-robust for one encoder: the Q1 probe, then FGSM/PGD (docs/METHODS.md §3.4) on the test images in each space.

    The attacked model is pixels in [0, 1] -> CIFAR-10 normalisation -> backbone (inference mode) -> probe;
    PGD's random start is keyed on `seed` (+ the batch index). Returns one dict per attack space, accuracies in %.
    """

    from myol_keras.evaluation import attack

    start = time.time()
    top1, _, classifier = probe_backbone(backbone, data_path, seed, probe_epochs, return_classifier=True)
    probe_seconds = time.time() - start
    pixels, labels, mean, std, model_fn = attacked_model(backbone, classifier, data_path, max_test_images)
    n = len(labels)
    attacks = attack.default_attacks() if attacks is None else attacks
    rows = []
    for space in spaces:
        accuracy, seconds = attack.robust_accuracy(model_fn, pixels, labels, attacks, attack_space=space,
                                                   mean=tuple(mean), std=tuple(std), batch_size=100, seed=seed,
                                                   verbose=verbose, compiled=compiled)
        rows.append({"attack_space": space, "probe_top1": top1, "num_test": int(n),
                     "accuracy": {k: 100.0 * v for k, v in accuracy.items()},
                     "attacks": attacks, "probe_seconds": round(probe_seconds, 1), "attack_seconds": round(seconds, 1)})
    return rows


def semisup_run(export_path, data_path, seed, label_fraction, *, epochs=20, max_test_images=0, verbose=False):
    """Q1-semisup for one encoder and label fraction (docs/METHODS.md §3.2): fine-tune a fresh copy of the encoder + a linear head."""
    import numpy as np

    from myol_keras import export
    from myol_keras.evaluation import semisup

    arrays = np.load(data_path)
    x_train, y_train = arrays["x_train"], arrays["y_train"].astype("int64").ravel()
    n = max_test_images or len(arrays["x_test"])
    x_test, y_test = arrays["x_test"][:n], arrays["y_test"][:n].astype("int64").ravel()
    index = semisup.class_balanced_subset(y_train, label_fraction, seed)
    encoder_lr, head_lr = semisup.LEARNING_RATES.get(round(label_fraction, 6), semisup.LEARNING_RATES[0.1])  # as semisup_evaluate
    mean, std = cifar10_stats()
    start = time.time()
    trained = semisup.finetune(export.load_backbone(export_path, trainable=True), x_train[index], y_train[index], x_test, y_test,
                               10, image_size=32, mean=tuple(mean), std=tuple(std), epochs=epochs, batch_size=32,
                               encoder_lr=encoder_lr, head_lr=head_lr, flip=True, seed=seed, verbose=verbose,
                               description=f"semi-supervised {label_fraction:g}")
    return {"label_fraction": label_fraction, "num_labelled": int(len(index)), "num_test": int(n),
            "top1": 100.0 * trained["top1"], "top5": 100.0 * trained["top5"],
            "history_top1": [round(100.0 * h["top1"], 2) for h in trained["history"]],
            "epochs": epochs, "encoder_lr": encoder_lr, "head_lr": head_lr, "seconds": round(time.time() - start, 1)}


def encoder_row_of(path, run_name):
    """Where the encoder of `run_name` came from: `{"output", "commit", "dirty", "top1"}` of its Q1 row in `path`.

    None when `path` has no row of that run (the encoder was trained with
    `--encoders_only`, or its row lives in another file).
    """
    rows = [r for r in load_results(path) if r.get("run_name") == run_name]
    if not rows:
        return None
    prov = rows[-1].get("provenance") or {}
    return {"output": os.path.relpath(path, ROOT), "commit": prov.get("commit"), "dirty": prov.get("dirty"),
            "top1": rows[-1]["top1"]}


def row_provenance(data_path, load_at_start, command):
    """The provenance of a row (`provenance.py`), with the load when its work started."""
    return {**_provenance().provenance(data_path=data_path, command=command), "load_average_at_start": load_at_start}


def run_encoder_protocols(args, protocols, methods, seeds, command):
    """The robust and/or semisup stage over the finished B = 128 encoders; appends rows, skips rows already there.

    `command` is the command line the rows record (`benchmarks/quality.py` and its arguments).
    """
    import keras

    if args.threads:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        except RuntimeError:  # TensorFlow already running in this process (tests): keep its setting
            pass
    from myol_keras import export
    from myol_keras.evaluation import attack

    smoke = bool(args.steps_per_epoch)
    epochs = args.epochs if args.epochs is not None else q1_batch_schedule(128)[0]
    attacks = attack.default_attacks(pgd_steps=[int(s) for s in args.pgd_steps.split(",")])
    fractions = [float(f) for f in args.label_fractions.split(",")]
    cpu = cpu_description()
    for seed in seeds:
        for method in methods:
            if method == "random":
                print("skip random: no pre-trained encoder to attack or fine-tune")
                continue
            run_name = run_name_for(method, seed, epochs, args.precision, 128) + ("-smoke" if smoke else "")
            export_path = encoder_export(args.work_dir, run_name)
            if export_path is None:
                print(missing_encoder_hint(method, seed, args.work_dir, smoke), flush=True)
                continue
            common = {"method": method, "seed": seed, "batch_size": 128, "epochs": epochs, "run_name": run_name,
                      "precision": args.precision, "export": export_path}
            encoder_row = encoder_row_of(args.output, run_name)
            if encoder_row is not None:
                common["encoder_row"] = encoder_row
            if "robust" in protocols:
                done = {(r["run_name"], r["attack_space"]) for r in load_results(args.robust_output)}
                spaces = [s for s in ROBUST_SPACES if (run_name, s) not in done]
                if not spaces:
                    print(f"skip robust {run_name}: already in {args.robust_output}")
                else:
                    keras.backend.clear_session()
                    load_at_start = _provenance().load_average()
                    rows = robust_runs(export.load_backbone(export_path, trainable=False), args.data, seed, spaces=spaces,
                                       attacks=attacks, probe_epochs=args.probe_epochs, max_test_images=args.max_test_images)
                    for row in rows:
                        row = {**common, **row, "cpu": cpu, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                               "provenance": row_provenance(args.data, load_at_start, command)}
                        append_result(args.robust_output, row)
                        print(f"robust {run_name} {row['attack_space']} (probe top-1 {row['probe_top1']:.2f}): "
                              + ", ".join(f"{k} {v:.2f}" for k, v in row["accuracy"].items())
                              + f" (probe {row['probe_seconds']:.0f} s, attacks {row['attack_seconds']:.0f} s)", flush=True)
            if "semisup" in protocols:
                done = {(r["run_name"], r["label_fraction"]) for r in load_results(args.semisup_output)}
                for fraction in fractions:
                    if (run_name, fraction) in done:
                        print(f"skip semisup {run_name} {fraction:g}: already in {args.semisup_output}")
                        continue
                    keras.backend.clear_session()
                    load_at_start = _provenance().load_average()
                    row = semisup_run(export_path, args.data, seed, fraction, epochs=args.semisup_epochs,
                                      max_test_images=args.max_test_images)
                    row = {**common, **row, "cpu": cpu, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                           "provenance": row_provenance(args.data, load_at_start, command)}
                    append_result(args.semisup_output, row)
                    print(f"semisup {run_name} {fraction:g} ({row['num_labelled']} labels): top-1 {row['top1']:.2f} % "
                          f"({row['seconds']:.0f} s)", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="byol,myol", help="comma-separated methods (and 'random' for the floor)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (each gets cores/jobs threads)")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--work_dir", default=str(ROOT / "benchmarks" / "q1"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "q1_results.json"))
    parser.add_argument("--epochs", type=int, default=None,
                        help="pre-training epochs (default: Q1's 50 at B = 128, 50 * B / 128 for Q1-batch; fewer for a smoke run)")
    parser.add_argument("--batch_sizes", default="128",
                        help="Q1-batch: comma-separated batch sizes, e.g. 32,64,128 (epochs and warm-up scale with B, lr unchanged)")
    parser.add_argument("--encoders_only", action="store_true",
                        help="train (or find) the runs' encoders without probing or recording them, even when their rows exist")
    parser.add_argument("--probe_epochs", type=int, default=PROBE["epochs"])
    parser.add_argument("--precision", default="float32", choices=sorted(PRECISION_TAGS),
                        help="float32 is protocol Q1; mixed_bfloat16 for the issue-11 accuracy check (run names get a suffix)")
    parser.add_argument("--plot_dir", default=None,
                        help="also write q1_accuracy.png and q1_loss.png here (e.g. docs)")
    parser.add_argument("--protocols", default="linear",
                        help="comma-separated: linear (Q1 / Q1-batch: train and probe), robust (Q1-robust: FGSM/PGD on the "
                             "probes of the B = 128 encoders), semisup (Q1-semisup: 1 %% / 10 %% label fine-tuning of them)")
    parser.add_argument("--robust_output", default=str(ROOT / "benchmarks" / "q1_robust.json"))
    parser.add_argument("--semisup_output", default=str(ROOT / "benchmarks" / "q1_semisup.json"))
    parser.add_argument("--label_fractions", default=",".join(f"{f:g}" for f in LABEL_FRACTIONS),
                        help="Q1-semisup label fractions (docs/METHODS.md §3.2: 0.01 and 0.1)")
    parser.add_argument("--smoke", action="store_true",
                        help="plumbing check for CI: 1 epoch of 2 steps, 1 probe epoch (not a figure); robust: 20 test "
                             "images, PGD 1 step; semisup: 1 %% labels, 1 epoch, 20 test images")
    parser.add_argument("--steps_per_epoch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--max_test_images", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pgd_steps", default="8,16", help=argparse.SUPPRESS)
    parser.add_argument("--semisup_epochs", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--robust_curve", action="store_true",
                        help="issue 26: also measure each encoder's pixel-space robustness curve (PGD, eps sweep, restarts) "
                             "right after its probe, into the same row")
    parser.add_argument("--curve_eps", default=",".join(f"{e:g}" for e in CURVE["eps"]),
                        help="the curve's eps values in 1/255 units")
    parser.add_argument("--curve_steps", type=int, default=CURVE["steps"])
    parser.add_argument("--curve_restarts", type=int, default=CURVE["restarts"])
    parser.add_argument("--threads", type=int, default=0,
                        help="threads per run (default: cores / jobs); e.g. two invocations with --jobs=1 --threads=1")
    parser.add_argument("--fill_train_seconds", action="store_true",
                        help="add train_seconds (training-step time over every epoch, resumed runs included) to the rows "
                             "of --output that lack it, from their run directories under --work_dir, and exit")
    raw_argv = list(argv) if argv is not None else sys.argv[1:]
    args = parser.parse_args(argv)
    if args.fill_train_seconds:
        try:
            print(f"filled train_seconds in {fill_train_seconds(args.output, args.work_dir)} row(s) of {args.output}")
        except (OSError, ValueError, KeyError) as e:
            parser.exit(2, f"quality.py: error: --fill_train_seconds: {e}\n")
        return 0
    if args.smoke:
        args.epochs, args.probe_epochs, args.steps_per_epoch = 1, 1, 2
        args.max_test_images, args.pgd_steps, args.semisup_epochs, args.label_fractions = 20, "1", 1, "0.01"
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = sorted(set(protocols) - {"linear", "robust", "semisup"})
    if unknown or not protocols:
        parser.exit(2, f"quality.py: error: --protocols={args.protocols}: choose from linear, robust, semisup\n")

    if args.worker:
        batch_size = int(args.batch_sizes)
        epochs = args.epochs if args.epochs is not None else q1_batch_schedule(batch_size)[0]
        curve = None
        if args.robust_curve:
            curve = {"eps": [float(e) for e in args.curve_eps.split(",") if e.strip()], "steps": args.curve_steps,
                     "restarts": args.curve_restarts, "max_test_images": args.max_test_images}
        worker(args.worker[0], int(args.worker[1]), args.data, args.work_dir, args.threads, epochs, args.probe_epochs, args.precision,
               args.steps_per_epoch, batch_size=batch_size, encoder_only=args.encoders_only, robust_curve=curve)
        return 0
    if not os.path.exists(args.data):
        parser.exit(2, f"quality.py: error: {args.data} not found (the shared CIFAR-10 subset)\n")
    if args.jobs < 1:
        parser.exit(2, "quality.py: error: --jobs must be >= 1\n")

    done = finished_keys(args.output)
    todo = []
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    train = "linear" in protocols or args.encoders_only
    for seed in seeds if train else []:  # seed-major: every method's seed 0 first
        for batch_size in batch_sizes:
            for method in methods:
                if method == "random":
                    if batch_size != batch_sizes[0] or args.encoders_only:
                        continue
                    key = (method, seed, 0, 0, args.precision)
                else:
                    epochs = args.epochs if args.epochs is not None else q1_batch_schedule(batch_size)[0]
                    key = (method, seed, batch_size, epochs, args.precision)
                if key in done and not args.encoders_only:
                    print(f"skip {method} seed {seed} B={batch_size}: already in {args.output}")
                else:
                    todo.append((method, seed, batch_size))
    threads = args.threads or max(1, (os.cpu_count() or 2) // args.jobs)
    os.makedirs(args.work_dir, exist_ok=True)
    running = []
    while todo or running:
        while todo and len(running) < args.jobs:
            method, seed, batch_size = todo.pop(0)
            epochs = args.epochs if args.epochs is not None else q1_batch_schedule(batch_size)[0]
            claim = claim_run(args.work_dir, run_name_for(method, seed, epochs, args.precision, batch_size))
            if claim is None:
                print(f"skip {method} seed {seed} B={batch_size}: another driver is running it", flush=True)
                continue
            key = (method, seed, batch_size if method != "random" else 0, epochs if method != "random" else 0, args.precision)
            if not args.encoders_only and key in finished_keys(args.output):
                claim.close()
                print(f"skip {method} seed {seed} B={batch_size}: finished by another driver", flush=True)
                continue
            log = open(Path(args.work_dir) / f"{run_name_for(method, seed, epochs, args.precision, batch_size)[3:]}.log", "a")
            cmd = [sys.executable, __file__, "--worker", method, str(seed), f"--data={args.data}",
                   f"--work_dir={args.work_dir}", f"--threads={threads}", f"--epochs={epochs}",
                   f"--batch_sizes={batch_size}", f"--probe_epochs={args.probe_epochs}", f"--precision={args.precision}",
                   f"--steps_per_epoch={args.steps_per_epoch}", f"--max_test_images={args.max_test_images}"]
            cmd += ["--encoders_only"] if args.encoders_only else []
            cmd += (["--robust_curve", f"--curve_eps={args.curve_eps}", f"--curve_steps={args.curve_steps}",
                     f"--curve_restarts={args.curve_restarts}"] if args.robust_curve else [])
            print(f"start {method} seed {seed} B={batch_size} ({threads} thread(s)); log: {log.name}", flush=True)
            env = {**os.environ, "MYOL_Q1_COMMAND": json.dumps(["benchmarks/quality.py", *raw_argv])}
            running.append((method, seed, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env), log,
                            claim))
        time.sleep(5)
        for item in list(running):
            method, seed, proc, log, claim = item
            if proc.poll() is None:
                continue
            running.remove(item)
            out = proc.stdout.read()
            log.write(out)
            log.close()
            lines = [line for line in out.splitlines() if line.startswith(("Q1RESULT ", "Q1ENCODER "))]
            if proc.returncode == 0 and lines and lines[-1].startswith("Q1ENCODER "):
                print(f"encoder {method} seed {seed}: {json.loads(lines[-1][len('Q1ENCODER '):])['export']}", flush=True)
            elif proc.returncode == 0 and lines:
                result = json.loads(lines[-1][len("Q1RESULT "):])
                append_result(args.output, result)
                print(f"done {method} seed {seed} B={result['batch_size']}: top-1 {result['top1']:.2f} %", flush=True)
            else:
                print(f"FAILED {method} seed {seed} (exit {proc.returncode}); see {log.name}", flush=True)
            claim.close()  # after the row is in the JSON: a waiting driver then sees the run as finished
    if "robust" in protocols or "semisup" in protocols:
        run_encoder_protocols(args, protocols, methods, seeds, ["benchmarks/quality.py", *raw_argv])
    results = load_results(args.output) if "linear" in protocols else []
    if results:
        print(f"\nQ1 on {cpu_model()}:\n")
        print(markdown_table(results))
        comparison = reference_comparison(results)
        if comparison.count("\n") > 1:
            print("\nAgainst the official code (../shared/benchmarks/REFERENCE.md); SE of one run = its binomial SE:\n")
            print(comparison)
        if args.plot_dir:
            for path in plot_results(results, args.work_dir, args.plot_dir):
                if path:
                    print(f"wrote {path}")
    if any(r["method"] in ("byol", "myol") and batch_size_of(r) != 128 for r in results):
        print("\nQ1-batch (linear top-1 %, mean ± SE over seeds; SE of one run = its binomial SE):\n")
        print(batch_size_table(results))
        if args.plot_dir and plot_batch_sizes(results, os.path.join(args.plot_dir, "q1_batch.png")):
            print(f"wrote {os.path.join(args.plot_dir, 'q1_batch.png')}")
    robust = load_results(args.robust_output) if "robust" in protocols else []
    if robust:
        print(f"\nQ1-robust (top-1 % of the B = 128 probes under attack, mean ± SE over seeds), on {cpu_description()}:\n")
        print(robust_table(robust))
        if args.plot_dir:
            print(f"wrote {plot_robust(robust, os.path.join(args.plot_dir, 'q1_robust.png'))}")
    semisup_rows = load_results(args.semisup_output) if "semisup" in protocols else []
    if semisup_rows:
        print(f"\nQ1-semisup (fine-tuned top-1 %, mean ± SE over seeds), on {cpu_description()}:\n")
        print(semisup_table(semisup_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
