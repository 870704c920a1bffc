"""Title: cost of the online monitors against a pre-training epoch
Description: the quick start (MYOL, digits, ResNet-18 width 16, 32 px, batch 64) trains a few epochs with
the kNN and health monitors measuring after every epoch; each epoch's training time (up to the first
epoch-end callback) and each monitor call are timed in the same process, so the ratio holds on a loaded
machine. Writes docs/monitor_cost.json and prints one line per epoch and a summary.

    PYTHONPATH=$PWD python benchmarks/monitor_cost.py --epochs=6 [--bank_size=512 --query_size=256]
"""

import argparse
import json
import os
import platform
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--bank_size", type=int, default=512)
    parser.add_argument("--query_size", type=int, default=256)
    parser.add_argument("--health_size", type=int, default=256)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--projector_dir", default="", help="also write the kNN queries' embeddings here (Projector)")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "..", "docs", "monitor_cost.json"))
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from myol_keras import callbacks as callbacks_lib
    from myol_keras import monitors
    from myol_keras import training
    from myol_keras.config import PretrainConfig
    from myol_keras.evaluation import features

    config = PretrainConfig(method="myol", dataset="digits", image_size=32, backbone="resnet18", width=16,
                            batch_size=64, epochs=args.epochs, lr=0.05, warmup_epochs=2, weight_decay=1e-4,
                            ema=0.996, alpha=2.0, gamma=1.0, precision=args.precision, verbose=0,
                            run_name="monitor-cost", run_dir="/tmp/monitor-cost-runs")
    plan = training.plan_run(config)
    model, policy, _ = training._compile_model(config, plan, tf.distribute.get_strategy())
    x_train, y_train, _ = features.load_labelled_arrays("digits", "train")
    x_test, y_test, _ = features.load_labelled_arrays("digits", "test")
    found = monitors.build_monitors("knn,rank", image_size=plan.image_size, mean=plan.mean, std=plan.std, every=1,
                                    bank_images=x_train, bank_labels=y_train, query_images=x_test,
                                    query_labels=y_test, bank_size=args.bank_size, query_size=args.query_size,
                                    health_size=args.health_size, seed=config.seed)

    class TrainTime(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    timer = TrainTime()
    ds = training.build_dataset(config, plan, type(model))
    model.fit(ds, epochs=config.epochs, steps_per_epoch=plan.steps_per_epoch, verbose=0, shuffle=False,
              callbacks=[timer, callbacks_lib.EMATargetUpdate(config.ema), *found])
    knn_s, health_s = found[0].seconds, found[1].seconds
    rows = []
    for epoch, (train, a, b) in enumerate(zip(timer.seconds, knn_s, health_s)):
        rows.append({"epoch": epoch + 1, "train_seconds": train, "knn_seconds": a, "health_seconds": b,
                     "ratio": (a + b) / train})
        print(f"epoch {epoch + 1}: train {train:.1f} s, knn {a:.2f} s, health {b:.2f} s, ratio {(a + b) / train:.3f}")
    steady = rows[1:] or rows  # the first calls trace the embedding function
    summary = {
        "setting": "quickstart: MYOL digits resnet18 w16 32px b64", "precision": policy,
        "steps_per_epoch": plan.steps_per_epoch, "bank_size": len(found[0].bank_labels),
        "query_size": len(found[0].query_labels), "health_size": len(found[1].images),
        "median_ratio_after_first": float(np.median([r["ratio"] for r in steady])),
        "first_epoch_ratio": rows[0]["ratio"], "epochs": rows,
        "load_average": os.getloadavg(), "cpu": platform.processor() or platform.machine(),
    }
    print(f"monitor cost per call / epoch training time: median {summary['median_ratio_after_first']:.3f} "
          f"(first call {summary['first_epoch_ratio']:.3f}, tracing included); load {os.getloadavg()[0]:.1f}")
    if args.projector_dir:
        from myol_keras import projector

        queries = found[0]
        written = projector.write_projector(args.projector_dir, queries.features(queries.query_images),
                                            images=queries.query_images, labels=queries.query_labels)
        print(f"projector: {written['config']}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
