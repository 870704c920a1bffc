"""Shared, standard-library-only parts of the throughput benchmarks.

`throughput.py` (myol_keras, the project's environment) and
`reference_torch.py` (PyTorch, its own venv) both import this module, so they
have the same command line, the same timing protocol, the same JSON and the
same Markdown table; `compare.py` drives both through `--serve`.

Timing protocol (both libraries):

* a *task* is one (part, method, views) combination; `setup` builds it and runs
  `--warmup_steps` untimed steps (tracing, autotuning, allocator warm-up);
* a *repetition* of `train_step` / `end_to_end` starts a fresh epoch (a fresh
  `fit` call / DataLoader iterator), runs one untimed step (ours: the EMA
  callback traces its tf.function there; reference: the workers start) and
  then times the next `--steps` / `--e2e_steps` steps;
* a repetition of `augment` times `--augment_batches` batches from a fresh
  iterator, start-up included (the reference starts its workers every epoch);
* images/s counts *source images* (a batch of 128 images with two views is
  128 images), so train step, end to end and augmentation figures compare.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

PARTS = ("train_step", "end_to_end", "augment")
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
QUIET_LOAD = 0.5
MARK = "@@BENCH "  # prefix of the protocol lines in --serve mode
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "cifar10_subset.npz"))


def cpu_info(path="/proc/cpuinfo"):
    """`(model name, flags relevant here that are present, logical cpus)`."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("unknown", "", platform.processor()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, [f for f in RELEVANT_FLAGS if f in flags], os.cpu_count()


def load_average():
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def peak_rss_mb():
    """Peak resident memory of this process and of its finished children (MB)."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(self_kb / 1024.0, 1), round(child_kb / 1024.0, 1)


def add_common_args(parser):
    """The command line both scripts share (compare.py passes it on)."""
    p = parser
    p.add_argument("--methods", default="byol,myol", help="comma-separated methods (train_step, end_to_end)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--depth", type=int, default=18, help="ResNet depth (the reference supports 18)")
    p.add_argument("--width", type=int, default=64, help="channels of the first ResNet stage (64 = standard)")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--precision", default="float32",
                   help="float32 | mixed_bfloat16 | mixed_float16 | auto (the reference is always float32)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per task (median and spread)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per repetition (train_step part)")
    p.add_argument("--e2e_steps", type=int, default=10, help="timed steps per repetition (end_to_end part)")
    p.add_argument("--augment_batches", type=int, default=36,
                   help="batches per repetition (augment part; timed from a fresh iterator, start-up included; "
                        "36 x 128 = one epoch of the shared subset)")
    p.add_argument("--augment_views", default="2,3", help="view counts for the augment part")
    p.add_argument("--warmup_steps", type=int, default=2, help="untimed steps after building a task")
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="an .npz with x_train (uint8 NHWC), or 'random' for random uint8 images")
    p.add_argument("--num_images", type=int, default=4608, help="number of random images (--data=random)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="", help="write the results as JSON here")
    p.add_argument("--require_quiet", action="store_true",
                   help=f"refuse to run when the 1-min load average is above {QUIET_LOAD}")
    p.add_argument("--smoke", action="store_true",
                   help="one tiny step of each part (width 4, 16 px, batch 8, random data): CI only, not a figure")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # compare.py's worker mode
    return parser


def apply_smoke(args):
    if args.smoke:
        args.width, args.image_size, args.batch_size = 4, 16, 8
        args.reps, args.steps, args.e2e_steps, args.augment_batches, args.warmup_steps = 1, 1, 1, 1, 0
        args.data, args.num_images = "random", 64
    return args


def split(value):
    return [v.strip() for v in str(value).split(",") if v.strip()]


def tasks(args):
    """The (part, method, views) tasks requested; views None = the method's own."""
    parts = split(args.parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"unknown --parts {unknown}; choose from {', '.join(PARTS)}")
    out = []
    for m in split(args.methods):  # method-major: a method's parts share one built model
        out += [{"part": part, "method": m, "views": None} for part in PARTS if part in parts and part != "augment"]
    if "augment" in parts:
        out += [{"part": "augment", "method": None, "views": int(v)} for v in split(args.augment_views)]
    return out


