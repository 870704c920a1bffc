"""myol_keras vs the PyTorch reference, side by side in one run, as ratios.

    python benchmarks/compare.py --output=benchmarks/results/compare.json
    python benchmarks/compare.py --precision=mixed_bfloat16     # ours in bf16, the reference float32
    # ours in bf16 against the peer's best CPU configuration, and against its float32 too
    python benchmarks/compare.py --precision=mixed_bfloat16 --torch_precision=bf16 --channels_last \
        --extra_references=float32
    python benchmarks/compare.py --smoke                         # plumbing check only

Starts long-lived workers with the same settings — `throughput.py --serve`
in this Python and one `reference_torch.py --serve` per reference
configuration in the torch venv (`--torch_python`, default
/work/torchvenv/bin/python) — builds each task in all of them, then
alternates their timed repetitions (the order rotates by one worker per
repetition: with one reference, ours first on even repetitions and the
reference first on odd ones) so slow drifts of the machine hit all alike, and
only one of them computes at a time. Prints the result tables and the ratio
table ours / each reference for the BYOL and MYOL train step, end to end, and
the augmentation pipeline, with the issues' targets and the TFLOP/s our
train step reaches.

Reference configurations (`reference_torch.py`): `--torch_precision`
(float32, the official code, or bf16 = `torch.autocast` around the forward
passes) and `--channels_last` give the first one (the peer); every entry of
`--extra_references` (`float32`, `bf16`, `float32+channels_last`,
`bf16+channels_last`) adds a worker. The augmentation part, which has no
precision, runs against the first reference only.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_common as common  # noqa: E402

DEFAULT_TORCH_PYTHON = "/work/torchvenv/bin/python"
FORWARDED = ("methods", "parts", "depth", "width", "image_size", "batch_size", "precision", "reps", "steps",
             "e2e_steps", "augment_batches", "augment_views", "warmup_steps", "data", "num_images", "seed")


class Worker:
    """One `--serve` process; replies are the `@@BENCH` lines of its stdout."""

    def __init__(self, name, argv, log_dir, file_name=None):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{file_name or name}.log")
        self.log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env, cwd=common.REPO)
        self.hello = self.read()["hello"]

    def read(self):
        for line in self.proc.stdout:
            if line.startswith(common.MARK):
                return json.loads(line[len(common.MARK):])
            self.log.write(line)
        self.log.flush()
        raise RuntimeError(f"{self.name} worker exited (status {self.proc.wait()}); see {self.log_path}:\n"
                           + tail(self.log_path))

    def ask(self, **command):
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer = self.read()
        if not answer.get("ok"):
            raise RuntimeError(f"{self.name}: {answer.get('error')}; see {self.log_path}:\n" + tail(self.log_path))
        return answer

    def close(self):
        try:
            if self.proc.poll() is None:
                self.ask(cmd="quit")
            self.proc.wait(timeout=60)
        except Exception:
            if self.proc.poll() is None:
                self.proc.kill()
        self.log.close()


def tail(path, lines=25):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def forwarded_args(args):
    out = [f"--{k}={getattr(args, k)}" for k in FORWARDED]
    return out + (["--smoke"] if args.smoke else [])


REFERENCE_CONFIGS = ("float32", "bf16", "float32+channels_last", "bf16+channels_last")


def parse_reference(name):
    """`"bf16+channels_last"` -> `("bf16", True)`."""
    if name not in REFERENCE_CONFIGS:
        raise SystemExit(f"unknown reference configuration {name!r}; choose from {', '.join(REFERENCE_CONFIGS)}")
    precision, _, layout = name.partition("+")
    return precision, layout == "channels_last"


def reference_label(torch_precision, channels_last):
    """The worker's name: `torch float32`, `torch bf16_autocast+channels_last`, ..."""
    name = "float32" if torch_precision == "float32" else "bf16_autocast"
    return "torch " + name + ("+channels_last" if channels_last else "")


def target_for(part, views, precision, reference):
    """The target of a ratio: issue 11 (docs/DECISIONS.md §6) and issue 17."""
    if part == "augment":
        return "≥ 3× (2 views)" if views == 2 else "–"
    ref_bf16 = "bf16" in reference
    if precision == "mixed_bfloat16":
        if ref_bf16:
            return "≥ 1.5× (native-bf16 CPU)" if "channels_last" in reference else "–"
        return "≥ 1.8× (native-bf16 CPU)"
    if precision == "float32" and not ref_bf16:
        return "≥ 1.3×"
    return "–"


