"""Pre-train a BYOL-family method and export its encoder.

    python -m myol_keras.main --method=myol --dataset=stl10
    python -m myol_keras.main --flagfile=flags/quickstart.cfg

Every run writes one run directory (`--run_dir/<run_name>/`) with the
resolved flags (`flags.txt`, reusable as a `--flagfile`), `config.json`,
`history.csv` (one row per epoch, learning rate and EMA tau included),
TensorBoard logs and `BackupAndRestore` checkpoints. Running the same command
again after an interruption resumes from the last completed epoch; rerunning
a finished run says where its outputs are. The online backbone is exported to
`--export_dir/<run_name>/<version>/` (see `myol_keras.export`).

Usage errors (unknown names, bad values, missing data) print one line and exit
with status 2 before anything is written.
"""

import inspect
import json
import math
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

from myol_keras import cli
from myol_keras.cli import UsageError

# Keep TensorFlow's native INFO/WARNING chatter (grappler cost-model notes and
# the like) out of the progress output; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROG = "myol_keras.main"
METHOD_NAMES = ("byol", "myol", "unmix", "imix", "tribyol", "repmix", "ccsl", "cssl", "simclr", "moco")
BACKBONES = {"resnet18": 18, "resnet34": 34, "resnet50": 50}

FLAGS = flags.FLAGS

