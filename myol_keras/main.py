"""Pre-train a BYOL-family method and export its encoder.

    python -m myol_keras.main --method=myol --dataset=stl10
    python -m myol_keras.main --flagfile=flags/quickstart.cfg

Every flag is a `myol_keras.PretrainConfig` setting of the same name (plus
`--eval*`, which chain evaluations after training), so this command and
`myol_keras.pretrain(PretrainConfig(...))` in a script write the same run
directory (`--run_dir/<run_name>/`): the settings (`config.json`, and
`flags.txt`, reusable as a `--flagfile`), `history.csv` (one row per epoch,
learning rate and EMA tau included), TensorBoard logs and kill-safe
checkpoints. Running the same command again after an interruption resumes from
the last completed epoch; rerunning a finished run says where its outputs are.
The online backbone is exported to `--export_dir/<run_name>/<version>/` (see
`myol_keras.export`), as a SavedModel and, with `--export_formats`, as ONNX
and LiteRT files beside it.

Usage errors (unknown names, bad values, missing data) print one line and exit
with status 2 before anything is written; a training that stops after it has
started (a non-finite loss) prints one line and exits with status 1, its run
directory kept for the resume, and so does an export that fails (a converter,
a full disk): rerunning exports again.
"""

import os
import sys

from absl import flags
from absl import logging

from myol_keras import cli

from myol_keras import config as config_lib  # imports no TensorFlow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROG = "myol_keras.main"
FLAGS = flags.FLAGS

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}


def _define_setting(field):
    """One absl flag for one `PretrainConfig` field: enums, bounds and a validator from its metadata."""
    meta = field.metadata
    kind = config_lib.annotation_type(field)
    choices = config_lib.choices_of(meta)
    if choices and kind is str:
        flags.DEFINE_enum(field.name, field.default, list(choices), meta["help"])
    elif kind in (int, float) and field.name not in config_lib.REASONS:
        _DEFINE[kind](field.name, field.default, meta["help"], lower_bound=meta["minimum"], upper_bound=meta["maximum"])
    else:
        _DEFINE[kind](field.name, field.default, meta["help"])

    def check(value):
        if value is None:
            return True
        reason = config_lib.reason_for(field.name, value)
        if reason:
            raise flags.ValidationError(reason)
        return True

    flags.register_validator(field.name, check)


def _define_cross_check(names, rule):
    """One rule that ties settings together, as an absl multi-flag validator (the message `validate()` gives)."""
    defaults = {f.name: f.default for f in config_lib.fields()}

    def check(values):
        reason = rule({**defaults, **values})
        if reason:
            raise flags.ValidationError(reason)
        return True

    flags.register_multi_flags_validator(list(names), check)


for _field in config_lib.fields():
    _define_setting(_field)
for _names, _rule in config_lib.CROSS_RULES:
    _define_cross_check(_names, _rule)
flags.DEFINE_list("eval", [], "Evaluations to run on the export after pre-training: linear, knn, attack, semisup, "
                  "transfer (docs/METHODS.md §3; results go to the run's results.json), random_init (linear and kNN of a "
                  "randomly initialised encoder of the same architecture next to the trained one's, printed as a "
                  "table).")
flags.DEFINE_string("eval_dataset", "", "Labelled dataset for --eval (default: the pre-training dataset).")
flags.DEFINE_integer("probe_epochs", 100, "Linear-probe epochs for --eval (100 in the protocol).", lower_bound=1)
flags.DEFINE_integer("knn_k", 200, "Neighbours of --eval=knn and of random_init's kNN (200 in the protocol; keep it "
                     "below a class's number of training images on small data sets).", lower_bound=1)


def parse_flags(argv):
    """absl parsing with one-line usage errors and exit status 2 (`--help` exits 0)."""
    return cli.parse_flags(PROG, FLAGS, argv, __doc__)


def config_from_flags():
    """The `PretrainConfig` the parsed flags describe."""
    return config_lib.PretrainConfig(**{f.name: FLAGS[f.name].value for f in config_lib.fields()})


def run():
    """Run with the already-parsed flags. Returns the process exit status."""
    if FLAGS.deterministic:  # before TensorFlow is imported, or it is too late (process_settings.onednn_kernels_off)
        from myol_keras import process_settings

        process_settings.onednn_kernels_off()
    with cli.quiet_native_stderr():  # the settings import no TensorFlow; its import logs natively: hide that
        import tensorflow  # noqa: F401
    from myol_keras import distribute
    from myol_keras import export
    from myol_keras import process_settings
    from myol_keras import training
    from myol_keras.evaluation import check_settings as check_evaluation_settings

    quiet = not FLAGS["verbosity"].present
    if quiet:  # start-up: tfds warns about folders it probes; our errors say it all
        logging.set_verbosity(logging.ERROR)
    try:
        check_evaluation_settings(FLAGS.eval, FLAGS.eval_dataset)  # every setting before training, these too
        config = config_from_flags().validate()
        process_settings.set_threads(config.threads)  # before TensorFlow runs its first op
        strategy = distribute.make_strategy(config.strategy, cluster_timeout=config.cluster_timeout)  # before the data
        plan = training.plan_run(config)
    except (ValueError, FileNotFoundError) as e:
        cli.fail(PROG, e)
    except distribute.cluster.ClusterError as e:  # a worker never arrived: nothing written, rerun when it is up
        cli.fail(PROG, e, status=1)
    finally:
        if quiet:
            logging.set_verbosity(logging.WARNING)  # SavedModel writing logs at INFO
    try:
        export_path = training.pretrain(config, plan=plan, strategy=strategy)
    except training.SetupError as e:  # e.g. a run directory written with other settings (nothing written)
        cli.fail(PROG, e)
    except (training.TrainingStopped, export.ExportError) as e:  # the run directory is kept for the rerun
        cli.fail(PROG, e, status=1)
    if FLAGS.eval and export_path is not None:
        from myol_keras.data import cache as image_cache
        from myol_keras.evaluation import run_evaluations

        if config.cache_dir:  # the evaluations read the labelled images from the same decoded-image cache
            os.environ[image_cache.ENV_VAR] = config.cache_dir

        results = run_evaluations(export_path, FLAGS.eval, dataset=FLAGS.eval_dataset,
                                  data_dir=config.data_dir if FLAGS.eval_dataset else None,
                                  probe_epochs=FLAGS.probe_epochs, knn_k=FLAGS.knn_k, download=config.download)
        print(f"{PROG}: evaluations {', '.join(results)} written to {plan.run.results_path}")
        from myol_keras import report

        written = report.render_report(plan.run.path)
        plots = ", ".join(sorted(os.path.basename(p) for p in written["plots"].values()))
        print(f"{PROG}: report {written['report']} (plots/: {plots})")
        if "random_init" in results:
            from myol_keras.evaluation import random_init

            rows = random_init.comparison_rows(results["linear"], results["knn"], results["random_init"],
                                               label=f"trained ({config.method}, {config.epochs} epochs)")
            print(f"{PROG}: what pre-training bought ({results['linear']['dataset']} test split, "
                  f"linear probe {FLAGS.probe_epochs} epochs, kNN k={results['knn']['k']}):")
            print(random_init.format_comparison(rows))
    return 0


def main(argv=None):
    """Entry point usable in-process: `main(["prog", "--method=byol", ...])`."""
    parse_flags(sys.argv if argv is None else argv)
    return run()


if __name__ == "__main__":
    raise SystemExit(main())