def ratio_table(ratios):
    rows = ["| part | method | views | ours | ours images/s | ours TFLOP/s | reference | reference images/s | "
            "ratio ours/ref (medians) | paired ratios min – max | target |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ratios:
        tflops = f"{r['ours_tflops']:.3f}" if r.get("ours_tflops") else "–"
        ours = r["ours_precision"] + ("" if r.get("ours_worker", "ours") == "ours" else f" ({r['ours_worker']})")
        rows.append(
            f"| {r['part']} | {r['method'] or '–'} | {r['views']} | {ours} | {r['ours']:.1f} | "
            f"{tflops} | {r['reference_config']} | {r['reference']:.1f} | "
            f"**{r['ratio']:.2f}×** | {r['paired_min']:.2f} – {r['paired_max']:.2f} | {r['target']} |"
        )
    return "\n".join(rows)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    parser.add_argument("--torch_python", default=DEFAULT_TORCH_PYTHON, help="python of the torch venv")
    parser.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    parser.add_argument("--torch_precision", choices=("float32", "bf16"), default="float32",
                        help="the reference's precision: float32 (the official code) or bf16 (torch.autocast "
                             "around the forward passes)")
    parser.add_argument("--channels_last", action="store_true", help="the reference in channels_last memory format")
    parser.add_argument("--extra_references", default="",
                        help="more reference configurations, each its own worker, comma-separated: "
                             + ", ".join(REFERENCE_CONFIGS))
    parser.add_argument("--jit_compile", action="store_true", help="ours: XLA")
    parser.add_argument("--steps_per_execution", type=int, default=1, help="ours: diagnostic only")
    parser.add_argument("--ema", choices=["callback", "off"], default="callback", help="ours: diagnostic only")
    parser.add_argument("--pipeline", choices=["cli", "pretrain_pipeline"], default="cli", help="ours: augment pipeline")
    parser.add_argument("--stack_views", choices=["on", "off"], default="off",
                        help="ours: one forward pass over the stacked views (on) or one per view (off, the default)")
    parser.add_argument("--also_per_view", action="store_true",
                        help="with --stack_views=on: a second worker of ours with --stack_views=off, alternated "
                             "with the others: the stacked-views lever measured side by side")
    parser.add_argument("--inter_op_threads", type=int, default=0, help="ours: TensorFlow's inter-op threads")
    parser.add_argument("--ours_variant", action="append", default=[],
                        help="another worker of ours with these throughput.py options (space-separated), e.g. "
                             "'--inter_op_threads=1'; repeatable; each lever measured side by side")
    parser.add_argument("--log_dir", default="", help="worker logs (default: a temporary directory)")
    return parser


def main(argv=None):
    args = common.apply_smoke(build_parser().parse_args(argv))
    methods = common.split(args.methods)
    dropped = [m for m in methods if m not in ("byol", "myol")]
    if dropped:
        print(f"note: the reference has BYOL and MYOL only; not comparing {', '.join(dropped)}", file=sys.stderr)
        args.methods = ",".join(m for m in methods if m in ("byol", "myol"))
    if not os.path.exists(args.torch_python):
        raise SystemExit(f"{args.torch_python} not found: create the torch venv first (benchmarks/README.md)")
    load_before = common.check_load(args)
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="myol_compare_")
    os.makedirs(log_dir, exist_ok=True)
    shared = forwarded_args(args)
    ours_argv = [sys.executable, os.path.join(HERE, "throughput.py"), "--serve", *shared,
                 f"--steps_per_execution={args.steps_per_execution}", f"--ema={args.ema}",
                 f"--pipeline={args.pipeline}"]
    ours_argv += ["--jit_compile"] if args.jit_compile else []
    ours_argv += [f"--inter_op_threads={args.inter_op_threads}"]
    ours_variants = [("ours", [f"--stack_views={args.stack_views}"])]
    if args.also_per_view and args.stack_views == "on":
        ours_variants.append(("ours per-view", ["--stack_views=off"]))
    for extra in args.ours_variant:
        ours_variants.append((f"ours {extra.strip()}", [f"--stack_views={args.stack_views}", *extra.split()]))
    references = [(args.torch_precision, args.channels_last)]
    for name in common.split(args.extra_references):
        config = parse_reference(name)
        if config not in references:
            references.append(config)
    print(f"workers' logs: {log_dir}", file=sys.stderr)
    ours_workers = [Worker(name, ours_argv + extra, log_dir, file_name=f"ours_{i}")
                    for i, (name, extra) in enumerate(ours_variants)]
    ours = ours_workers[0]
    refs = []
    try:
        for precision, channels_last in references:
            label = reference_label(precision, channels_last)
            argv = [args.torch_python, os.path.join(HERE, "reference_torch.py"), "--serve", *shared,
                    f"--workers={args.workers}", f"--torch_precision={precision}"]
            argv += ["--channels_last"] if channels_last else []
            refs.append(Worker(label, argv, log_dir, file_name=label.replace(" ", "_").replace("+", "_")))
    except Exception:
        for w in [*ours_workers, *refs]:
            w.close()
        raise
    results, ratios = [], []
    try:
        for task in common.tasks(args):
            label = f"{task['part']} {task['method'] or ''} views={task['views'] or 2}"
            workers = [ours] if task["part"] == "augment" else list(ours_workers)
            mine = list(workers)
            workers += refs[:1] if task["part"] == "augment" else refs
            setups = {}
            for w in workers:
                t0 = time.perf_counter()
                setups[w.name] = w.ask(cmd="setup", task=task)
                print(f"[{label}] {w.name} set up in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            reps = {w.name: [] for w in workers}
            rss = {}
            for r in range(args.reps):
                shift = r % len(workers)
                for w in workers[shift:] + workers[:shift]:
                    answer = w.ask(cmd="rep")
                    reps[w.name].append(answer["rep"])
                    rss[w.name] = answer["peak_rss_mb"]
                    rate = answer["rep"]["images"] / answer["rep"]["seconds"]
                    print(f"[{label}] rep {r + 1}/{args.reps} {w.name}: {rate:.1f} images/s "
                          f"({answer['rep'].get('cpu_cores_used_timed', '?')} cores busy in the timed steps, "
                          f"{answer['rep'].get('cpu_cores_used')} in the repetition, "
                          f"ended {answer['rep'].get('finished_utc')} UTC)", file=sys.stderr, flush=True)
            records = {}
            for w in workers:
                info = setups[w.name]
                library = "myol_keras" if w in mine else "torch_reference"
                rec = common.result_record(library, info["task"], info["precision"], reps[w.name],
                                           {"setup_seconds": round(info["setup_seconds"], 2), **info["describe"]})
                rec["peak_rss_mb"] = rss[w.name]
                records[w.name] = rec
                results.append(rec)
            views = records["ours"]["views"]
            flops = (common.train_flops_per_image(task["method"], args.depth, args.width, args.image_size)
                     if task["part"] != "augment" else None)
            pairs = [(m, w) for m in mine for w in workers if w not in mine]
            pairs += [(m, ours) for m in mine[1:]]  # ours / ours per-view: the lever's effect
            for m, w in pairs:
                o, f = records[m.name]["images_per_second"], records[w.name]["images_per_second"]
                paired = [(a["images"] / a["seconds"]) / (b["images"] / b["seconds"])
                          for a, b in zip(reps[m.name], reps[w.name])]
                ours_precision = records[m.name]["precision"]
                reference_config = (records[w.name]["precision"] if w not in mine
                                    else f"{w.name} ({records[w.name]['precision']})")
                ratios.append({
                    "part": task["part"], "method": task["method"], "views": views, "ours_worker": m.name,
                    "ours_precision": ours_precision, "reference_config": reference_config,
                    "ours": o["median"], "reference": f["median"], "ratio": o["median"] / f["median"],
                    "paired_ratios": paired, "paired_min": min(paired), "paired_max": max(paired),
                    "paired_median": statistics.median(paired),
                    "train_gflop_per_image": flops / 1e9 if flops else None,
                    "ours_tflops": o["median"] * flops / 1e12 if flops else None,
                    "reference_tflops": f["median"] * flops / 1e12 if flops else None,
                    "target": (target_for(task["part"], views, ours_precision, records[w.name]["precision"])
                               if w not in mine else "–"),
                })
    finally:
        for w in [*ours_workers, *refs]:
            w.close()

    meta = {"ours": ours.hello, "reference": refs[0].hello, "references": {w.name: w.hello for w in refs},
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in common.load_average()],
            "quiet": load_before[0] <= common.QUIET_LOAD, "log_dir": log_dir}
    m = dict(ours.hello, load_average_before=meta["load_average_before"], quiet=meta["quiet"])
    m["versions"] = dict(ours.hello["versions"], **{k: v for k, v in refs[0].hello["versions"].items() if k != "python"})
    print("\n".join(common.header_lines(m)))
    print(f"**Load average after the run**: {' / '.join(str(x) for x in meta['load_average_after'])}  ")
    variant = []
    if args.jit_compile:
        variant.append("ours with --jit_compile")
    if args.steps_per_execution > 1:
        variant.append(f"ours with steps_per_execution={args.steps_per_execution} (EMA once per execution: not the algorithm)")
    if args.ema == "off":
        variant.append("ours WITHOUT the EMA callback (diagnostic)")
    if args.stack_views == "on":
        variant.append("ours with one forward pass over the stacked views (--stack_views=on)")
    if args.inter_op_threads:
        variant.append(f"ours with {args.inter_op_threads} inter-op thread(s)")
    if len(ours_workers) > 1:
        variant.append("more workers of ours: " + ", ".join(w.name for w in ours_workers[1:]))
    if variant:
        print(f"**Variant**: {'; '.join(variant)}")
    print(f"**References**: {', '.join(w.name for w in refs)}  ")
    print("\n### Ratios (ours / reference, alternating repetitions)\n")
    print(ratio_table(ratios))
    print("\n### Every worker\n")
    print(common.format_table(results))
    common.write_json(args.output, {"meta": meta, "results": results, "ratios": ratios})
    return {"meta": meta, "results": results, "ratios": ratios}


if __name__ == "__main__":
    main()