# --- what to train on ------------------------------------------------------
flags.DEFINE_string("method", "myol", f"Pre-training method: one of {', '.join(METHOD_NAMES)} (ccsl and cssl are RECONSTRUCTIONS with theta+=0.8, theta-=0.2, not the official losses; see docs/METHODS.md).")
flags.DEFINE_string(
    "dataset",
    "digits",
    "Dataset: tfds cifar10, cifar100, stl10, fashion_mnist, mnist, svhn_cropped; local "
    "npz, folder, stl10_binary, tiny_imagenet (with --data_dir); digits (embedded, offline).",
)
flags.DEFINE_string("data_dir", None, "tfds data directory, or the local file/folder of npz, folder, stl10_binary, tiny_imagenet.")
flags.DEFINE_bool("download", True, "Let tfds download a dataset that is not prepared yet.")
flags.DEFINE_string("normalization", "auto", "Mean/std: 'auto' (the dataset's own) or cifar10, cifar100, stl10, tiny_imagenet, imagenet.")
flags.DEFINE_integer("image_size", 0, "Training image size in pixels (0: the dataset's default, e.g. 32 CIFAR, 64 STL-10).")
# --- network ----------------------------------------------------------------
flags.DEFINE_enum("backbone", "resnet18", sorted(BACKBONES), "ResNet v1.5 depth.")
flags.DEFINE_integer("width", 64, "Channels of the first ResNet stage (64 = standard; 8-16 for tiny test models).")
flags.DEFINE_enum("stem", "auto", ["auto", "cifar", "64px"], "ResNet stem: cifar (3x3 s1, no max-pool), 64px (with max-pool); auto: 64px for images >= 64 px.")
flags.DEFINE_integer("projector_hidden_dim", 2048, "Projector MLP hidden width.")
flags.DEFINE_integer("projection_dim", 128, "Projection / prediction size.")
flags.DEFINE_integer("predictor_hidden_dim", 2048, "Predictor MLP hidden width.")
# --- method -------------------------------------------------------------------
flags.DEFINE_float("alpha", 2.0, "MYOL: Beta(alpha, alpha) of the per-sample mixing coefficient.")
flags.DEFINE_float("gamma", 1.0, "MYOL: weight of the mixup term.")
flags.DEFINE_float("unmix_prob", 0.5, "Un-Mix: probability of global mixup (else CutMix) per batch.")
flags.DEFINE_enum("unmix_target_view", "x1", ["x1", "x2"], "Un-Mix: target of the mixtures: x1 (its own view, MYOL reference) or x2 (the official README pairing).")
flags.DEFINE_float("imix_alpha", 1.0, "i-Mix: Beta(alpha, alpha) before max(lam, 1 - lam).")
flags.DEFINE_float("simclr_temperature", 0.07, "SimCLR: NT-Xent temperature (0.07 in the MYOL reference).")
flags.DEFINE_float("moco_temperature", 0.07, "MoCo: InfoNCE temperature (0.07 in the MYOL reference).")
flags.DEFINE_integer("queue_size", 4096, "MoCo: queue length K (K mod batch_size = 0 as in the reference).")
flags.DEFINE_float("repmix_temperature", 0.5, "Representation mixing: xent_loss temperature.")
flags.DEFINE_enum("repmix_reduction", "log_mean", ["log_mean", "mean_log"], "Representation mixing: -log(mean rho) (official) or mean(-log rho) (standard NT-Xent).")
flags.DEFINE_float("theta_pos", 0.8, "CCSL/CSSL (RECONSTRUCTION, not the official loss): pseudo-positive cosine threshold theta+.")
flags.DEFINE_float("theta_neg", 0.2, "CCSL/CSSL (RECONSTRUCTION, not the official loss): pseudo-negative cosine threshold theta-.")
flags.DEFINE_float("pos_weight", 1.0, "CCSL/CSSL (RECONSTRUCTION): weight w+ of the pseudo-positive term.")
flags.DEFINE_float("neg_weight", 1.0, "CCSL/CSSL (RECONSTRUCTION): weight w- of the pseudo-negative term.")
flags.DEFINE_float("cssl_temperature", 1.0, "CSSL (RECONSTRUCTION): temperature T of sigmoid(cos / T).")
flags.DEFINE_float("ema", 0.996, "Base EMA momentum tau of the target network.")
flags.DEFINE_enum("ema_schedule", "constant", ["constant", "cosine"], "tau constant (MYOL reference) or cosine to 1 (BYOL paper).")
# --- optimisation -------------------------------------------------------------
flags.DEFINE_integer("batch_size", 256, "Global batch size.")
flags.DEFINE_bool("drop_remainder", True, "Drop the last partial batch (a batch of one breaks BatchNorm).")
flags.DEFINE_integer("epochs", 500, "Pre-training epochs.")
flags.DEFINE_integer("steps_per_epoch", 0, "Cap on steps per epoch (0: one pass over the data).")
flags.DEFINE_float("lr", 0.05, "Learning rate (absolute; see --lr_scaling).")
flags.DEFINE_enum("lr_scaling", "none", ["none", "linear"], "linear: multiply --lr by batch_size/256.")
flags.DEFINE_float("weight_decay", 1e-4, "Coupled L2 weight decay on every parameter (torch SGD semantics).")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("warmup_epochs", 10, "Warm-up epochs (may be fractional: W = round(warmup_epochs * steps per epoch) steps).")
flags.DEFINE_enum("warmup_mode", "linear", ["linear", "myol_faithful"], "linear: to --lr; myol_faithful: the reference's warm-up to a 1.1x plateau.")
flags.DEFINE_enum("lr_schedule", "constant", ["constant", "cosine"], "After the warm-up: constant (MYOL reference) or cosine to 0.")
# --- execution ----------------------------------------------------------------
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "mixed_float16", "mixed_bfloat16"], "auto: mixed_float16 on GPU, mixed_bfloat16 on CPUs with native bf16, else float32.")
flags.DEFINE_bool("jit_compile", False, "Compile the training step with XLA (for GPUs/TPUs; about 2x slower on the CPUs measured, docs/PERFORMANCE.md).")
flags.DEFINE_enum("augment_on", "host", ["host", "device"], "Where the views are computed: host (tf.data CPU threads) or device (inside the training step, e.g. on the GPU; the same views for the same seed on one replica).")
flags.DEFINE_integer("steps_per_execution", 1, "Training steps per tf.function call (fewer host round trips, mainly for GPUs); the EMA then runs inside the step, so results are unchanged. Must divide the steps per epoch.")
flags.DEFINE_string("strategy", "auto", "tf.distribute strategy: auto (mirrored over several GPUs, else one device), one_device, mirrored (all local GPUs, or the logical CPUs), multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG). --batch_size is the global batch.")
flags.DEFINE_bool("sync_batchnorm", False, "Synchronised BatchNorm: statistics over the global batch across replicas (under --strategy=mirrored/multi_worker).")
flags.DEFINE_integer("seed", 0, "Random seed (weights, augmentation, mixing).")
flags.DEFINE_bool("deterministic", False, "Enable TensorFlow op determinism (slower).")
flags.DEFINE_integer("shuffle_buffer", 10000, "tf.data shuffle buffer.")
flags.DEFINE_integer("threads", 0, "CPU threads for TensorFlow ops (intra- and inter-op); 0: TensorFlow's default (all cores).")
flags.DEFINE_integer("verbose", 1, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")
# --- outputs ------------------------------------------------------------------
flags.DEFINE_string("run_name", "", "Run name (default: derived from method, dataset, backbone, size, batch, seed).")
flags.DEFINE_string("run_dir", "runs", "Parent directory of run directories.")
flags.DEFINE_string("export_dir", "saved_models", "Export root: the encoder goes to <export_dir>/<run_name>/<version>/.")
flags.DEFINE_list("eval", [], "Evaluations to run on the export after pre-training: linear, knn, attack, semisup, transfer (METHODS §3; results go to the run's results.json).")
flags.DEFINE_string("eval_dataset", "", "Labelled dataset for --eval (default: the pre-training dataset).")
flags.DEFINE_integer("probe_epochs", 100, "Linear-probe epochs for --eval (100 in the protocol).")
flags.DEFINE_bool("overwrite", False, "Start the run again even if its run directory holds a finished or partial run.")

_OWN_FLAGS = None  # names of the flags defined above, filled lazily

# Flags that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = {"epochs", "verbose", "overwrite", "download", "data_dir", "threads", "eval", "eval_dataset", "probe_epochs", "strategy",
                      "augment_on", "steps_per_execution"}


