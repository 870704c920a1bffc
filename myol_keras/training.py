"""Pre-training from a `PretrainConfig`: plan, build, fit, export.

    export_path = myol_keras.pretrain(myol_keras.PretrainConfig(method="myol", dataset="digits", epochs=2))

`pretrain` is what `python -m myol_keras.main` runs, and writes the same run
directory (`rundir.RunDirectory`): config, history, checkpoints, TensorBoard
logs, then the export and the `DONE` marker. Calling it again resumes an
interrupted run from its last checkpoint, or returns the export of a finished
one, first adding the files of any `export_formats` it lacks (converted from
the exported backbone, no training). Everything that can be checked is
checked before anything is written: the settings (`PretrainConfig.validate`),
then what depends on the data (`plan_run`).

The pieces are public for scripts that want one of them:

* `plan_run(config)`: load the data and resolve sizes, statistics, steps,
  paths (`RunPlan`), writing nothing;
* `build_model(config, plan)`: the method model (not compiled);
* `build_dataset(config, plan, model_cls, start_epoch)`: the deterministic,
  resumable pre-training stream.
"""

import dataclasses
import os

from myol_keras import agreement
from myol_keras import cluster as cluster_lib
from myol_keras import process_settings
from myol_keras import rundir as rundir_lib
from myol_keras.methods import inputs as method_inputs

PROG = "myol_keras"


class SetupError(ValueError):
    """A run that cannot start as configured, found before anything was written
    (a run directory holding other settings, an unsupported combination)."""


class TrainingStopped(RuntimeError):
    """Training stopped after it had started (a non-finite loss, an unreadable checkpoint).

    The run directory is kept: fix the cause and rerun to resume.
    """


@dataclasses.dataclass
class RunPlan:
    """What a config resolves to once the data is known (nothing written yet).

    Args:
        images: the `uint8 [N, H, W, 3]` pre-training images: memory-mapped from
            the decoded-image cache for file-based sources (`data.load_pretrain_array`);
            a `tf.data.Dataset` of images is accepted too (read into memory once).
        info: the dataset's `data.DatasetInfo`.
        image_size, stem: the training image size and the ResNet stem.
        mean, std: normalisation statistics.
        num_images, steps_per_epoch: images and optimizer steps per epoch.
        learning_rate: the absolute learning rate (after `lr_scaling`).
        run: the `RunDirectory`; export_root: where the versions go.
        epochs: the number of epochs (with `steps_per_epoch`: `total_steps`).
    """

    images: object
    info: object
    image_size: int
    stem: str
    mean: tuple
    std: tuple
    num_images: int
    steps_per_epoch: int
    learning_rate: float
    run: rundir_lib.RunDirectory
    export_root: str
    epochs: int
    method_inputs: object = None  # the method's own needs (`methods.inputs`: CLSA's strong size, SuNCEt's labels)

    @property
    def total_steps(self):
        return self.steps_per_epoch * self.epochs

    def resolved(self):
        """The JSON-able facts `config.json` records beside the settings."""
        return {"image_size": self.image_size, "stem": self.stem, "mean": list(self.mean), "std": list(self.std),
                "num_images": self.num_images, "steps_per_epoch": self.steps_per_epoch,
                "learning_rate": self.learning_rate, "export_root": self.export_root, **method_inputs.facts(self)}


