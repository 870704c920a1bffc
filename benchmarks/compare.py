"""myol_keras vs the PyTorch reference, side by side in one run, as ratios.

    python benchmarks/compare.py --output=benchmarks/results/compare.json
    python benchmarks/compare.py --precision=mixed_bfloat16     # ours in bf16, the reference float32
    python benchmarks/compare.py --smoke                         # plumbing check only

Starts two long-lived workers with the same settings — `throughput.py --serve`
in this Python and `reference_torch.py --serve` in the torch venv
(`--torch_python`, default /work/torchvenv/bin/python) — builds each task in
both, then alternates their timed repetitions (ours first on even
repetitions, the reference first on odd ones) so slow drifts of the machine hit
both alike, and only one of them computes at a time. Prints both result tables
and the ratio table ours / reference for the BYOL and MYOL train step, end to
end, and the augmentation pipeline, with the issue's targets.
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

    def __init__(self, name, argv, log_dir):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
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


def target_for(part, views, precision):
    if part == "augment":
        return "≥ 3× (2 views)" if views == 2 else "–"
    if precision == "mixed_bfloat16":
        return "≥ 1.8× (native-bf16 CPU)"
    return "≥ 1.0×, aim 1.3×"


def ratio_table(ratios):
    rows = ["| part | method | views | ours images/s | reference images/s | ratio ours/ref (medians) | "
            "paired ratios min – max | target |", "|---|---|---|---|---|---|---|---|"]
    for r in ratios:
        rows.append(
            f"| {r['part']} | {r['method'] or '–'} | {r['views']} | {r['ours']:.1f} | {r['reference']:.1f} | "
            f"**{r['ratio']:.2f}×** | {r['paired_min']:.2f} – {r['paired_max']:.2f} | {r['target']} |"
        )
    return "\n".join(rows)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    parser.add_argument("--torch_python", default=DEFAULT_TORCH_PYTHON, help="python of the torch venv")
    parser.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    parser.add_argument("--jit_compile", action="store_true", help="ours: XLA")
    parser.add_argument("--steps_per_execution", type=int, default=1, help="ours: diagnostic only")
    parser.add_argument("--ema", choices=["callback", "off"], default="callback", help="ours: diagnostic only")
    parser.add_argument("--pipeline", choices=["cli", "pretrain_pipeline"], default="cli", help="ours: augment pipeline")
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
    ref_argv = [args.torch_python, os.path.join(HERE, "reference_torch.py"), "--serve", *shared,
                f"--workers={args.workers}"]
    print(f"workers' logs: {log_dir}", file=sys.stderr)
    ours = Worker("ours", ours_argv, log_dir)
    ref = Worker("reference", ref_argv, log_dir)
    results, ratios = [], []
    try:
        for task in common.tasks(args):
            label = f"{task['part']} {task['method'] or ''} views={task['views'] or 2}"
            setups = {}
            for w in (ours, ref):
                t0 = time.perf_counter()
                setups[w.name] = w.ask(cmd="setup", task=task)
                print(f"[{label}] {w.name} set up in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            reps = {"ours": [], "reference": []}
            rss = {}
            for r in range(args.reps):
                for w in ((ours, ref) if r % 2 == 0 else (ref, ours)):
                    answer = w.ask(cmd="rep")
                    reps[w.name].append(answer["rep"])
                    rss[w.name] = answer["peak_rss_mb"]
                    rate = answer["rep"]["images"] / answer["rep"]["seconds"]
                    print(f"[{label}] rep {r + 1}/{args.reps} {w.name}: {rate:.1f} images/s",
                          file=sys.stderr, flush=True)
            records = {}
            for w, library in ((ours, "myol_keras"), (ref, "torch_reference")):
                info = setups[w.name]
                rec = common.result_record(library, info["task"], info["precision"], reps[w.name],
                                           {"setup_seconds": round(info["setup_seconds"], 2), **info["describe"]})
                rec["peak_rss_mb"] = rss[w.name]
                records[w.name] = rec
                results.append(rec)
            o, f = records["ours"]["images_per_second"], records["reference"]["images_per_second"]
            paired = [(a["images"] / a["seconds"]) / (b["images"] / b["seconds"])
                      for a, b in zip(reps["ours"], reps["reference"])]
            views = records["ours"]["views"]
            ratios.append({
                "part": task["part"], "method": task["method"], "views": views,
                "ours": o["median"], "reference": f["median"], "ratio": o["median"] / f["median"],
                "paired_ratios": paired, "paired_min": min(paired), "paired_max": max(paired),
                "paired_median": statistics.median(paired),
                "target": target_for(task["part"], views, records["ours"]["precision"]),
            })
    finally:
        ours.close()
        ref.close()

    meta = {"ours": ours.hello, "reference": ref.hello,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in common.load_average()],
            "quiet": load_before[0] <= common.QUIET_LOAD, "log_dir": log_dir}
    m = dict(ours.hello, load_average_before=meta["load_average_before"], quiet=meta["quiet"])
    m["versions"] = dict(ours.hello["versions"], **{k: v for k, v in ref.hello["versions"].items() if k != "python"})
    print("\n".join(common.header_lines(m)))
    print(f"**Load average after the run**: {' / '.join(str(x) for x in meta['load_average_after'])}  ")
    variant = []
    if args.jit_compile:
        variant.append("ours with --jit_compile")
    if args.steps_per_execution > 1:
        variant.append(f"ours with steps_per_execution={args.steps_per_execution} (EMA once per execution: not the algorithm)")
    if args.ema == "off":
        variant.append("ours WITHOUT the EMA callback (diagnostic)")
    if variant:
        print(f"**Variant**: {'; '.join(variant)}")
    print("\n### Ratios (ours / reference, alternating repetitions)\n")
    print(ratio_table(ratios))
    print("\n### Both libraries\n")
    print(common.format_table(results))
    common.write_json(args.output, {"meta": meta, "results": results, "ratios": ratios})
    return {"meta": meta, "results": results, "ratios": ratios}


if __name__ == "__main__":
    main()