def _own_flag_names():
    global _OWN_FLAGS
    if _OWN_FLAGS is None:
        _OWN_FLAGS = sorted(f.name for f in FLAGS.get_flags_for_module(sys.modules[__name__]))
    return _OWN_FLAGS


def _fail(message, status=2):
    cli.fail(PROG, message, status)


def parse_flags(argv):
    """absl parsing with one-line usage errors and exit status 2 (`--help` exits 0)."""
    return cli.parse_flags(PROG, FLAGS, argv, __doc__)


_quiet_native_stderr = cli.quiet_native_stderr


def resolve_config():
    """Validate the flags and return the resolved configuration (writes nothing)."""
    from myol_keras import backbones
    from myol_keras import data
    from myol_keras import methods

    if FLAGS.method not in methods.METHODS:
        raise UsageError(f"unknown --method={FLAGS.method!r}; choose one of: {', '.join(sorted(methods.METHODS))}")
    if FLAGS.dataset not in data.DATASETS:
        raise UsageError(f"unknown --dataset={FLAGS.dataset!r}; choose one of: {', '.join(data.DATASETS)}")
    if FLAGS.batch_size < 2:
        raise UsageError(f"--batch_size={FLAGS.batch_size} is too small: BatchNorm needs at least 2 images per batch; use --batch_size=2 or more (256 in the paper)")
    if FLAGS.epochs < 1:
        raise UsageError(f"--epochs={FLAGS.epochs}: need at least 1 epoch")
    if FLAGS.steps_per_epoch < 0:
        raise UsageError(f"--steps_per_epoch={FLAGS.steps_per_epoch}: use 0 for a full pass or a positive cap")
    if FLAGS.lr <= 0:
        raise UsageError(f"--lr={FLAGS.lr}: the learning rate must be positive")
    if FLAGS.weight_decay < 0:
        raise UsageError(f"--weight_decay={FLAGS.weight_decay}: must be >= 0")
    if not 0.0 <= FLAGS.ema <= 1.0:
        raise UsageError(f"--ema={FLAGS.ema}: tau must be in [0, 1] (0.996 in the MYOL reference)")
    if FLAGS.width < 1:
        raise UsageError(f"--width={FLAGS.width}: must be a positive number of channels")
    if FLAGS.warmup_epochs < 0:
        raise UsageError(f"--warmup_epochs={FLAGS.warmup_epochs}: must be >= 0")
    if FLAGS.warmup_mode == "myol_faithful" and FLAGS.lr_schedule == "cosine":
        raise UsageError("--warmup_mode=myol_faithful reproduces the reference's constant 1.1x plateau and cannot be combined with --lr_schedule=cosine; use --warmup_mode=linear for a cosine decay")
    from myol_keras.evaluation import EVALUATIONS

    unknown_evals = [e for e in FLAGS.eval if e not in EVALUATIONS]
    if unknown_evals:
        raise UsageError(f"unknown --eval={','.join(unknown_evals)}; choose from: {', '.join(EVALUATIONS)}")
    if FLAGS.probe_epochs < 1:
        raise UsageError(f"--probe_epochs={FLAGS.probe_epochs}: need at least 1 epoch")
    from myol_keras import distribute

    try:
        distribute.validate_strategy(FLAGS.strategy)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if FLAGS.sync_batchnorm and FLAGS.strategy == "one_device":
        raise UsageError("--sync_batchnorm synchronises BatchNorm across replicas, but --strategy=one_device has one replica; use --strategy=mirrored or drop --sync_batchnorm")
    if FLAGS.image_size < 0:
        raise UsageError(f"--image_size={FLAGS.image_size}: use 0 for the dataset default or a positive size")
    if FLAGS.steps_per_execution < 1:
        raise UsageError(f"--steps_per_execution={FLAGS.steps_per_execution}: must be 1 or more (1: one step per call)")

    images, info = data.load_pretrain_images(FLAGS.dataset, FLAGS.data_dir, download=FLAGS.download)
    image_size = FLAGS.image_size or info.image_size
    stem = FLAGS.stem if FLAGS.stem != "auto" else ("64px" if image_size >= 64 else "cifar")
    minimum = backbones.minimum_image_size(stem)
    if image_size < minimum:
        raise UsageError(f"--image_size={image_size} is below the minimum of {minimum} px for the {stem!r} stem; use --image_size={minimum} or more")
    mean, std = data.resolve_normalization(FLAGS.normalization, info)
    num_images = info.num_pretrain_images
    if num_images is None:
        cardinality = int(images.cardinality())
        num_images = cardinality if cardinality >= 0 else sum(1 for _ in images)
    data.validate_batch_size(FLAGS.batch_size, num_images, FLAGS.drop_remainder)

    full_steps = num_images // FLAGS.batch_size if FLAGS.drop_remainder else math.ceil(num_images / FLAGS.batch_size)
    steps_per_epoch = min(full_steps, FLAGS.steps_per_epoch) if FLAGS.steps_per_epoch else full_steps
    if steps_per_epoch % FLAGS.steps_per_execution:
        divisors = [d for d in range(1, min(steps_per_epoch, 64) + 1) if steps_per_epoch % d == 0]
        raise UsageError(
            f"--steps_per_execution={FLAGS.steps_per_execution} does not divide the {steps_per_epoch} steps per epoch, "
            f"so epochs would not end where checkpoints and schedules expect; use one of {', '.join(map(str, divisors))} "
            "(or change --steps_per_epoch / --batch_size)"
        )
    lr = FLAGS.lr * (FLAGS.batch_size / 256.0 if FLAGS.lr_scaling == "linear" else 1.0)
    run_name = FLAGS.run_name or (
        f"{FLAGS.method}-{FLAGS.dataset}-{FLAGS.backbone}w{FLAGS.width}-{image_size}px-b{FLAGS.batch_size}-s{FLAGS.seed}"
    )
    if os.sep in run_name or run_name.startswith("."):
        raise UsageError(f"--run_name={run_name!r}: use a plain name without '{os.sep}' and not starting with '.'")
    flag_values = {name: FLAGS[name].value for name in _own_flag_names()}
    return {
        "images": images,
        "info": info,
        "flags": flag_values,
        "image_size": int(image_size),
        "stem": stem,
        "mean": tuple(mean),
        "std": tuple(std),
        "num_images": int(num_images),
        "steps_per_epoch": int(steps_per_epoch),
        "repeat": bool(FLAGS.steps_per_epoch),
        "lr": lr,
        "run_name": run_name,
        "run_dir": os.path.join(FLAGS.run_dir, run_name),
        "export_root": os.path.join(FLAGS.export_dir, run_name),
    }