def plan_run(config):
    """Validate `config` against its data; returns a `RunPlan`. Raises `ValueError` / `FileNotFoundError`.

    Example:
    ```python
    plan = plan_run(PretrainConfig(dataset="digits", batch_size=64))
    plan.steps_per_epoch
    ```
    """
    from myol_keras import backbones
    from myol_keras import data

    config.validate()
    images, info = data.load_pretrain_array(config.dataset, config.data_dir, download=config.download,
                                            cache_dir=config.cache_dir or None)
    image_size = config.image_size or info.image_size
    stem = config.stem if config.stem != "auto" else ("64px" if image_size >= 64 else "cifar")
    minimum = backbones.minimum_image_size(stem)
    if image_size < minimum:
        raise ValueError(f"--image_size={image_size} is below the minimum of {minimum} px for the {stem!r} stem; "
                         f"use --image_size={minimum} or more")
    mean, std = data.resolve_normalization(config.normalization, info)
    num_images = len(images)
    steps = data.steps_in_epoch(num_images, config.batch_size, config.drop_remainder, config.steps_per_epoch)
    if steps % config.steps_per_execution:
        divisors = [d for d in range(1, min(steps, 64) + 1) if steps % d == 0]
        raise ValueError(
            f"--steps_per_execution={config.steps_per_execution} does not divide the {steps} steps per epoch, "
            f"so epochs would not end where checkpoints and schedules expect; use one of {', '.join(map(str, divisors))} "
            "(or change --steps_per_epoch / --batch_size)"
        )
    run_name = config.default_run_name(image_size)
    plan = RunPlan(
        images=images, info=info, image_size=int(image_size), stem=stem, mean=tuple(mean), std=tuple(std),
        num_images=int(num_images), steps_per_epoch=int(steps), learning_rate=config.learning_rate(),
        run=rundir_lib.RunDirectory(os.path.join(config.run_dir, run_name)),
        export_root=os.path.join(config.export_dir, run_name), epochs=config.epochs,
    )
    return method_inputs.resolve(config, plan)  # the method's own checks against the data (SuNCEt: labels)


def build_model(config, plan):
    """The method model of `config` (built, not compiled)."""
    from myol_keras import backbones
    from myol_keras import methods

    backbone = backbones.ResNet(depth=config.depth, stem=plan.stem, width=config.width)
    return methods.get_method(config.method)(backbone, **config.method_kwargs())


def build_dataset(config, plan, method_cls, start_epoch=0, replicas=1):
    """The pre-training stream from epoch `start_epoch` on (`data.epoch_pipeline`).

    Data order and augmentation are a pure function of (seed, epoch, batch),
    so a resumed run sees the batches an uninterrupted one would have seen.
    With `config.augment_on == "device"` the stream holds raw batches and their
    seeds; the model computes the views (`set_device_augmentation`).
    `replicas` (the strategy's `num_replicas_in_sync`): SuNCEt's labelled
    batch holds one class-balanced block per replica.
    """
    import tensorflow as tf

    from myol_keras import data

    view_fn = method_inputs.view_fn(config, plan, method_cls)
    ds = method_inputs.attach(data.epoch_pipeline(
        plan.images,
        view_fn if config.augment_on == "host" else None,
        config.batch_size,
        seed=config.seed,
        start_epoch=start_epoch,
        steps_per_epoch=plan.steps_per_epoch,
        drop_remainder=config.drop_remainder,
        shuffle_buffer=config.shuffle_buffer,
        counterparts=method_cls.needs_counterparts,
    ), plan, start_epoch, replicas)  # SuNCEt: + each step's labelled batch, a block per replica
    if config.threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = config.threads
        ds = ds.with_options(options)
    return ds


def check_resumable(config, run):
    """Raise `SetupError` if `run` holds a run written with other settings (`RESUMABLE_CHANGES` aside)."""
    saved = run.read_config()
    if not saved:
        return
    saved = saved.get("flags", saved)  # run directories written before PretrainConfig
    changed = config.changed_from(saved)
    if changed:
        mine = config.to_dict()
        diffs = ", ".join(f"--{k}={saved[k]!r} before, {mine[k]!r} now" for k in changed)
        hint = ""
        if changed == ["shuffle_buffer"] and saved["shuffle_buffer"]:
            hint = (f" (a run started before the global shuffle: --shuffle_buffer={saved['shuffle_buffer']} resumes "
                    "it with its shuffle buffer)")
        raise SetupError(f"{run.path} holds a run with different flags ({diffs}){hint}; pass --overwrite to start "
                         "again or --run_name=NEW for a new run")


