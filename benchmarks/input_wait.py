"""What `InputWait` costs: the quick start's training and input pipeline with and without the timing stage.

    python benchmarks/input_wait.py --reps=8 --steps=20 --output=benchmarks/results/input_wait.json

One process, one compiled model (MYOL, the quick start's ResNet-18 width 16 on
the digits at 32 px, batch 64, float32). Two parts, each in alternating order
(plain first on even repetitions):

* `train`: each repetition times `--steps` steps of `fit` on the plain
  pipeline and on the instrumented one, after one untimed step per `fit`; the
  figure is the ratio instrumented / plain of each pair, then their median
  (the instrumented runs also report the measured input-bound share);
* `pipeline`: the stage's own cost, which the step-time noise of a loaded
  machine hides: `--pulls` batches of the quick start (8 of them, augmented
  once and cached, so every batch is ready) pulled by `get_next` inside one
  `tf.function`, plain and instrumented; the difference per batch, in
  microseconds, against the plain step time of the `train` part.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import bench_common  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--pulls", type=int, default=2000)
    parser.add_argument("--parts", default="pipeline,train")
    parser.add_argument("--output", default="")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from myol_keras import callbacks as callbacks_lib
    from myol_keras import training
    from myol_keras.config import PretrainConfig

    load_before = bench_common.load_average()
    config = PretrainConfig(method="myol", dataset="digits", image_size=32, width=16, batch_size=64, epochs=1,
                            precision="float32", run_name="input-wait-bench", run_dir="/tmp/input-wait-bench")
    plan = training.plan_run(config)
    keras.utils.set_random_seed(0)
    model = training.build_model(config, plan)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    plain = training.build_dataset(config, plan, type(model))
    wait = callbacks_lib.InputWait()
    instrumented = wait.instrument(plain)

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                self.start = time.perf_counter()

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.start

    def run(ds, extra):
        timer = Timer()
        history = model.fit(ds, epochs=1, steps_per_epoch=args.steps + 1, verbose=0, shuffle=False,
                            callbacks=[timer, *extra])
        return args.steps / timer.seconds, history.history.get("input_bound_percent", [None])[0]

    import tensorflow as tf

    parts = args.parts.split(",")
    summary = {"load_average_before": load_before, "cpu": bench_common.cpu_info(), "steps": args.steps,
               "pulls": args.pulls}
    if "pipeline" in parts:
        ready = plain.take(8).cache().repeat().prefetch(4)
        ready_wait = callbacks_lib.InputWait()
        pipelines = {"plain": ready, "instrumented": ready_wait.instrument(ready)}

        @tf.function
        def pull(iterator):
            total = tf.constant(0.0)
            for _ in tf.range(args.pulls):
                total += tf.cast(tf.nest.flatten(iterator.get_next())[0][0, 0, 0, 0], tf.float32)
            return total

        iterators = {name: iter(ds) for name, ds in pipelines.items()}
        for iterator in iterators.values():
            pull(iterator)  # trace, fill the caches
        micro = []
        for rep in range(args.reps):
            order = ("plain", "instrumented") if rep % 2 == 0 else ("instrumented", "plain")
            row = {}
            for name in order:
                start = time.perf_counter()
                pull(iterators[name])
                row[name] = 1e6 * (time.perf_counter() - start) / args.pulls
            row["difference"] = row["instrumented"] - row["plain"]
            micro.append(row)
            print(f"pipeline rep {rep}: get_next plain {row['plain']:.1f} us, instrumented "
                  f"{row['instrumented']:.1f} us per batch (+{row['difference']:.1f} us)", flush=True)
        summary["pipeline"] = {"median_us_per_batch": statistics.median(r["difference"] for r in micro),
                               "median_plain_us": statistics.median(r["plain"] for r in micro), "reps": micro}
    if "train" in parts:
        run(plain, [])  # tracing
        rows = []
        for rep in range(args.reps):
            order = ("plain", "instrumented") if rep % 2 == 0 else ("instrumented", "plain")
            row = {}
            for name in order:
                rate, percent = run(plain, []) if name == "plain" else run(instrumented, [wait])
                row[name] = rate
                if percent is not None:
                    row["input_bound_percent"] = percent
            row["ratio"] = row["instrumented"] / row["plain"]
            rows.append(row)
            print(f"train rep {rep}: plain {row['plain']:.2f} steps/s, instrumented {row['instrumented']:.2f} steps/s, "
                  f"ratio {row['ratio']:.3f}, input-bound {row['input_bound_percent']:.1f} %", flush=True)
        ratios = [r["ratio"] for r in rows]
        summary["train"] = {"median_ratio": statistics.median(ratios), "min_ratio": min(ratios),
                            "max_ratio": max(ratios), "median_plain_step_ms": 1e3 / statistics.median(
                                r["plain"] for r in rows), "reps": rows}
        print(f"train: instrumented / plain steps/s: median {summary['train']['median_ratio']:.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    if "pipeline" in parts and "train" in parts:
        share = summary["pipeline"]["median_us_per_batch"] / (1e3 * summary["train"]["median_plain_step_ms"])
        summary["stage_cost_percent_of_step"] = 100 * share
        print(f"the stage costs {summary['pipeline']['median_us_per_batch']:.1f} us per batch: "
              f"{100 * share:.4f} % of a {summary['train']['median_plain_step_ms']:.0f} ms quick-start step")
    summary["load_average_after"] = bench_common.load_average()
    print(f"load {load_before} -> {summary['load_average_after']}")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