def _check_resumable(run_dir, flag_values):
    """Refuse to resume a run directory that was written with different flags."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f).get("flags", {})
    changed = sorted(
        k for k, v in flag_values.items() if k not in _RESUMABLE_CHANGES and k in saved and saved[k] != v
    )
    if changed:
        diffs = ", ".join(f"--{k}={saved[k]!r} before, {flag_values[k]!r} now" for k in changed)
        raise UsageError(f"{run_dir} holds a run with different flags ({diffs}); pass --overwrite to start again or --run_name=NEW for a new run")


def build_model(config):
    """The method model for `config`, built (not compiled)."""
    from myol_keras import backbones
    from myol_keras import methods

    flag_values = config["flags"]
    backbone = backbones.ResNet(
        depth=BACKBONES[flag_values["backbone"]], stem=config["stem"], width=flag_values["width"]
    )
    method_cls = methods.get_method(flag_values["method"])
    kwargs = {
        "projector_hidden_dim": flag_values["projector_hidden_dim"],
        "projection_dim": flag_values["projection_dim"],
        "predictor_hidden_dim": flag_values["predictor_hidden_dim"],
        "weight_decay": flag_values["weight_decay"],
        "seed": flag_values["seed"],
    }
    accepted = inspect.signature(method_cls.__init__).parameters
    for name in ("alpha", "gamma"):
        if name in accepted and name not in method_cls.flag_params:
            kwargs[name] = flag_values[name]
    for name, flag in method_cls.flag_params.items():  # e.g. MoCo temperature <- --moco_temperature
        kwargs[name] = flag_values[flag]
    return method_cls(backbone, **kwargs)


def build_view_fn(config, num_views):
    """The augmentation of `config`'s method: `(batch[, counterparts], seed) -> views`."""
    from myol_keras import augment
    from myol_keras import methods

    flag_values = config["flags"]
    seed = flag_values["seed"]
    view_recipe = methods.get_method(flag_values["method"]).view_recipe
    if view_recipe == "counterpart_pairs":
        # Representation mixing (METHODS §2.6): each image x is paired with a
        # counterpart r from an independent shuffle of the whole training set
        # (uniform marginal; the reference samples with replacement), and the
        # batch holds (N(x), N(r), A(r), A(x)).
        from myol_keras.methods import repmix

        view_fn = repmix.counterpart_view_fn(config["image_size"], config["mean"], config["std"], seed=seed)
    else:
        recipes = [
            augment.myol_view_recipe(config["image_size"], config["mean"], config["std"], seed=seed + 1000 * i)
            for i in range(num_views)
        ]
        view_fn = augment.make_view_fn(recipes)
    return view_fn


