"""Where our train step spends its time: TensorFlow op types and oneDNN kernels (issue 17).

    python benchmarks/profile_step.py --methods=byol --precision=mixed_bfloat16 \
        --variants=per_view,stacked --steps=2 --output=benchmarks/results/profile_bf16.json
    python benchmarks/profile_step.py --smoke        # plumbing check only

For each variant (`stacked`: one forward pass over the stacked views with
per-view BatchNorm, `stack_views=True`; `per_view`: one pass per view, as the
reference and the library default) the script builds the step exactly as `throughput.py` does
(`model.fit`, the CLI's callbacks, one batch of views in memory), runs one
untimed step, then `--steps` steps under

* TensorFlow's profiler (`tf.profiler.experimental`): every op the executor ran
  with its duration, read back from the trace (`*.xplane.pb`) and summed by op
  type and by part of the step — the online network (forward and gradient),
  the target network, the optimizer, the EMA callback;
* oneDNN's verbose log (`ONEDNN_VERBOSE=1`, set before TensorFlow loads; off
  with `--no_onednn_verbose`): every primitive oneDNN executed, with its
  implementation (`brg_conv_fwd:avx512_core_bf16`, `jit:avx512_core_amx`,
  `gemm:...`, `ref:any`), data types and memory formats, summed by kind,
  propagation and implementation; reorders are listed by source and
  destination format and type (layout conversions and f32 <-> bf16 casts).

Op durations are summed over TensorFlow's inter-op threads, so the total can
exceed the wall time when two ops overlap; the shares are what matter. The
wall time of the profiled steps is reported beside them.
"""

import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

import bench_common as common  # noqa: E402

VARIANTS = ("stacked", "per_view")
ONEDNN_MARK = "@@ONEDNN "
# Element-wise and data-movement op types shown on their own (the rest are grouped by name).
CAST_TYPES = {"Cast", "_MklCast"}
LAYOUT_TYPES = {"Transpose", "_MklTranspose", "ConcatV2", "Split", "SplitV", "Slice", "Pad", "MirrorPad",
                "_MklConcatV2", "Pack", "Unpack", "StridedSlice", "Reshape"}


def op_category(op_type):
    """A coarse category of a TensorFlow op type (the `_Mkl*` rewrites included)."""
    t = op_type.replace("_MklNative", "").replace("_MklFused", "Fused").replace("_Mkl", "")
    if t.startswith("Conv2DBackpropFilter"):
        return "conv backward (weights)"
    if t.startswith("Conv2DBackpropInput"):
        return "conv backward (data)"
    if t.startswith("Conv2D") or t.startswith("FusedConv2D"):
        return "conv forward"
    if t.startswith("FusedBatchNormGrad"):
        return "batchnorm backward"
    if t.startswith("FusedBatchNorm"):
        return "batchnorm forward"
    if t in ("MatMul", "BatchMatMulV2", "FusedMatMul") or t.startswith("MatMul"):
        return "matmul"
    if op_type in CAST_TYPES:
        return "cast"
    if op_type in LAYOUT_TYPES or t in LAYOUT_TYPES:
        return "concat/split/pad/reshape"
    if t in ("Relu", "ReluGrad", "AddV2", "Add", "AddN", "Mul", "Sub", "BiasAdd", "BiasAddGrad", "Sum", "Mean",
             "Maximum", "Sqrt", "Rsqrt", "RealDiv", "Square", "Neg", "Select", "SelectV2", "Tile", "Fill", "Sign"):
        return "element-wise / reductions"
    if t in ("ReadVariableOp", "AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp",
             "ResourceApplyKerasMomentum", "ResourceApplyMomentum", "VarHandleOp", "_Arg", "_Retval", "Identity",
             "Const", "NoOp"):
        return "variables / bookkeeping"
    return "other"


def op_part(name):
    """Which part of the step an op belongs to, from its node name.

    `BootstrapMethod.online_forward` / `target_forward` run under the name
    scopes `online` / `target`; gradient ops carry a `gradient_tape` prefix.
    """
    parts = [p.split("_")[0] if p.startswith(("online_", "target_")) else p for p in name.split("/")]
    if any(p.lower().startswith("sgd") for p in parts):
        return "optimizer (and coupled weight decay)"
    backward = any(p.startswith("gradient") for p in parts)
    if "target" in parts:
        return "target forward"
    if "online" in parts:
        return "online backward" if backward else "online forward"
    if backward:
        return "other backward (loss)"
    return "other (loss, metrics, EMA, input)"