def pretrain(config=None, *, plan=None, strategy=None, **settings):
    """Pre-train, export the online encoder and mark the run done; returns the export directory.

    Args:
        config: a `PretrainConfig`; or leave it out and pass its settings as
            keywords (`pretrain(method="byol", dataset="digits", epochs=2)`).
        plan: the `plan_run(config)` result, if the caller already has it.
        strategy: the `tf.distribute.Strategy`, if the caller made it
            (`distribute.make_strategy(config.strategy)`) — before `plan_run`,
            which runs TensorFlow ops: a multi-worker strategy must come first.

    Returns:
        The export version directory (None on a non-chief worker).

    Raises:
        ValueError / FileNotFoundError: a bad setting or unusable data, before
            anything is written (`SetupError` for a run that cannot start here).
        TrainingStopped: training started but stopped (the run is resumable).
        export.ExportError: training finished but the export could not be
            written (a converter failed, a full disk); the run is kept and a
            rerun exports again. For a finished run: a format could not be
            added to its export, which is left unchanged.

    Example:
    ```python
    path = myol_keras.pretrain(myol_keras.PretrainConfig(method="myol", dataset="digits", epochs=2, width=4))
    backbone = myol_keras.load_backbone(path)
    ```
    """
    from myol_keras.config import PretrainConfig

    from myol_keras import distribute

    if config is None:
        config = PretrainConfig(**settings)
    elif settings:
        config = config.replace(**settings)
    if strategy is None:
        config.validate()
        process_settings.set_threads(config.threads)
        strategy = distribute.make_strategy(config.strategy, cluster_timeout=config.cluster_timeout)  # first
    plan = plan or plan_run(config)
    run = plan.run
    chief = distribute.is_chief(strategy)
    multi_worker = distribute.is_multi_worker(strategy)
    if multi_worker:
        _agree_with_the_cluster(strategy, config, plan)
    done, refusal = None, None
    if chief:  # the chief's run directory decides for every worker
        if run.is_done() and not config.overwrite:
            done = run.read_done()
        else:
            if config.overwrite and run.exists():
                run.remove()
            try:
                check_resumable(config, run)
            except SetupError as e:
                refusal = e
    if multi_worker:
        decision = agreement.chief_value(strategy, 2 if refusal else 1 if done else 0)
        if not chief and decision == 1:
            print(f"{PROG}: the chief's run is finished; nothing to do on this worker")
            return None
        if not chief and decision == 2:
            raise SetupError("the chief cannot resume its run directory with these settings (see its error line)")
    if refusal:
        raise refusal
    if done:
        print(f"{PROG}: run {run.path} is finished. Encoder: {done['export']} ; history: {run.history_path} ; "
              f"TensorBoard: {run.tensorboard_dir}. Pass --overwrite to train it again.")
        if distribute.is_chief():
            _add_export_formats(config, done["export"])
        return done["export"]
    with process_settings.process_settings_restored(), process_settings.op_determinism(config.deterministic):
        model, policy, reason = _compile_model(config, plan, strategy)
        return _fit_and_export(config, plan, model, strategy, policy, reason)


def _agree_with_the_cluster(strategy, config, plan):
    """Stop every worker (SetupError, one line) unless all share settings, data and code (`agreement.agree`)."""
    try:
        agreement.agree(strategy, cluster_lib.task_config(), agreement.fingerprint(config, plan))
    except cluster_lib.SettingsDiffer as e:
        raise SetupError(str(e)) from None


def _compile_model(config, plan, strategy):
    import keras

    from myol_keras import batchnorm
    from myol_keras import precision as precision_lib
    from myol_keras import schedules

    policy, reason = precision_lib.resolve_precision(config.precision)
    precision_lib.set_precision(policy)
    keras.utils.set_random_seed(config.seed)
    if strategy.num_replicas_in_sync > 1 and config.steps_per_execution > 1:
        # Upstream limitation, not ours: Keras 3.15's steps_per_execution loop (`multi_step_on_iterator`
        # in keras/src/backend/tensorflow/trainer.py) runs each step in a `tf.cond` inside a
        # `tf.while_loop`; under a MirroredStrategy of 2+ replicas the optimizer's cross-replica update
        # (a `merge_call`) inside that cond fails when run: "InvalidArgumentError: You must feed a value
        # for placeholder tensor 'while/body/.../while/cond/Placeholder'" -- for a plain Sequential
        # model with loss="mse" too. The nearest upstream report is keras-team/keras#19246 (open: the
        # same error under MirroredStrategy, traced to conditionals around merge_call); no issue names
        # steps_per_execution. This test runs that plain model and expects the error:
        #   tests/test_distribute.py::test_keras_steps_per_execution_under_mirrored_still_fails_upstream
        # When it fails (Keras trains), delete this check and that test, after one
        # `--strategy=mirrored --steps_per_execution=2` run of the CLI.
        raise SetupError(
            f"--steps_per_execution={config.steps_per_execution} cannot run with {strategy.num_replicas_in_sync} "
            "replicas: Keras 3.15 / TensorFlow 2.21 fail on steps_per_execution > 1 under a distribution strategy "
            "(even for a plain Sequential model); use --steps_per_execution=1 or one device"
        )
    with strategy.scope(), batchnorm.options(synchronized=config.sync_batchnorm):
        model = build_model(config, plan)
        schedule = schedules.WarmupSchedule(plan.learning_rate, plan.steps_per_epoch, config.warmup_epochs,
                                            config.warmup_mode, config.lr_schedule, plan.total_steps)
        if config.augment_on == "device":
            model.set_device_augmentation(method_inputs.view_fn(config, plan, type(model)))
        model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=config.momentum),
                      jit_compile=config.jit_compile, steps_per_execution=config.steps_per_execution)
    return model, policy, reason


