"""Pre-training batch-size study (docs/METHODS.md §3.5, MYOL Appendix §C.1).

    python -m myol_keras.sweep --batch_sizes=256,128,64,32 --base_epochs=500 \
        --pretrain_flags="--method=byol --dataset=cifar10" --output=runs/sweep_byol

For each batch size B, pre-trains with `epochs = int(base_epochs * B / 256)`
(500, 250, 125, 62: about the same number of iterations), the learning rate
unchanged (0.05, not scaled) and the warm-up still in epochs, then runs the
§3.1 linear probe on the final export and writes one row per run into
`<output>/sweep.md` and `sweep.csv`. Each pre-training is a separate
`python -m myol_keras.main` process, so a finished run is skipped when the sweep
is rerun (the CLI's own resume logic) and an interrupted one resumes.
"""

import os
import shlex
import subprocess
import sys

from absl import flags

from myol_keras import cli, rundir

PROG = "myol_keras.sweep"
PAPER_BATCH_SIZES = (256, 128, 64, 32)

FLAGS = flags.FlagValues()
_BATCH_SIZE = flags.IntegerParser(lower_bound=2)
_BATCH_SIZE.syntactic_help = "an integer >= 2 (BatchNorm needs two images)"
cli.DEFINE_list_of("batch_sizes", [str(b) for b in PAPER_BATCH_SIZES], "Batch sizes B.", _BATCH_SIZE, FLAGS)
flags.DEFINE_integer("base_epochs", 500, "Epochs at the base batch size.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("base_batch_size", 256, "Base batch size of the epoch scaling.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_string("pretrain_flags", "", "Extra flags for myol_keras.main (quoted), e.g. '--method=byol --dataset=cifar10'.", flag_values=FLAGS)
flags.DEFINE_string("name", "sweep", "Run name prefix: runs are <name>-b<B>.", flag_values=FLAGS)
flags.DEFINE_string("run_dir", "runs", "Parent of the run directories.", flag_values=FLAGS)
flags.DEFINE_string("export_dir", "saved_models", "Export root.", flag_values=FLAGS)
flags.DEFINE_string("output", "", "Where sweep.md / sweep.csv go (default: <run_dir>/<name>).", flag_values=FLAGS)
flags.DEFINE_list("eval", ["linear"], "Evaluations per run (linear, knn, attack, semisup, transfer; empty: none).", flag_values=FLAGS)
flags.DEFINE_integer("probe_epochs", 100, "Linear-probe epochs (100 in the protocol).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool("dry_run", False, "Print the plan and the commands only.", flag_values=FLAGS)


def sweep_plan(batch_sizes=PAPER_BATCH_SIZES, base_epochs=500, base_batch_size=256, name="sweep"):
    """[{"batch_size", "epochs", "run_name"}] with epochs = int(base_epochs * B / base_batch_size).

    Raises:
        ValueError: a batch size below 2 (BatchNorm needs two images), or one that gets no epoch.
    """
    plan = []
    for b in batch_sizes:
        b = int(b)
        if b < 2:
            raise ValueError(f"batch size {b} is below 2 (BatchNorm needs two images)")
        epochs = int(base_epochs * b / base_batch_size)
        if epochs < 1:
            raise ValueError(f"batch size {b} gives {epochs} epochs; raise the base epochs (--base_epochs)")
        plan.append({"batch_size": b, "epochs": epochs, "run_name": f"{name}-b{b}"})
    return plan


def pretrain_command(entry, pretrain_flags="", run_dir="runs", export_dir="saved_models"):
    """The `python -m myol_keras.main` argv of one plan entry (the sweep's flags come last and win)."""
    return [sys.executable, "-m", "myol_keras.main", *shlex.split(pretrain_flags),
            f"--batch_size={entry['batch_size']}", f"--epochs={entry['epochs']}",
            f"--run_name={entry['run_name']}", f"--run_dir={run_dir}", f"--export_dir={export_dir}"]


def run_sweep(plan, *, pretrain_flags="", run_dir="runs", export_dir="saved_models", output=None,
              evaluations=("linear",), probe_epochs=100, dry_run=False):
    """Pre-train and evaluate every plan entry; writes sweep.md / sweep.csv; returns the rows."""
    from myol_keras import report
    from myol_keras.evaluation import run_evaluations

    output = output or os.path.join(run_dir, plan[0]["run_name"].rsplit("-b", 1)[0] if plan else "sweep")
    rows = []
    for entry in plan:
        command = pretrain_command(entry, pretrain_flags, run_dir, export_dir)
        print(f"{PROG}: B={entry['batch_size']} epochs={entry['epochs']}: {shlex.join(command)}", flush=True)
        if dry_run:
            continue
        status = subprocess.call(command)
        if status != 0:
            raise RuntimeError(f"pre-training for B={entry['batch_size']} failed with status {status}")
        run = os.path.join(run_dir, entry["run_name"])
        export_path = rundir.RunDirectory(run).read_done()["export"]
        if evaluations:
            run_evaluations(export_path, list(evaluations), probe_epochs=probe_epochs)
        row = {"batch_size": entry["batch_size"], "epochs": entry["epochs"]}
        row.update(report.summarize_run(run))
        rows.append(row)
    if rows:
        os.makedirs(output, exist_ok=True)
        rundir.atomic_write(os.path.join(output, "sweep.md"),
                            "# Batch-size sweep (docs/METHODS.md §3.5)\n\n" + report.markdown_table(rows) + "\n")
        rundir.atomic_write_csv(os.path.join(output, "sweep.csv"), rows)
    return rows


def _run():
    plan = sweep_plan(FLAGS.batch_sizes, FLAGS.base_epochs, FLAGS.base_batch_size, FLAGS.name)
    rows = run_sweep(plan, pretrain_flags=FLAGS.pretrain_flags, run_dir=FLAGS.run_dir, export_dir=FLAGS.export_dir,
                     output=FLAGS.output or os.path.join(FLAGS.run_dir, FLAGS.name), evaluations=FLAGS.eval,
                     probe_epochs=FLAGS.probe_epochs, dry_run=FLAGS.dry_run)
    if rows:
        print(f"{PROG}: wrote {os.path.join(FLAGS.output or os.path.join(FLAGS.run_dir, FLAGS.name), 'sweep.md')}")


main = cli.entry_point(PROG, FLAGS, _run, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