def read_trace(logdir):
    """Sum the executor's op events of the trace in `logdir` by type, category and part."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
    if not files:
        raise RuntimeError(f"no profiler trace under {logdir}")
    space = xplane_pb2.XSpace()
    with open(sorted(files)[-1], "rb") as f:
        space.ParseFromString(f.read())
    by_type, by_category, by_part = (collections.Counter() for _ in range(3))
    counts = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        metadata = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute") and "Compute" not in line.name:
                continue
            for event in line.events:
                name = metadata[event.metadata_id].name
                if ":" not in name or "::" in name:
                    continue  # executor and threadpool bookkeeping, not ops
                node, op_type = name.rsplit(":", 1)
                if op_type in ("StatefulPartitionedCall", "PartitionedCall", "__inference"):
                    continue  # a function call spans its ops: counting it would count them twice
                ms = event.duration_ps / 1e9
                by_type[op_type] += ms
                counts[op_type] += 1
                by_category[op_category(op_type)] += ms
                by_part[op_part(node)] += ms
    return {"by_type": dict(by_type.most_common()), "counts": dict(counts),
            "by_category": dict(by_category.most_common()), "by_part": dict(by_part.most_common())}


def parse_onednn(lines):
    """Sum oneDNN verbose `exec` lines by (kind, propagation, implementation); reorders by format/type."""
    primitives, reorders = collections.defaultdict(lambda: [0, 0.0]), collections.defaultdict(lambda: [0, 0.0])
    total = 0.0
    for line in lines:
        fields = line.strip().split(",")
        if "exec" not in fields:
            continue
        i = fields.index("exec")
        try:
            ms = float(fields[-1])
        except ValueError:
            continue
        kind, impl, prop = fields[i + 2], fields[i + 3], fields[i + 4]
        total += ms
        key = (kind, prop, impl)
        primitives[key][0] += 1
        primitives[key][1] += ms
        if kind == "reorder":
            descs = fields[i + 5].split()
            src = next((d for d in descs if d.startswith("src")), "?")
            dst = next((d for d in descs if d.startswith("dst")), "?")

            def short(desc):  # "src:bf16::blocked:acdb::f0" -> "bf16 acdb"
                p = desc.split(":")
                return f"{p[1]} {p[4] if len(p) > 4 else '?'}"

            reorders[(short(src), short(dst))][0] += 1
            reorders[(short(src), short(dst))][1] += ms
    rows = sorted(([*k, c, ms] for k, (c, ms) in primitives.items()), key=lambda r: -r[4])
    reorder_rows = sorted(([*k, c, ms] for k, (c, ms) in reorders.items()), key=lambda r: -r[3])
    return {"total_ms": total, "primitives": rows, "reorders": reorder_rows}


def markdown(result):
    out = [f"### {result['method']} {result['precision']} {result['variant']}: "
           f"{result['timed_steps']} timed steps at {result['images_per_second']:.1f} images/s while profiled; "
           f"per-step figures over {result['steps']} steps (the fit's untimed first step included)", ""]
    trace = result["trace"]
    total = sum(trace["by_category"].values()) or 1.0
    out += ["| TensorFlow op category | ms per step | share |", "|---|---|---|"]
    for k, v in trace["by_category"].items():
        out.append(f"| {k} | {v / result['steps']:.0f} | {100 * v / total:.1f} % |")
    out += ["", "| part of the step | ms per step | share |", "|---|---|---|"]
    for k, v in trace["by_part"].items():
        out.append(f"| {k} | {v / result['steps']:.0f} | {100 * v / total:.1f} % |")
    out += ["", "| op type (top 15) | calls per step | ms per step |", "|---|---|---|"]
    for k, v in list(trace["by_type"].items())[:15]:
        out.append(f"| {k} | {trace['counts'][k] / result['steps']:.0f} | {v / result['steps']:.0f} |")
    onednn = result.get("onednn")
    if onednn:
        out += ["", f"oneDNN primitives: {onednn['total_ms'] / result['steps']:.0f} ms per step", "",
                "| kind | propagation | implementation | calls per step | ms per step |", "|---|---|---|---|---|"]
        for kind, prop, impl, c, ms in onednn["primitives"][:20]:
            out.append(f"| {kind} | {prop} | `{impl}` | {c / result['steps']:.0f} | {ms / result['steps']:.1f} |")
        if onednn["reorders"]:
            out += ["", "| reorder source | destination | calls per step | ms per step |", "|---|---|---|---|"]
            for src, dst, c, ms in onednn["reorders"][:10]:
                out.append(f"| {src} | {dst} | {c / result['steps']:.0f} | {ms / result['steps']:.1f} |")
    return "\n".join(out)


def profile_variant(method, variant, args, onednn_path):
    import tensorflow as tf

    import throughput

    task = {"part": "train_step", "method": method, "views": None}
    bench = throughput.KerasBench(dict(task), args)
    model = bench.model
    model.stack_views = variant == "stacked"
    model.train_function = None  # traced again with this setting
    bench._fit(1)  # tracing, oneDNN primitive creation, allocator warm-up
    logdir = tempfile.mkdtemp(prefix="myol_profile_")
    offset = _flushed_size(onednn_path)
    tf.profiler.experimental.start(logdir)
    rep = bench._fit(args.steps)  # one untimed step (the EMA callback traces), then the timed ones
    tf.profiler.experimental.stop()
    end = _flushed_size(onednn_path)
    steps = rep["steps"] + 1  # the trace and the oneDNN log hold the untimed step's ops too
    result = {
        "method": method, "variant": variant, "precision": bench.precision, "steps": steps,
        "timed_steps": rep["steps"], "wall_seconds": rep["seconds"] * steps / rep["steps"],
        "images_per_second": rep["images"] / rep["seconds"],
        "trace": read_trace(logdir), "logdir": logdir,
    }
    if onednn_path:
        with open(onednn_path) as f:
            f.seek(offset)
            result["onednn"] = parse_onednn(f.read(end - offset).splitlines())
    bench.close()
    return result


def _flushed_size(path):
    """The log's size once C's and Python's stdout buffers are written (oneDNN prints with printf)."""
    if not path:
        return 0
    import ctypes

    sys.stdout.flush()
    ctypes.CDLL(None).fflush(None)
    return os.path.getsize(path)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    parser.add_argument("--variants", default="stacked,per_view", help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--no_onednn_verbose", action="store_true", help="TensorFlow's profiler only")
    parser.add_argument("--onednn_log", default="", help="where oneDNN's verbose log goes (default: a temp file)")
    # throughput.py's options, at their CLI defaults
    parser.set_defaults(parts="train_step", steps=2, warmup_steps=0, jit_compile=False, steps_per_execution=1,
                        augment_on="host", ema="callback", pipeline="cli", stack_views="off")
    return parser


def main(argv=None):
    args = common.apply_smoke(build_parser().parse_args(argv))
    args.steps = max(args.steps, 1)
    variants = common.split(args.variants)
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown --variants {bad}; choose from {', '.join(VARIANTS)}")
    onednn_path = ""
    if not args.no_onednn_verbose and os.environ.get("_MYOL_PROFILE_CHILD") != "1":
        # oneDNN reads ONEDNN_VERBOSE once, when TensorFlow loads it: run again in a child whose
        # stdout (where oneDNN prints) goes to the log.
        import subprocess

        log = args.onednn_log or tempfile.mktemp(prefix="myol_onednn_", suffix=".log")
        env = dict(os.environ, ONEDNN_VERBOSE="1", _MYOL_PROFILE_CHILD="1", _MYOL_ONEDNN_LOG=log,
                   TF_CPP_MIN_LOG_LEVEL="2")
        with open(log, "w") as out:
            status = subprocess.call([sys.executable, os.path.abspath(__file__), *(argv or sys.argv[1:])],
                                     stdout=out, env=env)
        with open(log) as f:
            for line in f:
                if line.startswith("@@RESULT "):
                    payload = json.loads(line[len("@@RESULT "):])
                    print(payload["markdown"])
                    common.write_json(args.output, payload["json"])
                    return payload["json"]
        raise SystemExit(f"the profiled child failed (status {status}); see {log}")
    onednn_path = os.environ.get("_MYOL_ONEDNN_LOG", "")
    load = common.check_load(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import throughput

    results = []
    for method in common.split(args.methods):
        for variant in variants:
            t0 = time.perf_counter()
            results.append(profile_variant(method, variant, args, onednn_path))
            print(f"[{method} {variant}] profiled in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    meta = common.meta("myol_keras", throughput.versions(), args)
    meta["load_average_before"] = [round(x, 2) for x in load]
    meta["load_average_after"] = [round(x, 2) for x in common.load_average()]
    text = "\n".join(common.header_lines(meta)) + "\n\n" + "\n\n".join(markdown(r) for r in results)
    payload = {"meta": meta, "results": results}
    if onednn_path:
        sys.stdout.write("@@RESULT " + json.dumps({"markdown": text, "json": payload}, default=str) + "\n")
        sys.stdout.flush()
        return payload
    print(text)
    common.write_json(args.output, payload)
    return payload


if __name__ == "__main__":
    main()