def build_dataset(config, num_views, start_epoch=0, augment_on="host"):
    """The pre-training stream from epoch `start_epoch` on (`data.epoch_pipeline`).

    Data order and augmentation are a pure function of (seed, epoch, batch),
    so a resumed run sees the batches an uninterrupted one would have seen.
    With `augment_on="device"` the stream holds raw batches and their seeds;
    the model computes the views with `build_view_fn(config, num_views)`.
    """
    import tensorflow as tf

    from myol_keras import data
    from myol_keras import methods

    flag_values = config["flags"]
    seed = flag_values["seed"]
    view_recipe = methods.get_method(flag_values["method"]).view_recipe
    ds = data.epoch_pipeline(
        config["images"],
        build_view_fn(config, num_views) if augment_on == "host" else None,
        flag_values["batch_size"],
        seed=seed,
        start_epoch=start_epoch,
        steps_per_epoch=config.get("steps_per_epoch"),
        drop_remainder=flag_values["drop_remainder"],
        shuffle_buffer=flag_values["shuffle_buffer"],
        counterparts=view_recipe == "counterpart_pairs",
    )
    if flag_values.get("threads"):
        options = tf.data.Options()
        options.threading.private_threadpool_size = flag_values["threads"]
        ds = ds.with_options(options)
    return ds


def tf_zip(*datasets):
    """`tf.data.Dataset.zip` of image streams (kept separate for readability)."""
    import tensorflow as tf

    return tf.data.Dataset.zip(datasets)


