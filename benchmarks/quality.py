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

Every finished run is appended to `--output` (JSON) and skipped when the
script runs again, so runs accumulate across sessions. `--jobs=2` runs two
runs side by side with one thread each (the best use of 2 cores). The
method `random` is the floor: a randomly initialised encoder, probed.
"""

import argparse
import csv
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

Q1_FLAGS = [
    "--dataset=npz", "--normalization=cifar10", "--image_size=32",
    "--backbone=resnet18", "--stem=cifar", "--width=16",
    "--projector_hidden_dim=2048", "--projection_dim=128", "--predictor_hidden_dim=2048",
    "--batch_size=128", "--drop_remainder=true", "--epochs=50",
    "--lr=0.025", "--lr_scaling=none", "--momentum=0.9", "--weight_decay=1e-4",
    "--warmup_epochs=10", "--warmup_mode=linear", "--lr_schedule=constant",
    "--ema=0.996", "--ema_schedule=constant", "--precision=float32",
    "--alpha=2.0", "--gamma=1.0", "--verbose=2",
]
PROBE = {"epochs": 100, "batch_size": 64, "lr": 0.2, "momentum": 0.9}


PRECISION_TAGS = {"float32": "float32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def linear_probe(train_x, train_y, test_x, test_y, num_classes, seed, epochs=PROBE["epochs"]):
    """Q1's linear probe on cached features; returns (top-1 %, top-5 %)."""
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
    return top1, top5


def probe_backbone(backbone, data_path, seed, epochs=PROBE["epochs"]):
    """Features of the un-augmented, normalised images (inference mode), then the probe."""
    import numpy as np

    from myol_keras.data import NORMALIZATIONS

    arrays = np.load(data_path)
    mean, std = (np.asarray(v, "float32") for v in NORMALIZATIONS["cifar10"])

    def features(x):
        out = []
        for i in range(0, len(x), 256):
            batch = (x[i:i + 256].astype("float32") / 255.0 - mean) / std
            out.append(backbone(batch, training=False).numpy())
        return np.concatenate(out)

    train_y = arrays["y_train"].astype("int64").ravel()
    test_y = arrays["y_test"].astype("int64").ravel()
    return linear_probe(features(arrays["x_train"]), train_y, features(arrays["x_test"]), test_y, 10, seed, epochs)


def run_name_for(method, seed, epochs, precision="float32", batch_size=128):
    """`q1-<method>-s<seed>`, suffixed when batch size, epochs or precision leave protocol Q1."""
    name = f"q1-{method}-s{seed}" + ("" if batch_size == 128 else f"-b{batch_size}")
    name += "" if epochs == q1_batch_schedule(batch_size)[0] else f"-e{epochs}"
    return name + ("" if precision == "float32" else f"-{PRECISION_TAGS.get(precision, precision)}")


def q1_batch_schedule(batch_size):
    """Q1-batch (METHODS §3.5 at Q1 scale): epochs and warm-up epochs for batch `batch_size`.

    The number of iterations stays about Q1's (50 epochs at B = 128: 50 * B / 128
    epochs, rounded down) and so does the warm-up's (10 * B / 128 epochs, which
    may be fractional); the learning rate is unchanged.

    >>> q1_batch_schedule(32), q1_batch_schedule(64), q1_batch_schedule(128)
    ((12, 2.5), (25, 5.0), (50, 10.0))
    """
    return 50 * batch_size // 128, 10 * batch_size / 128


