"""Startup time and private memory of pre-training on large image folders, and pipeline speed.

    python benchmarks/scale.py --sizes=10000,100000,500000 --output=benchmarks/results/scale.json
    python benchmarks/scale.py --smoke                       # CI: 300 tiny images, not a figure
    python benchmarks/scale.py --sizes=10000 --pythonpath=/work/main --label=before   # another checkout

For every size N the script writes a synthetic class-folder dataset of N JPEGs
(`train/<class>/<i>.jpg`, smooth random images, `--classes` classes) into a
temporary directory (kept between sizes with `--keep`), then runs the real CLI
(`python -m myol_keras.main --dataset=folder`) capped to one epoch of one step,
twice: **cold** (an empty decoded-image cache: the images are decoded and the
cache is built) and **warm** (the cache is reused). For each run it reports:

* `startup s`: from starting the process to the CLI's "N images, S steps/epoch"
  line, printed once the data is loaded, the model is built and the run
  directory is ready, just before the first step (TensorFlow's import, ~6 s
  here, included);
* `total s`: the whole run (one training step, the checkpoint and the export
  included);
* `peak private MB`: the largest `RssAnon` of `/proc/<pid>/status`, polled
  every 20 ms. Not RSS: the pages of the memory-mapped cache count in RSS
  (as `RssFile`) but belong to the page cache, which the kernel reclaims.

Then, in a separate process, the two-view pre-training pipeline
(`data.epoch_pipeline` with the MYOL views, as `training.build_dataset` builds
it) is timed side by side on the same images: from the memory-mapped cache
with the global permutation (today's path), from the same images in memory
with the global permutation, and in memory through the previous pipeline
(`--shuffle_buffer=10000`: a `tf.data` shuffle buffer of images over a
`Dataset.from_tensor_slices`, which this option keeps); each also without the
views (`view_fn=None`: order, gather and batch alone, ten times as many
batches). The in-memory variants run while the images fit in
`--in_memory_limit_mb`.

`--pythonpath` runs the CLI of another checkout (e.g. one from before the
cache existed), so before/after figures come from the same script. The cache
directory is passed through `MYOL_KERAS_CACHE_DIR` (older versions ignore it).
Background work shares the cores: the load average is recorded beside every
figure.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_common as common  # noqa: E402

REPO = common.REPO
STARTUP_MARKER = " steps/epoch"  # the CLI's "precision ...; N images, S steps/epoch" line
POLL_SECONDS = 0.02


# ---------------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------------


def write_folder(root, num_images, classes, size, seed=0, progress=True):
    """`root/train/cNNN/NNNNNNN.jpg`: `num_images` smooth random JPEGs over `classes` folders.

    Idempotent: a complete folder carries `root/.complete` and is reused.
    """
    import numpy as np
    from PIL import Image

    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for k in range(classes):
        os.makedirs(os.path.join(root, "train", f"c{k:03d}"), exist_ok=True)
    for i in range(num_images):
        # A 4x4 random colour field, upsampled: smooth like a photo, ~2 KB as JPEG.
        small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((size, size), Image.BILINEAR)
        k = i * classes // num_images  # class-sorted, as folders and Tiny-ImageNet are listed
        image.save(os.path.join(root, "train", f"c{k:03d}", f"{i:07d}.jpg"), quality=90)
        if progress and (i + 1) % 10000 == 0:
            rate = (i + 1) / (time.perf_counter() - start)
            print(f"  wrote {i + 1}/{num_images} JPEGs ({rate:.0f}/s)", file=sys.stderr, flush=True)
    with open(marker, "w") as f:
        f.write(str(num_images))
    return root


def folder_megabytes(root):
    total = 0
    for directory, _, files in os.walk(root):
        total += sum(os.path.getsize(os.path.join(directory, f)) for f in files)
    return round(total / 2**20, 1)


# ---------------------------------------------------------------------------------------------------
# Measured child processes
# ---------------------------------------------------------------------------------------------------


def rss_anon_kb(pid):
    """`RssAnon` of a process in kB (None once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_measured(argv, env, timeout):
    """Run `argv`; returns exit status, stdout/stderr tails, marker time, total time, peak RssAnon."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    marker = {}
    out_lines, err_lines = [], []

    def read(stream, lines, watch):
        for line in stream:
            lines.append(line)
            if watch and STARTUP_MARKER in line and "startup" not in marker:
                marker["startup"] = time.perf_counter() - start

    readers = [threading.Thread(target=read, args=(proc.stdout, out_lines, True), daemon=True),
               threading.Thread(target=read, args=(proc.stderr, err_lines, False), daemon=True)]
    for reader in readers:
        reader.start()
    peak = 0
    while proc.poll() is None:
        value = rss_anon_kb(proc.pid)
        if value:
            peak = max(peak, value)
        if time.perf_counter() - start > timeout:
            proc.kill()
            break
        time.sleep(POLL_SECONDS)
    proc.wait()
    for reader in readers:
        reader.join(timeout=10)
    return {
        "status": proc.returncode,
        "startup_seconds": round(marker["startup"], 2) if "startup" in marker else None,
        "total_seconds": round(time.perf_counter() - start, 2),
        "peak_rss_anon_mb": round(peak / 1024.0, 1),
        "stdout_tail": "".join(out_lines[-5:]),
        "stderr_tail": "".join(err_lines[-5:]),
    }


def child_env(args, cache_dir):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", MYOL_KERAS_CACHE_DIR=cache_dir)
    env["PYTHONPATH"] = args.pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("MYOL_KERAS_FAULT", None)
    return env


def cli_argv(args, folder, work, name):
    return [
        sys.executable, "-m", "myol_keras.main", "--method=myol", "--dataset=folder", f"--data_dir={folder}",
        "--backbone=resnet18", f"--width={args.width}", f"--batch_size={args.batch_size}", "--epochs=1",
        "--steps_per_epoch=1", "--warmup_epochs=0", "--precision=float32", "--projector_hidden_dim=32",
        "--projection_dim=16", "--predictor_hidden_dim=32", "--verbose=0", "--overwrite",
        f"--run_dir={work}/runs", f"--export_dir={work}/exports", f"--run_name={name}",
    ]


PIPELINE_CHILD = r"""
import json, os, sys, time
import numpy as np
import tensorflow as tf
from myol_keras import data
from myol_keras.methods import get_method

settings = json.loads(sys.argv[1])
batch, batches, reps, limit = settings["batch_size"], settings["batches"], settings["reps"], settings["in_memory_limit_mb"]
start = time.perf_counter()
images, info = data.load_pretrain_array("folder", settings["folder"])
load_seconds = time.perf_counter() - start  # listing, fingerprint, opening the cache (TF already imported)
size = int(images.shape[1])
view_fn = get_method("myol").make_view_fn(size, info.mean, info.std, seed=0)
sources = {"cache, global permutation": lambda: (images, 0)}
if images.nbytes <= limit * 2**20:
    in_memory = np.array(images)
    sources["in memory, global permutation"] = lambda: (in_memory, 0)
    sources["in memory, shuffle buffer 10000 (previous pipeline)"] = lambda: (
        tf.data.Dataset.from_tensor_slices(in_memory), 10000)
variants = {}
for name, source in sources.items():
    variants[name] = (source, view_fn, batches)
    variants[name + ", no views"] = (source, None, 10 * batches)  # the data part alone: order, gather, batch
rates = {name: [] for name in variants}
for rep in range(reps):
    names = list(variants) if rep % 2 == 0 else list(reversed(variants))
    for name in names:
        source, fn, count = variants[name]
        images_or_ds, buffer = source()
        it = iter(data.epoch_pipeline(images_or_ds, fn, batch, seed=0, shuffle_buffer=buffer))
        next(it)  # tracing and the first shuffle
        start = time.perf_counter()
        for _ in range(count):
            next(it)
        rates[name].append(count * batch / (time.perf_counter() - start))
print("@@PIPELINE " + json.dumps({"rates": rates, "num_images": int(len(images)), "load_seconds": load_seconds}))
"""


def measure_pipeline(args, folder, cache_dir):
    settings = {"folder": folder, "batch_size": args.pipeline_batch_size, "batches": args.pipeline_batches,
                "reps": args.pipeline_reps, "in_memory_limit_mb": args.in_memory_limit_mb}
    result = subprocess.run([sys.executable, "-c", PIPELINE_CHILD, json.dumps(settings)],
                            env=child_env(args, cache_dir), capture_output=True, text=True, timeout=args.timeout)
    for line in result.stdout.splitlines():
        if line.startswith("@@PIPELINE "):
            payload = json.loads(line[len("@@PIPELINE "):])
            rates = {name: {"median": sorted(r)[len(r) // 2], "reps": [round(x, 1) for x in r]}
                     for name, r in payload["rates"].items()}
            return rates, round(payload["load_seconds"], 2)
    return {"error": result.stderr[-1500:]}, None


# ---------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,500000", help="comma-separated image counts")
    p.add_argument("--image_px", type=int, default=64, help="side of the synthetic JPEGs")
    p.add_argument("--classes", type=int, default=200, help="class folders (images are class-sorted)")
    p.add_argument("--batch_size", type=int, default=64, help="batch of the one-step CLI run")
    p.add_argument("--width", type=int, default=4, help="ResNet-18 width of the CLI run (startup, not speed)")
    p.add_argument("--pipeline_batch_size", type=int, default=128)
    p.add_argument("--pipeline_batches", type=int, default=20, help="timed batches per repetition")
    p.add_argument("--pipeline_reps", type=int, default=3)
    p.add_argument("--in_memory_limit_mb", type=int, default=2048,
                   help="time the in-memory pipelines only while the images fit in this")
    p.add_argument("--skip_pipeline", action="store_true")
    p.add_argument("--skip_runs", action="store_true",
                   help="only the pipeline figures (reuses the cache of an earlier --keep run in --work_dir)")
    p.add_argument("--work_dir", default="", help="where the folders, caches and runs go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (reuse its folders next time)")
    p.add_argument("--pythonpath", default=REPO, help="the checkout whose myol_keras the CLI runs")
    p.add_argument("--label", default="", help="a name for this set of figures (e.g. before / after)")
    p.add_argument("--timeout", type=float, default=7200)
    p.add_argument("--require_quiet", action="store_true",
                   help=f"refuse to run when the 1-min load average is above {common.QUIET_LOAD}")
    p.add_argument("--output", default="", help="write the results as JSON here")
    p.add_argument("--smoke", action="store_true", help="300 tiny images, one pipeline batch: CI only, not a figure")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.image_px, args.classes, args.batch_size = "300", 32, 10, 16
        args.pipeline_batch_size, args.pipeline_batches, args.pipeline_reps = 16, 1, 1
    return args


def format_table(m, rows):
    lines = [
        f"**CPU**: {m['cpu_model']} ({m['logical_cpus']} logical CPUs; flags: {', '.join(m['cpu_flags']) or 'none'}); "
        "background work shares the cores: the load average is beside each figure  ",
        f"**Checkout**: {m['pythonpath']}" + (f" ({m['label']})" if m["label"] else "") + "  ",
        f"**Settings**: {m['image_px']}-px JPEGs, {m['classes']} class folders, CLI: MYOL, ResNet-18 width "
        f"{m['width']}, batch {m['batch_size']}, 1 epoch capped to 1 step"
        + (" (SMOKE: not a measurement)" if m["smoke"] else ""),
        "",
        "| images | folder MB | run | startup s | total s | peak private MB (RssAnon) | load before | exit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for run in [run for run in ("cold", "warm") if run in r]:
            x = r[run]
            load = " / ".join(f"{v:.2f}" for v in x["load_before"])
            lines.append(f"| {r['num_images']} | {r['folder_mb']} | {run} | {x['startup_seconds']} | "
                         f"{x['total_seconds']} | {x['peak_rss_anon_mb']} | {load} | {x['status']} |")
    loads = ", ".join(f"{r['num_images']} images {r['cached_load_seconds']} s" for r in rows
                      if r.get("cached_load_seconds") is not None)
    if loads:
        lines += ["", f"`data.load_pretrain_array` from the warm cache (listing, fingerprint, opening; TensorFlow "
                      f"already imported): {loads}."]
    if any("pipeline" in r for r in rows):
        lines += ["", f"Two-view MYOL pipeline (`data.epoch_pipeline`), batch {m['pipeline_batch_size']}, images/s "
                      f"(median of {m['pipeline_reps']} alternating repetitions of {m['pipeline_batches']} batches; "
                      "'no views': ten times as many batches):", "",
                  "| images | pipeline | images/s | repetitions | load before |", "|---|---|---|---|---|"]
        for r in rows:
            for name, s in r.get("pipeline", {}).items():
                if name == "error":
                    lines.append(f"| {r['num_images']} | error | {s[:200]!r} | | |")
                    continue
                load = " / ".join(f"{v:.2f}" for v in r["pipeline_load_before"])
                lines.append(f"| {r['num_images']} | {name} | {s['median']:.0f} | {s['reps']} | {load} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sizes = [int(s) for s in common.split(args.sizes)]
    work = args.work_dir or tempfile.mkdtemp(prefix="myol-scale-")
    os.makedirs(work, exist_ok=True)
    cpu_model, flags, cpus = common.cpu_info()
    m = {"cpu_model": cpu_model, "cpu_flags": flags, "logical_cpus": cpus, "label": args.label,
         "pythonpath": args.pythonpath, "smoke": args.smoke, "work_dir": work,
         "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         **{k: getattr(args, k) for k in ("image_px", "classes", "batch_size", "width", "pipeline_batch_size",
                                          "pipeline_batches", "pipeline_reps")}}
    common.check_load(args, stream=sys.stderr)  # today's stderr (bench_common's default is bound at its import)
    rows = []
    try:
        for n in sizes:
            folder = os.path.join(work, f"folder-{n}-{args.image_px}px")
            t0 = time.perf_counter()
            write_folder(folder, n, min(args.classes, n), args.image_px)
            row = {"num_images": n, "write_seconds": round(time.perf_counter() - t0, 1),
                   "folder_mb": folder_megabytes(folder)}
            cache_dir = os.path.join(work, f"cache-{n}-{args.label or 'run'}")
            if not args.skip_runs:
                shutil.rmtree(cache_dir, ignore_errors=True)
            for run in () if args.skip_runs else ("cold", "warm"):
                load = common.load_average()
                result = run_measured(cli_argv(args, folder, work, f"scale-{n}-{run}"), child_env(args, cache_dir),
                                      args.timeout)
                result["load_before"] = [round(v, 2) for v in load]
                row[run] = result
                print(f"[scale] {n} images, {run}: startup {result['startup_seconds']} s, total "
                      f"{result['total_seconds']} s, peak RssAnon {result['peak_rss_anon_mb']} MB, exit "
                      f"{result['status']}", file=sys.stderr, flush=True)
                if result["status"] != 0:
                    print(result["stderr_tail"], file=sys.stderr)
            if not args.skip_pipeline:
                row["pipeline_load_before"] = [round(v, 2) for v in common.load_average()]
                row["pipeline"], row["cached_load_seconds"] = measure_pipeline(args, folder, cache_dir)
                print(f"[scale] {n} images, pipeline: {row['pipeline']}", file=sys.stderr, flush=True)
            rows.append(row)
            common.write_json(args.output, {"meta": m, "results": rows})
    finally:
        if not args.keep and not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    m["load_average_after"] = [round(v, 2) for v in common.load_average()]
    print(format_table(m, rows))
    payload = {"meta": m, "results": rows}
    common.write_json(args.output, payload)
    return payload


if __name__ == "__main__":
    main()