def steps_for(task, args):
    return {"train_step": args.steps, "end_to_end": args.e2e_steps, "augment": args.augment_batches}[task["part"]]


def resnet_convolutions(depth=18, width=64, image_size=32):
    """The convolutions of one ResNet-18/34 (basic blocks) pass, in order.

    The `backbones.ResNet` / torchvision network with the MYOL stem (3x3 s1;
    the 64-px stem's max-pool halves the side first). Each entry is a dict
    with `kernel`, `c_in`, `c_out`, `side` (input side), `stride`, `side_out`
    and `name`; None for other depths.
    """
    if depth not in (18, 34):
        return None
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[depth]

    def conv(name, kernel, c_in, c_out, side, stride):
        return {"name": name, "kernel": kernel, "c_in": c_in, "c_out": c_out, "side": side, "stride": stride,
                "side_out": -(-side // stride)}

    convs = [conv("stem", 3, 3, width, image_size, 1)]
    side = -(-image_size // 2) if image_size >= 64 else image_size  # the 64-px stem's max-pool
    c_in = width
    for stage, n in enumerate(blocks):
        c_out = width * 2 ** stage
        for b in range(n):
            stride = 2 if (stage > 0 and b == 0) else 1
            prefix = f"stage{stage + 1}.block{b + 1}"
            convs.append(conv(f"{prefix}.conv1", 3, c_in, c_out, side, stride))
            side = -(-side // stride)
            convs.append(conv(f"{prefix}.conv2", 3, c_out, c_out, side, 1))
            if stride != 1 or c_in != c_out:
                convs.append(conv(f"{prefix}.shortcut", 1, c_in, c_out, side * stride, stride))
            c_in = c_out
    return convs


def conv_macs(conv):
    """Multiply-accumulates of one convolution for one image: k*k*c_in*c_out*h_out*w_out."""
    return conv["kernel"] ** 2 * conv["c_in"] * conv["c_out"] * conv["side_out"] ** 2


def forward_macs(depth=18, width=64, image_size=32, projector_hidden=2048, projection=128):
    """Multiply-accumulates of one image through ResNet-18/34 (basic blocks) + projector + predictor.

    The convolutions of `resnet_convolutions`; the heads as two Dense layers
    each. ResNet-18, width 64, CIFAR stem, 32 px: 0.556 GMAC (1.11 GFLOP).
    """
    convs = resnet_convolutions(depth, width, image_size)
    if convs is None:
        return None
    macs = sum(conv_macs(c) for c in convs)
    feature = convs[-1]["c_out"]
    heads = feature * projector_hidden + projector_hidden * projection  # projector
    heads += projection * projector_hidden + projector_hidden * projection  # predictor
    return macs + heads


def train_flops_per_image(method, depth=18, width=64, image_size=32):
    """Approximate FLOPs of one training step per source image (2 FLOPs per MAC).

    An online pass counts 3 forward-equivalents (forward, gradient of the
    input, gradient of the weights), a target pass 1: BYOL has 2 online + 2
    target passes (8 forwards: ≈ 8.9 GFLOP at ResNet-18 width 64, 32 px),
    MYOL one more online pass for the mixed batch (11 forwards: ≈ 12.2 GFLOP).
    Element-wise work (BatchNorm, ReLU, the optimizer, the EMA) is not counted.
    """
    macs = forward_macs(depth, width, image_size)
    passes = {"byol": 2 * 3 + 2, "myol": 3 * 3 + 2}.get(method)
    if macs is None or passes is None:
        return None
    return 2.0 * macs * passes


def load_images(args):
    """uint8 NHWC numpy images: the npz's x_train, or random ones."""
    import numpy as np

    if args.data == "random":
        rng = np.random.default_rng(args.seed)
        return rng.integers(0, 256, size=(args.num_images, args.image_size, args.image_size, 3), dtype=np.uint8)
    with np.load(args.data) as arrays:
        return np.ascontiguousarray(arrays["x_train"]).astype(np.uint8)


def summarise(reps):
    """images/s median and spread over repetitions of `{"seconds", "images"}`."""
    rates = [r["images"] / r["seconds"] for r in reps if r["seconds"] > 0]
    if not rates:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "spread_pct": float("nan"), "reps": []}
    med = statistics.median(rates)
    return {
        "median": med,
        "min": min(rates),
        "max": max(rates),
        "spread_pct": 100.0 * (max(rates) - min(rates)) / med if med else float("nan"),
        "reps": rates,
        "step_seconds_median": statistics.median(r["seconds"] / max(r["steps"], 1) for r in reps),
    }


def meta(library, versions, args, extra=None):
    model, flags, cpus = cpu_info()
    load = load_average()
    return {
        "library": library,
        "cpu_model": model,
        "cpu_flags": flags,
        "logical_cpus": cpus,
        "load_average_before": [round(x, 2) for x in load],
        "quiet": load[0] <= QUIET_LOAD,
        "versions": dict(versions, python=platform.python_version()),
        "settings": {k: v for k, v in vars(args).items() if k not in ("serve", "output")},
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }


def check_load(args, stream=sys.stderr):
    """Warn loudly (or refuse with --require_quiet) when the machine is busy."""
    load = load_average()
    if load[0] > QUIET_LOAD:
        bar = "!" * 78
        message = (
            f"{bar}\nWARNING: load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} is above {QUIET_LOAD}:"
            " other work shares the CPU, so these figures are NOT comparable measurements.\n{bar}"
        ).replace("{bar}", bar)
        print(message, file=stream, flush=True)
        if args.require_quiet:
            print(f"refusing to run (--require_quiet): load average {load[0]:.2f} > {QUIET_LOAD}", file=stream)
            raise SystemExit(3)
    return load


def header_lines(m):
    flags = ", ".join(m["cpu_flags"]) or "none of " + ", ".join(RELEVANT_FLAGS)
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    load = m["load_average_before"]
    lines = [
        f"**CPU**: {m['cpu_model']} ({m['logical_cpus']} logical CPUs); flags: {flags}  ",
        f"**Versions**: {versions}  ",
        f"**Load average before the run**: {load[0]} / {load[1]} / {load[2]}"
        + ("" if m["quiet"] else " — **LOADED MACHINE: provisional figures**") + "  ",
    ]
    s = m["settings"]
    lines.append(
        f"**Settings**: ResNet-{s['depth']} width {s['width']}, {s['image_size']} px, batch {s['batch_size']}, "
        f"precision {s.get('precision')}, {s['reps']} reps; data {s['data']}"
        + (" (SMOKE: not a measurement)" if s.get("smoke") else "")
    )
    return lines


def format_table(results):
    rows = [
        "| library | part | method | views | precision | images/s (median) | min – max | spread % | s/step | peak RSS MB (self / children) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r["images_per_second"]
        rows.append(
            f"| {r['library']} | {r['part']} | {r['method'] or '–'} | {r['views']} | {r['precision']} | "
            f"{s['median']:.1f} | {s['min']:.1f} – {s['max']:.1f} | {s['spread_pct']:.1f} | "
            f"{s.get('step_seconds_median', float('nan')):.3f} | {r['peak_rss_mb'][0]} / {r['peak_rss_mb'][1]} |"
        )
    return "\n".join(rows)


def result_record(library, task, precision, reps, extra=None):
    return {
        "library": library,
        "part": task["part"],
        "method": task["method"],
        "views": task["views"],
        "precision": precision,
        "images_per_second": summarise(reps),
        "repetitions": reps,
        "peak_rss_mb": list(peak_rss_mb()),
        **(extra or {}),
    }


def write_json(path, payload):
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    os.replace(tmp, path)


def run_standalone(library, versions, args, make_bench, extra_meta=None, stream=sys.stdout):
    """Run every task (setup, `--reps` repetitions), print the table, write JSON."""
    check_load(args)
    m = meta(library, versions, args, extra_meta)
    results = []
    for task in tasks(args):
        t0 = time.perf_counter()
        bench = make_bench(task, args)
        bench.warmup()
        setup_seconds = time.perf_counter() - t0
        reps = [timed_rep(bench) for _ in range(args.reps)]
        record = result_record(library, bench.task, bench.precision, reps,
                               {"setup_seconds": round(setup_seconds, 2), **bench.describe()})
        results.append(record)
        bench.close()
        s = record["images_per_second"]
        print(f"[{library}] {task['part']} {task['method'] or ''} views={record['views']}: "
              f"{s['median']:.1f} images/s (setup {setup_seconds:.1f} s); reps "
              + ", ".join(f"{r['images'] / r['seconds']:.1f} ({r['cpu_cores_used']} cores)" for r in reps),
              file=sys.stderr, flush=True)
    m["load_average_after"] = [round(x, 2) for x in load_average()]
    print("\n".join(header_lines(m)), file=stream)
    print("", file=stream)
    print(format_table(results), file=stream)
    payload = {"meta": m, "results": results}
    write_json(args.output, payload)
    return payload


def cpu_seconds():
    """User + system CPU time of this process, all threads (children not included)."""
    t = os.times()
    return t.user + t.system


def timed_rep(bench):
    """`bench.rep()` plus the cores this process kept busy meanwhile and when it ended.

    `cpu_cores_used` covers the whole repetition (a fresh `fit` or iterator and
    its untimed step included); `cpu_cores_used_timed`, when the bench reports
    `cpu_seconds` for its timed steps, covers those steps only. About 2 on a
    quiet 2-core machine for a train step; well below it, the step left a core
    idle or something else took CPU time.
    """
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    rep = bench.rep()
    cpu1, wall = cpu_seconds(), time.perf_counter() - wall0
    rep["cpu_cores_used"] = round((cpu1 - cpu0) / wall, 2)
    if rep.get("cpu_seconds") is not None and rep["seconds"] > 0:
        rep["cpu_cores_used_timed"] = round(rep["cpu_seconds"] / rep["seconds"], 2)
    rep["finished_utc"] = time.strftime("%H:%M:%S", time.gmtime())
    return rep


def serve(library, versions, args, make_bench):
    """compare.py's worker: JSON commands on stdin, `@@BENCH {json}` replies on stdout."""

    def reply(obj):
        sys.stdout.write(MARK + json.dumps(obj, default=str) + "\n")
        sys.stdout.flush()

    reply({"hello": meta(library, versions, args)})
    bench = None
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        command = json.loads(line)
        try:
            if command["cmd"] == "setup":
                if bench is not None:
                    bench.close()
                t0 = time.perf_counter()
                bench = make_bench(command["task"], args)
                bench.warmup()
                reply({"ok": True, "setup_seconds": time.perf_counter() - t0,
                       "precision": bench.precision, "task": bench.task, "describe": bench.describe()})
            elif command["cmd"] == "rep":
                rep = timed_rep(bench)
                reply({"ok": True, "rep": rep, "peak_rss_mb": list(peak_rss_mb())})
            elif command["cmd"] == "quit":
                reply({"ok": True})
                break
            else:
                reply({"ok": False, "error": f"unknown command {command['cmd']!r}"})
        except Exception as e:  # the driver reports it and goes on
            import traceback

            traceback.print_exc()
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"})
    if bench is not None:
        bench.close()
