"""Pre-training throughput of myol_keras: train step, end to end, augmentation.

    python benchmarks/throughput.py --methods=byol,myol --output=/tmp/ours.json
    python benchmarks/throughput.py --smoke            # CI: one tiny step of each part

Parts (images/s counts source images; see bench_common.py for the protocol):

* `train_step`: the library's own `train_step`, run by `model.fit` exactly as
  `myol_keras.main` compiles it (SGD + WarmupSchedule, coupled weight decay,
  `--jit_compile`, `--steps_per_execution`) with the CLI's per-batch callbacks
  (`EMATargetUpdate`, `TerminateOnNaN`, `Throughput`), on one in-memory batch
  of views (`Dataset.from_tensors(batch).repeat()`).
* `end_to_end`: the same, fed by the CLI's own tf.data pipeline
  (`myol_keras.training.build_dataset`: `augment.myol_view_recipe` /
  `make_view_fn` views in `data.epoch_pipeline`, or `data.pretrain_pipeline` in
  older versions) on the shared CIFAR-10 subset or random uint8 images.
* `augment`: the two-view (and three-view) pipeline alone, iterated: the CLI's
  pipeline, or `data.pretrain_pipeline` + `make_view_fn` (`--pipeline`).

Epoch-boundary callbacks of the CLI (checkpointing, CSV, TensorBoard) are not
included: they cost per epoch, not per step.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's myol_keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bench_common as common  # noqa: E402

LIBRARY = "myol_keras"
_MODEL_CACHE = {}


def versions():
    import keras
    import tensorflow as tf

    import myol_keras

    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "myol_keras": getattr(myol_keras, "__version__", "dev")}


class _StepTimer:
    """Per-batch time stamps taken after every other callback (the EMA included)."""

    def __init__(self):
        import keras

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.stamps = []

            def on_train_batch_end(self, batch, logs=None):
                self.stamps.append((batch, time.perf_counter(), common.cpu_seconds()))

        self.callback = Timer()

    def result(self, batch_size):
        stamps = self.callback.stamps
        if len(stamps) < 2:
            raise RuntimeError("need at least two batch-end stamps; raise --steps")
        (b0, t0, cpu0), (b1, t1, cpu1) = stamps[0], stamps[-1]
        return {"seconds": t1 - t0, "images": (b1 - b0) * batch_size, "steps": b1 - b0, "cpu_seconds": cpu1 - cpu0}


class KerasBench:
    """One task: build (as the CLI does), warm up, then timed repetitions."""

    def __init__(self, task, args):
        import keras
        import tensorflow as tf

        from myol_keras import precision as precision_lib
        from myol_keras import training
        from myol_keras.config import PretrainConfig

        self.task, self.args = task, args
        policy, self.precision_reason = precision_lib.resolve_precision(args.precision)
        self.precision = policy
        # train_step and end_to_end of one method share one model (and its
        # traced train function): building and tracing is most of a smoke run.
        key = (task["method"], args.depth, args.width, args.image_size, args.batch_size, policy,
               args.jit_compile, args.steps_per_execution, args.stack_views, args.gemm_weight_gradient_side)
        cached = _MODEL_CACHE.get(key) if task["part"] != "augment" else None
        if cached is None:
            _MODEL_CACHE.clear()
            keras.backend.clear_session()
            precision_lib.set_precision(policy)
            keras.utils.set_random_seed(args.seed)

        images = common.load_images(args)
        self.num_images = len(images)
        # The CLI's defaults, with this benchmark's network and batch.
        config = PretrainConfig(
            method=task["method"] or "byol", backbone=f"resnet{args.depth}", width=args.width,
            batch_size=args.batch_size, seed=args.seed, precision=args.precision,
            jit_compile=args.jit_compile, drop_remainder=True, threads=0, image_size=args.image_size,
        )
        steps_per_epoch = max(self.num_images // args.batch_size, 1)
        self.config = config
        self.plan = training.RunPlan(
            images=tf.data.Dataset.from_tensor_slices(images), info=None, image_size=args.image_size,
            stem="64px" if args.image_size >= 64 else "cifar", mean=common.CIFAR10_MEAN, std=common.CIFAR10_STD,
            num_images=self.num_images, steps_per_epoch=steps_per_epoch, learning_rate=config.lr,
            run=None, export_root=None, epochs=config.epochs,
        )
        self.model = None
        if task["part"] == "augment":
            if args.pipeline == "cli":
                # Whatever the CLI feeds `fit` (myol_keras.training.build_dataset),
                # with `views` MYOL-recipe views per image.
                from myol_keras.methods import BootstrapMethod

                views = type("Views", (BootstrapMethod,), {"num_views": task["views"]})
                self.dataset = training.build_dataset(config, self.plan, views)
            else:
                from myol_keras import augment
                from myol_keras import data as data_lib

                recipes = [
                    augment.myol_view_recipe(args.image_size, common.CIFAR10_MEAN, common.CIFAR10_STD,
                                             seed=args.seed + 1000 * i)
                    for i in range(task["views"])
                ]
                self.dataset = data_lib.pretrain_pipeline(
                    self.plan.images, augment.make_view_fn(recipes), args.batch_size,
                    drop_remainder=True, shuffle_buffer=config.shuffle_buffer, seed=args.seed,
                ).repeat()
            return

        from myol_keras import callbacks as callbacks_lib
        from myol_keras import schedules

        if cached is None:
            self.model = training.build_model(config, self.plan)
            if hasattr(self.model, "stack_views"):
                self.model.stack_views = args.stack_views == "on"  # read when the step is traced
            schedule = schedules.WarmupSchedule(
                config.lr, steps_per_epoch, config.warmup_epochs, config.warmup_mode,
                config.lr_schedule, steps_per_epoch * config.epochs,
            )
            compile_kwargs = {"jit_compile": args.jit_compile}
            if args.steps_per_execution > 1:
                compile_kwargs["steps_per_execution"] = args.steps_per_execution
            self.model.compile(
                optimizer=keras.optimizers.SGD(schedule, momentum=config.momentum), **compile_kwargs
            )
            _MODEL_CACHE[key] = self.model
        else:
            self.model = cached
        task["views"] = self.model.num_views
        device = args.augment_on == "device" and task["part"] == "end_to_end"
        method_cls = type(self.model)
        self.model.set_device_augmentation(
            method_cls.make_view_fn(args.image_size, self.plan.mean, self.plan.std, seed=config.seed) if device else None)
        pipeline = training.build_dataset(config.replace(augment_on="device" if device else "host"), self.plan, method_cls)
        if task["part"] == "train_step":
            batch = next(iter(pipeline))  # one real batch of views, kept in memory
            self.dataset = tf.data.Dataset.from_tensors(batch).repeat()
        else:
            self.dataset = pipeline
        self._callbacks = lambda: (
            ([callbacks_lib.EMATargetUpdate(config.ema, config.ema_schedule, 10**6,
                                            in_step=args.steps_per_execution > 1)]
             if args.ema == "callback" else [])
            + [keras.callbacks.TerminateOnNaN(raise_error=True), callbacks_lib.Throughput(args.batch_size)]
        )

    def describe(self):
        return {
            "precision_reason": self.precision_reason,
            "jit_compile": self.args.jit_compile,
            "steps_per_execution": self.args.steps_per_execution,
            "ema": self.args.ema,
            "augment_on": self.args.augment_on,
            "pipeline": self.args.pipeline,
            "stack_views": self.args.stack_views,
            "gemm_weight_gradient_side": self.args.gemm_weight_gradient_side,
            "inter_op_threads": self.args.inter_op_threads,
            "num_images": self.num_images,
        }

    def _fit(self, steps):
        timer = _StepTimer()
        # One untimed step first (the EMA callback traces its tf.function in
        # each fit), then `steps` timed steps.
        spe = max(self.args.steps_per_execution, 1)
        total = spe * (1 + -(-steps // spe))
        from myol_keras import conv

        side = self.args.gemm_weight_gradient_side
        with conv.gemm_weight_gradient_side(side if side == "auto" else int(side)):  # read when the step is traced
            self.model.fit(self.dataset, epochs=1, steps_per_epoch=total,
                           callbacks=self._callbacks() + [timer.callback], verbose=0, shuffle=False)
        return timer.result(self.args.batch_size)

    def _iterate(self, batches):
        # A fresh iterator (a new epoch), timed from its creation: the
        # pipeline's start-up counts, as the reference's worker start-up does.
        t0 = time.perf_counter()
        it = iter(self.dataset)
        for _ in range(batches):
            next(it)
        seconds = time.perf_counter() - t0
        del it
        return {"seconds": seconds, "images": batches * self.args.batch_size, "steps": batches}

    def warmup(self):
        if self.args.warmup_steps <= 0:
            return  # every repetition still runs one untimed step first
        if self.task["part"] == "augment":
            self._iterate(max(self.args.warmup_steps, 1))
        else:
            self._fit(max(self.args.warmup_steps, 1))

    def rep(self):
        n = common.steps_for(self.task, self.args)
        return self._iterate(n) if self.task["part"] == "augment" else self._fit(n)

    def close(self):
        self.model = self.dataset = None


def make_bench(task, args):
    return KerasBench(dict(task), args)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    parser.add_argument("--jit_compile", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--steps_per_execution", type=int, default=1,
                        help="Keras steps_per_execution; >1 moves the EMA into the train step (in_step=True), "
                             "as the CLI does, so the algorithm is unchanged")
    parser.add_argument("--augment_on", choices=["host", "device"], default="host",
                        help="end_to_end part: augment in tf.data (host) or inside the train step (device), "
                             "as the CLI's --augment_on")
    parser.add_argument("--ema", choices=["callback", "off"], default="callback",
                        help="off: drop EMATargetUpdate (diagnostic: measures the callback's cost)")
    parser.add_argument("--inter_op_threads", type=int, default=0,
                        help="TensorFlow's inter-op threads (0: TensorFlow's default, one per core), set before "
                             "the first op; 1 runs one op at a time, each on every core")
    parser.add_argument("--stack_views", choices=["on", "off"], default="off",
                        help="on: one forward pass over a step's views with per-view BatchNorm; off (the library "
                             "default): one pass per view, as the reference code")
    parser.add_argument("--gemm_weight_gradient_side", default="auto",
                        help="myol_keras.conv.gemm_weight_gradient_side around fit: auto (the library default: 8 in "
                             "bf16 on a CPU), "
                             "or the largest input side whose conv weight gradient is one GEMM (0: TensorFlow's "
                             "kernel everywhere)")
    parser.add_argument("--pipeline", choices=["cli", "pretrain_pipeline"], default="cli",
                        help="augment part: the CLI's own input pipeline (myol_keras.training.build_dataset), or "
                             "data.pretrain_pipeline + make_view_fn")
    return parser


def main(argv=None):
    args = common.apply_smoke(build_parser().parse_args(argv))
    if args.inter_op_threads:
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    extra = {"variant": {"jit_compile": args.jit_compile, "steps_per_execution": args.steps_per_execution,
                         "ema": args.ema, "augment_on": args.augment_on, "stack_views": args.stack_views,
                         "gemm_weight_gradient_side": args.gemm_weight_gradient_side, "inter_op_threads": args.inter_op_threads}}
    if args.serve:
        common.serve(LIBRARY, versions(), args, make_bench)
        return None
    return common.run_standalone(LIBRARY, versions(), args, make_bench, extra_meta=extra)


if __name__ == "__main__":
    main()