def worker(method, seed, data_path, work_dir, threads, epochs, probe_epochs, precision="float32", steps_per_epoch=0,
           batch_size=128, encoder_only=False):
    """Train one run through the CLI (resumable), probe its export; print a JSON result line.

    With `encoder_only` the run is trained (or found finished) and not probed:
    the robustness and semi-supervised protocols need the encoders of runs whose
    Q1 row is already in the JSON (run directories are gitignored scratch).
    """
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
        pretrain_seconds = 0.0
    else:
        argv = ["myol_keras.main", f"--method={method}", f"--data_dir={data_path}", *Q1_FLAGS,
                f"--epochs={epochs}", f"--batch_size={batch_size}", f"--warmup_epochs={q1_batch_schedule(batch_size)[1]}",
                f"--seed={seed}", f"--threads={threads}", f"--precision={precision}", f"--steps_per_epoch={steps_per_epoch}",
                f"--run_dir={work_dir}/runs", f"--export_dir={work_dir}/saved_models", f"--run_name={run_name}"]
        cli.main(argv)
        pretrain_seconds = time.time() - start
        run_dir = Path(work_dir) / "runs" / run_name
        with open(run_dir / "history.csv") as f:
            rows = list(csv.DictReader(f))
        speeds = [float(r["images_per_second"]) for r in rows[1:] if r.get("images_per_second")]
        images_per_second = sum(speeds) / len(speeds) if speeds else None
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
    top1, top5 = probe_backbone(backbone, data_path, seed, probe_epochs)
    result = {
        "method": method, "seed": seed, "epochs": epochs if method != "random" else 0,
        "batch_size": batch_size if method != "random" else 0,
        "top1": top1, "top5": top5,
        "pretrain_seconds": round(pretrain_seconds, 1),
        "probe_seconds": round(time.time() - probe_start, 1),
        "images_per_second": images_per_second, "threads": threads,
        "cpu": cpu_model(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "run_name": run_name, "precision": precision,
    }
    if history:
        result["history"] = history
    print("Q1RESULT " + json.dumps(result), flush=True)


def batch_size_of(result):
    """A row's batch size (rows written before Q1-batch have none: 128; the random floor 0)."""
    return result.get("batch_size", 0 if result["method"] == "random" else 128)


def is_q1(result):
    """Protocol Q1 proper: float32, B = 128, 50 epochs (or the random floor)."""
    return (result.get("precision", "float32") == "float32" and batch_size_of(result) in (0, 128)
            and result["epochs"] in (0, 50))


def load_results(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return []


def append_result(path, result):
    """Append under an exclusive lock, so two invocations can share one JSON."""
    import fcntl

    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results(path)
        results.append(result)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, path)


def markdown_table(results):
    import statistics

    lines = ["| method | seeds | linear top-1 % (mean ± std) | per seed | pre-train time (min) | img/s |",
             "|---|---|---|---|---|---|"]
    by_method = {}
    for r in results:
        by_method.setdefault((r["method"], batch_size_of(r), r["epochs"], r.get("precision", "float32")), []).append(r)
    for (method, batch_size, epochs, precision), rows in sorted(by_method.items()):
        rows = sorted(rows, key=lambda r: r["seed"])
        accs = [r["top1"] for r in rows]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        speeds = [r["images_per_second"] for r in rows if r.get("images_per_second")]
        lines.append(
            f"| {method}{'' if batch_size in (0, 128) else f' B={batch_size}'}{'' if epochs in (0, q1_batch_schedule(batch_size or 128)[0]) else f' ({epochs} ep)'}{'' if precision == 'float32' else f', {precision}'} | {','.join(str(r['seed']) for r in rows)} | "
            f"{statistics.mean(accs):.2f} ± {std:.2f} | {', '.join(f'{a:.2f}' for a in accs)} | "
            f"{statistics.mean(r['pretrain_seconds'] for r in rows) / 60:.1f} | "
            f"{(sum(speeds) / len(speeds)) if speeds else float('nan'):.1f} |"
        )
    return "\n".join(lines)


REFERENCE_MD = ROOT.parent / "shared" / "benchmarks" / "REFERENCE.md"


def reference_results(path=REFERENCE_MD):
    """`{method: [top-1, ...]}` from the official code's Q1 table (REFERENCE.md), if present."""
    import re

    found = {}
    if not Path(path).exists():
        return found
    for line in Path(path).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"\d+", cells[1]) and re.fullmatch(r"\d+(\.\d+)?", cells[3]):
            name = "random" if cells[0].lower().startswith("random") else cells[0].lower()
            found.setdefault(name, []).append(float(cells[3]))
    return found


def loss_history(result, work_dir):
    """Per-epoch training loss of one run: from the JSON, else from its (gitignored) run directory."""
    if result.get("history", {}).get("loss"):
        return result["history"]["loss"]
    path = Path(work_dir) / "runs" / result["run_name"] / "history.csv"
    if not path.exists():
        return None
    with open(path) as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")]


