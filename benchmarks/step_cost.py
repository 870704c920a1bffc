"""Protocol Q1's training cost per method, measured side by side under the same load.

    python benchmarks/step_cost.py --methods=simclr,suncet,clsa,byol --reps=3 --output=benchmarks/step_cost.json
    python benchmarks/step_cost.py --smoke            # CI: one step of one method

The Q1 rows' minutes (`quality.py`) are what each run cost on a shared machine:
two runs of one seed pair ran hours apart under different load (SimCLR seed 2
trained at 223 img/s, seed 0 at 104). SuNCEt's claim is about compute, so this
script measures the methods' cost under one condition: each repetition trains
every method for `--steps` steps of a second epoch (the first epoch traces the
step and is not counted) through the CLI with Q1's flags at one thread, one
method after the other in a rotated order, in one process. The figure per
method is the median images/s over the repetitions; the ratio to `--base` is
the median of the per-repetition ratios, which cancels load that drifts slowly.

Minutes for Q1 = 50 epochs x 36 steps x 128 images / (images/s) / 60.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's myol_keras
sys.path.insert(1, str(HERE))  # quality.py, provenance.py (this script runs as a file)
Q1_IMAGES = 50 * 36 * 128  # epochs x steps x batch of one Q1 pre-training


def summarize(speeds, base):
    """Per-method medians and ratios to `base` from `speeds[method] = [images/s of each repetition]`.

    Args:
        speeds: dict of method -> list of images/s, one per repetition, in repetition order.
        base: the method the ratios are taken against (its cost is 1.0).

    Returns:
        dict of method -> {"images_per_second", "q1_minutes", "cost_vs_base"}; cost is base images/s over
        this method's images/s within each repetition, then the median over repetitions.

    Example:
    >>> summarize({"a": [100.0, 50.0], "b": [50.0, 25.0]}, "a")["b"]["cost_vs_base"]
    2.0
    """
    out = {}
    for method, values in speeds.items():
        ips = statistics.median(values)
        ratios = [b / v for b, v in zip(speeds[base], values)]
        out[method] = {"images_per_second": round(ips, 2), "q1_minutes": round(Q1_IMAGES / ips / 60, 1),
                       "cost_vs_base": round(statistics.median(ratios), 3), "per_rep": [round(v, 2) for v in values]}
    return out


def measure(method, data, steps, threads, work_dir, seed=0):
    """Images/s of the second epoch of a Q1 run of `method` (`steps` steps per epoch)."""
    import quality

    rows = quality.short_q1_run(method, data, work_dir, f"cost-{method}-{time.time_ns()}", epochs=2,
                                steps_per_epoch=steps, seed=seed, threads=threads)
    return float(rows[-1]["images_per_second"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="simclr,suncet,clsa,byol")
    parser.add_argument("--base", default="simclr", help="the method the costs are relative to (one of --methods)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="steps of the measured (second) epoch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=str(HERE.parent / ".." / "shared" / "data" / "cifar10_subset.npz"))
    parser.add_argument("--output", default=None, help="write the figures and their provenance here (JSON)")
    parser.add_argument("--smoke", action="store_true", help="plumbing check for CI: 1 step, 1 repetition")
    args = parser.parse_args(argv)
    if args.smoke:
        args.reps, args.steps = 1, 1
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.base not in methods:
        parser.exit(2, f"step_cost.py: error: --base={args.base} is not one of --methods={args.methods}\n")
    if args.reps < 1 or args.steps < 1:
        parser.exit(2, "step_cost.py: error: --reps and --steps must be >= 1\n")
    if not os.path.exists(args.data):
        parser.exit(2, f"step_cost.py: error: {args.data} not found (the shared CIFAR-10 subset)\n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from myol_keras import process_settings

    process_settings.set_threads(args.threads)  # warns and keeps the pools if TensorFlow already runs (pytest)
    import provenance

    # Read before training: the commit and load the figures were measured at.
    record_provenance = provenance.provenance(data_path=args.data, command=["benchmarks/step_cost.py", *(argv or sys.argv[1:])])
    speeds = {m: [] for m in methods}
    with tempfile.TemporaryDirectory(prefix="step_cost_") as work_dir:
        for rep in range(args.reps):
            order = methods[rep % len(methods):] + methods[:rep % len(methods)]  # rotated: no method always first
            for method in order:
                speeds[method].append(measure(method, args.data, args.steps, args.threads, work_dir, seed=rep))
                print(f"rep {rep + 1}/{args.reps} {method}: {speeds[method][-1]:.1f} img/s", file=sys.stderr, flush=True)
    table = summarize(speeds, args.base)
    print(f"| method | img/s (median of {args.reps}) | Q1 minutes | cost vs {args.base} |\n|---|---|---|---|")
    for method, row in table.items():
        print(f"| {method} | {row['images_per_second']:.1f} | {row['q1_minutes']:.1f} | {row['cost_vs_base']:.2f}× |")
    if args.output:
        provenance.write_record(args.output, {"base": args.base, "reps": args.reps, "steps": args.steps,
                                              "threads": args.threads, "methods": table, "provenance": record_provenance})
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