def _monitors_for(config, plan):
    from myol_keras import monitors

    try:
        return monitors.for_run(config, plan)
    except ValueError as e:  # an explicit --monitor the data cannot serve: one line, nothing written yet
        raise SetupError(str(e)) from None


def _callbacks(config, plan, backup, chief, input_wait, monitor_callbacks=()):
    import keras

    from myol_keras import callbacks as callbacks_lib

    run = plan.run
    callbacks = [
        callbacks_lib.InjectNaN(),  # MYOL_KERAS_FAULT=nan_loss:<k> only
        # Batch callbacks run once per execution: with several steps per call the
        # callback hands the same EMA to the training step (exact, tested).
        callbacks_lib.EMATargetUpdate(config.ema, config.ema_schedule, plan.total_steps,
                                      in_step=config.steps_per_execution > 1),
        callbacks_lib.LearningRateLogger(),
        callbacks_lib.Throughput(config.batch_size),
        input_wait,  # input_bound_percent: the share of the epoch spent waiting for the next batch
        *monitor_callbacks,  # knn_top1, embed_std, rankme: before the history, backup and TensorBoard read the logs
        keras.callbacks.TerminateOnNaN(raise_error=True),
    ]
    if chief:
        callbacks.append(callbacks_lib.EpochHistoryCSV(run.history_path))  # before the backup: each checkpoint holds its history
    callbacks.append(backup)
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(run.tensorboard_dir, write_graph=False))
    callbacks.append(callbacks_lib.FaultPoint())  # last: epoch_end:<n> kills after the checkpoint
    return callbacks