def plot_losses(results, work_dir, path):
    """One panel per method (their losses have different scales), one line per seed."""
    import matplotlib.pyplot as plt

    curves = {}
    for r in sorted(results, key=lambda r: (r["method"], r["seed"])):
        loss = loss_history(r, work_dir) if r["method"] != "random" else None
        if loss:
            curves.setdefault(r["method"], []).append((r["seed"], loss))
    if not curves:
        return None
    cols = min(4, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, (method, lines) in zip(axes.ravel(), sorted(curves.items(), key=lambda kv: (kv[0] != "byol", kv[0] != "myol", kv[0]))):
        for seed, loss in lines:
            ax.plot(range(1, len(loss) + 1), loss, label=f"seed {seed}")
        ax.set_title(f"{method}: training loss")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(curves):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def binomial_se(top1, n=932):
    """Standard error (points) of one run's top-1 on n test images."""
    p = top1 / 100.0
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


def mean_and_se(accs):
    """Mean and its standard error: the spread of the seeds (n > 1), else one run's binomial SE."""
    import statistics

    mean = statistics.mean(accs)
    se = statistics.stdev(accs) / math.sqrt(len(accs)) if len(accs) > 1 else binomial_se(mean)
    return mean, se


def reference_comparison(results, reference=None):
    """Markdown: ours vs the official code under Q1, with the issue's tolerance max(2, 2 SE of the difference)."""
    reference = reference_results() if reference is None else reference
    q1 = [r for r in results if is_q1(r)]
    lines = ["| method | ours: n, mean ± SE | official: n, mean ± SE | difference | tolerance max(2, 2·SE) | within |",
             "|---|---|---|---|---|---|"]
    for method in sorted(reference, key=lambda m: (m != "random", m != "byol", m != "myol", m)):
        accs = [r["top1"] for r in q1 if r["method"] == method]
        if not accs:
            continue
        mean, se = mean_and_se(accs)
        ref_mean, ref_se = mean_and_se(reference[method])
        diff = mean - ref_mean
        tolerance = max(2.0, 2.0 * math.sqrt(se ** 2 + ref_se ** 2))
        lines.append(f"| {method} | {len(accs)}, {mean:.2f} ± {se:.2f} | {len(reference[method])}, {ref_mean:.2f} ± {ref_se:.2f} | "
                     f"{diff:+.2f} | {tolerance:.2f} | {'yes' if abs(diff) <= tolerance else 'NO'} |")
    return "\n".join(lines)


def plot_results(results, work_dir, plot_dir):
    """Write `q1_accuracy.png` (top-1 per method, ours and the reference) and `q1_loss.png`."""
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q1 = [r for r in results if is_q1(r)]
    methods = sorted({r["method"] for r in q1}, key=lambda m: (m != "random", m != "byol", m != "myol", m))
    reference = reference_results()
    fig, ax = plt.subplots(figsize=(1.2 * len(methods) + 2, 4))
    reference_labelled = False
    for i, method in enumerate(methods):
        accs = [r["top1"] for r in q1 if r["method"] == method]
        mean = statistics.mean(accs)
        se = statistics.stdev(accs) / len(accs) ** 0.5 if len(accs) > 1 else 0.0
        ax.bar(i - 0.2, mean, width=0.4, yerr=se, color="tab:blue", alpha=0.7, capsize=3,
               label="myol_keras (mean ± SE)" if i == 0 else None)
        ax.scatter([i - 0.2] * len(accs), accs, color="k", s=10, zorder=3)
        if reference.get(method):
            ref = reference[method]
            ax.bar(i + 0.2, statistics.mean(ref), width=0.4, color="tab:orange", alpha=0.7,
                   label=None if reference_labelled else "official code (REFERENCE.md)")
            reference_labelled = True
            ax.scatter([i + 0.2] * len(ref), ref, color="k", s=10, zorder=3)
    byol = [r["top1"] for r in q1 if r["method"] == "byol"]
    if byol:
        ax.axhline(statistics.mean(byol), color="tab:blue", linestyle=":", linewidth=1, label="our BYOL mean")
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel("linear top-1 % (932 test images)")
    ax.set_ylim(20, max(r["top1"] for r in q1) + 5)
    ax.set_title("Protocol Q1: ResNet-18 w16, 50 epochs, CIFAR-10 subset")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    os.makedirs(plot_dir, exist_ok=True)
    accuracy_png = os.path.join(plot_dir, "q1_accuracy.png")
    fig.savefig(accuracy_png, dpi=90)
    plt.close(fig)
    loss_png = plot_losses(q1, work_dir, os.path.join(plot_dir, "q1_loss.png"))
    return accuracy_png, loss_png


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
    parser.add_argument("--smoke", action="store_true",
                        help="plumbing check for CI: 1 epoch of 2 steps, 1 probe epoch (not a figure)")
    parser.add_argument("--steps_per_epoch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads per run (default: cores / jobs); e.g. two invocations with --jobs=1 --threads=1")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.probe_epochs, args.steps_per_epoch = 1, 1, 2

    if args.worker:
        batch_size = int(args.batch_sizes)
        epochs = args.epochs if args.epochs is not None else q1_batch_schedule(batch_size)[0]
        worker(args.worker[0], int(args.worker[1]), args.data, args.work_dir, args.threads, epochs, args.probe_epochs, args.precision,
               args.steps_per_epoch, batch_size=batch_size, encoder_only=args.encoders_only)
        return 0
    if not os.path.exists(args.data):
        parser.exit(2, f"quality.py: error: {args.data} not found (the shared CIFAR-10 subset)\n")
    if args.jobs < 1:
        parser.exit(2, "quality.py: error: --jobs must be >= 1\n")

    done = {(r["method"], r["seed"], batch_size_of(r), r["epochs"], r.get("precision", "float32")) for r in load_results(args.output)}
    todo = []
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:  # seed-major: every method's seed 0 first
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
            log = open(Path(args.work_dir) / f"{run_name_for(method, seed, epochs, args.precision, batch_size)[3:]}.log", "a")
            cmd = [sys.executable, __file__, "--worker", method, str(seed), f"--data={args.data}",
                   f"--work_dir={args.work_dir}", f"--threads={threads}", f"--epochs={epochs}",
                   f"--batch_sizes={batch_size}", f"--probe_epochs={args.probe_epochs}", f"--precision={args.precision}",
                   f"--steps_per_epoch={args.steps_per_epoch}"] + (["--encoders_only"] if args.encoders_only else [])
            print(f"start {method} seed {seed} B={batch_size} ({threads} thread(s)); log: {log.name}", flush=True)
            running.append((method, seed, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True), log))
        time.sleep(5)
        for item in list(running):
            method, seed, proc, log = item
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
    results = load_results(args.output)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