def _write_json(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def _print_outputs(done):
    print(
        f"{PROG}: run {done['run_dir']} is finished. Encoder: {done['export']} ; history: "
        f"{os.path.join(done['run_dir'], 'history.csv')} ; TensorBoard: {os.path.join(done['run_dir'], 'tensorboard')}. "
        "Pass --overwrite to train it again."
    )


def pretrain(config):
    """Train, export and mark the run done. Returns the export directory."""
    import keras
    import shutil
    import tensorflow as tf

    from myol_keras import callbacks as callbacks_lib
    from myol_keras import checkpoint
    from myol_keras import distribute
    from myol_keras import export
    from myol_keras import faults
    from myol_keras import precision as precision_lib
    from myol_keras import schedules

    flag_values = config["flags"]
    run_dir = config["run_dir"]
    done_path = os.path.join(run_dir, "DONE")
    if os.path.exists(done_path) and not flag_values["overwrite"]:
        with open(done_path) as f:
            done = json.load(f)
        _print_outputs(done)
        return done["export"]
    if flag_values["overwrite"] and os.path.exists(run_dir):
        shutil.rmtree(run_dir)
    _check_resumable(run_dir, flag_values)

    with _quiet_native_stderr():
        policy, reason = precision_lib.resolve_precision(flag_values["precision"])
    precision_lib.set_precision(policy)
    keras.utils.set_random_seed(flag_values["seed"])
    if flag_values["deterministic"]:
        tf.config.experimental.enable_op_determinism()

    strategy = distribute.make_strategy(flag_values["strategy"])
    if strategy.num_replicas_in_sync > 1 and flag_values["steps_per_execution"] > 1:
        _fail(
            f"--steps_per_execution={flag_values['steps_per_execution']} cannot run with {strategy.num_replicas_in_sync} "
            "replicas: Keras 3.15 / TensorFlow 2.21 fail on steps_per_execution > 1 under a distribution strategy "
            "(even for a plain Sequential model); use --steps_per_execution=1 or one device"
        )
    chief = distribute.is_chief()
    steps = config["steps_per_epoch"]
    total_steps = steps * flag_values["epochs"]
    with strategy.scope(), distribute.batchnorm_options(synchronized=flag_values["sync_batchnorm"]):
        model = build_model(config)
        schedule = schedules.WarmupSchedule(
            config["lr"], steps, flag_values["warmup_epochs"], flag_values["warmup_mode"],
            flag_values["lr_schedule"], total_steps,
        )
        if flag_values["augment_on"] == "device":
            model.set_device_augmentation(build_view_fn(config, model.num_views))
        model.compile(
            optimizer=keras.optimizers.SGD(schedule, momentum=flag_values["momentum"]),
            jit_compile=flag_values["jit_compile"],
            steps_per_execution=flag_values["steps_per_execution"],
        )

    os.makedirs(run_dir, exist_ok=True)
    if chief:
        _write_json(
            os.path.join(run_dir, "config.json"),
            {
                "flags": flag_values,
                "precision": {"policy": policy, "reason": reason},
                "image_size": config["image_size"], "stem": config["stem"],
                "mean": config["mean"], "std": config["std"],
                "num_images": config["num_images"], "steps_per_epoch": steps,
                "learning_rate": config["lr"], "export_root": config["export_root"],
                "replicas": strategy.num_replicas_in_sync,
            },
        )
        with open(os.path.join(run_dir, "flags.txt"), "w") as f:
            f.writelines(f"--{k}={v}\n" for k, v in flag_values.items() if v is not None)

    backup_dir = os.path.join(run_dir, "backup")
    history_path = os.path.join(run_dir, "history.csv")
    backup = checkpoint.ResumableBackup(backup_dir, history_path, write=chief)
    try:
        start_epoch = backup.restore(model)
    except OSError as e:
        _fail(f"cannot resume {run_dir}: {e}. Pass --overwrite to start again.", status=1)
    if start_epoch:
        print(f"{PROG}: resuming {run_dir} after epoch {start_epoch}")
    print(
        f"{PROG}: precision {policy} ({reason}); {config['num_images']} images, {steps} steps/epoch"
        + (f"; {strategy.num_replicas_in_sync} replicas" if strategy.num_replicas_in_sync > 1 else "")
    )
    dataset = build_dataset(config, model.num_views, start_epoch=start_epoch, augment_on=flag_values["augment_on"])

    callbacks = [
        callbacks_lib.InjectNaN(),  # MYOL_KERAS_FAULT=nan_loss:<k> only
        # Batch callbacks run once per execution: with several steps per call the
        # callback hands the same EMA to the training step (exact, tested).
        callbacks_lib.EMATargetUpdate(flag_values["ema"], flag_values["ema_schedule"], total_steps,
                                      in_step=flag_values["steps_per_execution"] > 1),
        callbacks_lib.LearningRateLogger(),
        callbacks_lib.Throughput(flag_values["batch_size"]),
        keras.callbacks.TerminateOnNaN(raise_error=True),
        callbacks_lib.EpochHistoryCSV(history_path),  # before the backup: each checkpoint holds its history
        backup,
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
        callbacks_lib.FaultPoint(),  # last: epoch_end:<n> kills after the checkpoint
    ]
    if not chief:
        callbacks = [c for c in callbacks if not isinstance(c, (callbacks_lib.EpochHistoryCSV, keras.callbacks.TensorBoard))]
    if start_epoch < flag_values["epochs"]:
        try:
            model.fit(
                dataset,
                epochs=flag_values["epochs"],
                initial_epoch=start_epoch,
                steps_per_epoch=steps,
                callbacks=callbacks,
                verbose=flag_values["verbose"],
                shuffle=False,  # the tf.data pipeline shuffles
            )
        except RuntimeError as e:
            if isinstance(e, checkpoint.NonFiniteError) or "nan" in str(e).lower():
                last, _ = checkpoint.latest_checkpoint(backup_dir)
                kept = f"the checkpoint after epoch {last} is kept in {backup_dir}" if last else "no epoch had completed, nothing to resume"
                _fail(
                    f"training stopped on a non-finite loss ({' '.join(str(e).split())}); {kept}. "
                    "Lower --lr or use --precision=float32, then rerun the same command to resume.",
                    status=1,
                )
            raise
    if not chief:
        print(f"{PROG}: worker finished; the chief exports the encoder")
        return None

    faults.maybe_fail("before_export")
    # The version is fixed in the run directory before exporting: a run killed
    # after its export was renamed into place (before DONE) reuses it on the
    # rerun instead of exporting a duplicate version.
    pending_path = os.path.join(run_dir, "EXPORTING")
    pending = None
    if os.path.exists(pending_path):
        with open(pending_path) as f:
            pending = json.load(f)
    if pending and os.path.exists(os.path.join(pending["export"], "saved_model.pb")):
        export_path = pending["export"]
    else:
        version = export.next_version(config["export_root"])
        _write_json(pending_path, {"export": os.path.join(config["export_root"], str(version))})
        export_path = _export(model, config, policy, version)
    faults.maybe_fail("after_export")
    done = {"run_dir": run_dir, "export": export_path, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    _write_json(done_path, done)
    if os.path.exists(pending_path):
        os.remove(pending_path)
    print(f"{PROG}: exported the online encoder to {export_path}")
    print(f"{PROG}: run directory {run_dir} (history.csv, tensorboard/, config.json)")
    return export_path


def _export(model, config, policy, version):
    from myol_keras import export

    flag_values = config["flags"]
    run_dir = config["run_dir"]
    return export.export_encoder(
        model.backbone,
        config["export_root"],
        version=version,
        image_size=config["image_size"],
        mean=config["mean"],
        std=config["std"],
        metadata={
            "method": flag_values["method"],
            "dataset": flag_values["dataset"],
            "num_classes": config["info"].num_classes,
            "run_dir": os.path.abspath(run_dir),
            "precision": policy,
            "flags": flag_values,
        },
    )


def run():
    """Run with the already-parsed flags. Returns the process exit status."""
    quiet = not FLAGS["verbosity"].present
    try:
        if quiet:  # start-up: tfds warns about folders it probes; our error says it all
            logging.set_verbosity(logging.ERROR)
        if FLAGS.threads < 0:
            raise UsageError(f"--threads={FLAGS.threads}: use 0 for TensorFlow's default or a positive count")
        with _quiet_native_stderr():
            import tensorflow as tf  # the import prints native logs
        if FLAGS.threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
                tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
            except RuntimeError:  # TensorFlow already initialised in this process
                print(f"{PROG}: warning: --threads ignored: TensorFlow is already initialised in this process", file=sys.stderr)
        config = resolve_config()
    except (UsageError, ValueError, FileNotFoundError) as e:
        _fail(str(e).replace("\n", " "))
    finally:
        if quiet:
            logging.set_verbosity(logging.WARNING)  # SavedModel writing logs at INFO
    try:
        export_path = pretrain(config)
    except UsageError as e:  # e.g. a run directory written with other flags
        _fail(str(e).replace("\n", " "))
    if FLAGS.eval and export_path is not None:
        from myol_keras.evaluation import run_evaluations

        results = run_evaluations(
            export_path,
            FLAGS.eval,
            dataset=FLAGS.eval_dataset,
            data_dir=FLAGS.data_dir if FLAGS.eval_dataset else None,
            probe_epochs=FLAGS.probe_epochs,
            download=FLAGS.download,
        )
        print(f"{PROG}: evaluations {', '.join(results)} written to {os.path.join(config['run_dir'], 'results.json')}")
    return 0


def main(argv=None):
    """Entry point usable in-process: `main(["prog", "--method=byol", ...])`."""
    parse_flags(sys.argv if argv is None else argv)
    return run()


def _absl_main(argv):
    del argv
    sys.exit(run())


if __name__ == "__main__":
    app.run(_absl_main, flags_parser=parse_flags)