def _fit_and_export(config, plan, model, strategy, policy, reason):
    import tensorflow as tf

    from myol_keras import callbacks as callbacks_lib
    from myol_keras import checkpoint
    from myol_keras import distribute
    from myol_keras import faults
    from myol_keras import native_logs

    run = plan.run
    chief = distribute.is_chief(strategy)  # only the chief writes: the other workers leave no file behind
    multi_worker = distribute.is_multi_worker(strategy)
    monitor_callbacks = _monitors_for(config, plan) if chief else []  # before anything is written
    if chief:
        run.create()
        run.write_config({**config.to_dict(), "resolved": {
            **plan.resolved(), "precision": {"policy": policy, "reason": reason},
            "replicas": strategy.num_replicas_in_sync}})
        run.write_flagfile(config.to_dict())
    backup = checkpoint.ResumableBackup(run.backup_dir, run.history_path if chief else None, write=chief)
    start_epoch = 0
    if chief:
        try:
            start_epoch = backup.restore(model)
        except OSError as e:
            raise TrainingStopped(f"cannot resume {run.path}: {e}. Pass --overwrite to start again.") from None
    if multi_worker:  # the chief's checkpoint is the run's one state: every worker takes it (docs/DECISIONS.md §4.9)
        agreement.broadcast_from_chief(strategy, [*model.variables, *model.optimizer.variables])
        start_epoch = agreement.chief_value(strategy, start_epoch)
        backup.restored_epoch = model._initial_epoch = start_epoch
        cluster_lib.set_stop_note((lambda: _kept(run)) if chief else None)
        cluster_lib.set_phase("training")
    if start_epoch:
        print(f"{PROG}: resuming {run.path} after epoch {start_epoch}")
    print(f"{PROG}: precision {policy} ({reason}); {plan.num_images} images, {plan.steps_per_epoch} steps/epoch"
          + (f"; {strategy.num_replicas_in_sync} replicas" if strategy.num_replicas_in_sync > 1 else ""))
    input_wait = callbacks_lib.InputWait()
    dataset = input_wait.instrument(build_dataset(config, plan, type(model), start_epoch=start_epoch,
                                                  replicas=strategy.num_replicas_in_sync))
    if start_epoch < config.epochs:
        try:
            model.fit(dataset, epochs=config.epochs, initial_epoch=start_epoch, steps_per_epoch=plan.steps_per_epoch,
                      callbacks=_callbacks(config, plan, backup, chief, input_wait, monitor_callbacks), verbose=config.verbose,
                      shuffle=False)  # the tf.data pipeline shuffles
        except tf.errors.OpError as e:
            if not distribute.is_multi_worker(strategy):
                raise
            raise TrainingStopped(
                f"a worker of the cluster stopped answering ({native_logs.first_line(e, limit=200)}); "
                f"{_kept(run) if chief else 'the chief keeps the run and its last complete checkpoint'}. "
                "Restart every worker with the same command to resume."
            ) from None
        except RuntimeError as e:
            if isinstance(e, checkpoint.NonFiniteError) or "nan" in str(e).lower():
                raise TrainingStopped(
                    f"training stopped on a non-finite loss ({' '.join(str(e).split())}); {_kept(run)}. "
                    "Lower --lr or use --precision=float32, then rerun the same command to resume."
                ) from None
            raise
    if not chief:
        print(f"{PROG}: worker finished; the chief exports the encoder")
        return None
    if multi_worker:
        cluster_lib.set_phase("exporting")

    faults.maybe_fail("before_export")
    from myol_keras import export

    try:
        export_path = _export_once(config, plan, model, policy)
    except export.ExportError as e:
        raise export.ExportError(f"{e}. Training is complete and {run.path} is kept: rerun the same command to "
                                 "export again") from e
    faults.maybe_fail("after_export")
    run.mark_done(export_path)
    run.clear_claim()
    formats = export.parse_formats(config.export_formats)
    print(f"{PROG}: exported the online encoder to {export_path}"
          + (f" ({', '.join(formats)})" if len(formats) > 1 else ""))
    print(f"{PROG}: run directory {run.path} (history.csv, tensorboard/, config.json)")
    return export_path


def _add_export_formats(config, export_path):
    """Write the `--export_formats` a finished run's export lacks into its version directory (issue 29)."""
    from myol_keras import export

    if export.parse_formats(config.export_formats) == (export.SAVED_MODEL,):
        return
    try:
        added = export.add_formats(export_path, config.export_formats)
    except FileNotFoundError as e:
        raise export.ExportError(f"cannot add --export_formats={config.export_formats} to the finished run's export: "
                                 f"{e}; pass --overwrite to train it again") from e
    if added:
        print(f"{PROG}: added {', '.join(added)} to the export {export_path} of the finished run "
              "(converted from its backbone, no training)")


def _kept(run):
    from myol_keras import checkpoint

    last, _ = checkpoint.latest_checkpoint(run.backup_dir)
    return (f"the checkpoint after epoch {last} is kept in {run.backup_dir}" if last
            else "no epoch had completed, nothing to resume")


def _export_once(config, plan, model, policy):
    """Export the online backbone to a version claimed in the run directory first.

    A run killed after its export was renamed into place (before DONE) reuses
    that version on the rerun instead of exporting a duplicate.
    """
    from myol_keras import export

    pending = plan.run.pending_export()
    if pending and os.path.exists(os.path.join(pending, "saved_model.pb")):
        return pending
    version = rundir_lib.next_version(plan.export_root)
    plan.run.claim_export(os.path.join(plan.export_root, str(version)))
    return export.export_encoder(
        model.backbone, plan.export_root, version=version, image_size=plan.image_size, mean=plan.mean, std=plan.std,
        formats=config.export_formats,
        metadata={"method": config.method, "dataset": config.dataset, "data_dir": config.data_dir,
                  "num_classes": plan.info.num_classes, "run_dir": os.path.abspath(plan.run.path),
                  "precision": policy, "config": config.to_dict()},
    )
