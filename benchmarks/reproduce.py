"""Rerun the first epochs of a recorded Q1 row from its own commit, and compare them with the row.

A row of `quality.py` records its commit, the data file's SHA-256, the CLI arguments the run was trained
with and its training loss per epoch (`provenance.py`). This script takes one row and

1. checks the data file against the row's SHA-256;
2. finds a checkout of the row's commit: `--checkout` (which must be at that commit, clean), or a git
   worktree it adds at `../reproduce-<commit>` beside this checkout (kept for the next call);
3. trains the row's run again there, with the row's arguments but `--epochs` (and a fresh run directory);
4. prints the loss of every epoch beside the recorded one and exits 0 if they agree to the recorded
   precision (6 decimals), 1 otherwise:

    python benchmarks/reproduce.py --rows=benchmarks/q1_paired.json --run=q1-byol-s3 --epochs=2

Only the first epochs are rerun (a whole row takes about an hour on one thread), which is a full check of
them only if they do not depend on the run's length: a constant learning-rate and EMA schedule after an
epoch-counted warm-up, as protocol Q1's. A row whose schedules depend on the total is refused unless
`--epochs` is the row's own.

Agreement to the digit needs a run that repeats bit for bit. With TensorFlow's oneDNN CPU kernels on (its
default on x86, and every Q1 row before `onednn` was recorded) that holds for SimCLR at Q1's size but not
for BYOL (measured on an Intel Xeon with AMX: two reruns differ from each other in the last bits of the
first update, and by about 1e-3 of the loss after two epochs); `--deterministic` runs turn oneDNN off
(`process_settings.onednn_kernels_off`). The rerun uses the row's oneDNN setting (on when unrecorded), and
the table shows the size of any difference.
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import provenance  # noqa: E402  (this directory, run as a script)
import quality  # noqa: E402
from q1_protocol import read_history  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "cifar10_subset.npz"
REPLACED = ("--data_dir", "--run_dir", "--export_dir", "--run_name", "--epochs")  # set by the rerun, not the row


def find_row(path, run_name):
    """The last row of `run_name` in the JSON list at `path` (ValueError if there is none)."""
    rows = [r for r in quality.load_results(path) if r.get("run_name") == run_name]
    if not rows:
        raise ValueError(f"no row of run {run_name!r} in {path}")
    return rows[-1]


def check_row(row, epochs):
    """ValueError unless `row` can be rerun for `epochs` epochs and compared (see the module docstring)."""
    prov = row.get("provenance") or {}
    if not prov.get("commit") or not prov.get("cli_argv") or not (row.get("history") or {}).get("loss"):
        raise ValueError(f"row {row.get('run_name')!r} has no commit, CLI arguments or loss history to rerun")
    if prov.get("dirty"):
        raise ValueError(f"row {row['run_name']!r} ran from a checkout with uncommitted changes: its commit "
                         f"{prov['commit'][:7]} is not the code that made it")
    recorded = len(row["history"]["loss"])
    if not 1 <= epochs <= recorded:
        raise ValueError(f"--epochs={epochs}: the row has {recorded} epochs of loss")
    config = prov.get("config") or {}
    length_free = config.get("lr_schedule") == "constant" and config.get("ema_schedule") == "constant"
    if epochs != config.get("epochs", recorded) and not length_free:
        raise ValueError(f"the row's schedules (lr {config.get('lr_schedule')}, EMA {config.get('ema_schedule')}) "
                         f"depend on the run's length: rerun it whole (--epochs={config.get('epochs', recorded)})")


def rerun_argv(row, data_path, work_dir, epochs):
    """The row's CLI arguments, with the data, the run and export directories and the length of this rerun."""
    kept = [a for a in row["provenance"]["cli_argv"] if a.split("=", 1)[0] not in REPLACED]
    return kept + [f"--data_dir={data_path}", f"--run_dir={work_dir}/runs", f"--export_dir={work_dir}/saved_models",
                   f"--run_name={row['run_name']}", f"--epochs={epochs}"]


def row_onednn(row):
    """Whether the row's run had oneDNN's kernels on: as recorded (`provenance.onednn`), else on — every run
    before the record was, `--deterministic` or not (TensorFlow's default on x86)."""
    recorded = row["provenance"].get("onednn")
    return True if recorded is None else bool(recorded)


def compare_losses(recorded, rerun, decimals=6):
    """`[(epoch, recorded, rerun, same)]`: `same` when the rerun rounds to the recorded value."""
    return [(k + 1, a, b, round(b, decimals) == round(a, decimals)) for k, (a, b) in enumerate(zip(recorded, rerun))]


def checkout_at(commit, checkout=None):
    """A clean checkout of `commit`: `checkout` if given (checked), else a worktree `../reproduce-<commit>`."""
    if checkout is None:
        checkout = ROOT.parent / f"reproduce-{commit[:7]}"
        if not checkout.exists():
            done = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(checkout), commit],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise ValueError(f"cannot add a worktree of {commit[:7]}: {done.stderr.strip().splitlines()[-1]}")
    head, dirty = provenance.git_state(Path(checkout))
    if head != commit or dirty:
        raise ValueError(f"{checkout} is at {(head or '?')[:7]}{' with changes' if dirty else ''}, "
                         f"not at the row's commit {commit[:7]}")
    return Path(checkout)


def rerun_losses(checkout, argv, run_dir, onednn=True):
    """Train `python -m myol_keras.main argv` in `checkout` (its own code, not the installed one), with
    oneDNN's kernels on or off; the losses per epoch from `run_dir/history.csv`."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "TF_CPP_MIN_LOG_LEVEL": "2",
           "TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0"}
    done = subprocess.run([sys.executable, "-m", "myol_keras.main", *argv], cwd=checkout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the rerun failed (exit {done.returncode})")
    return [float(r["loss"]) for r in read_history(run_dir)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=str(HERE / "q1_paired.json"), help="the JSON of rows")
    parser.add_argument("--run", required=True, help="the row's run name, e.g. q1-byol-s3")
    parser.add_argument("--epochs", type=int, default=2, help="epochs to rerun (the first ones of the row)")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--checkout", default=None, help="a checkout of the row's commit (default: a worktree beside)")
    parser.add_argument("--work_dir", default=None, help="where the rerun's run directory goes (default: a temporary one)")
    parser.add_argument("--output", default=None,
                        help="also add the comparison to this JSON list (e.g. benchmarks/reproduced.json), with provenance")
    args = parser.parse_args(argv)
    try:
        row = find_row(args.rows, args.run)
        check_row(row, args.epochs)
        expected = row["provenance"].get("data", {}).get("sha256")
        if expected and provenance.file_sha256(args.data) != expected:
            raise ValueError(f"{args.data} is not the row's data (SHA-256 {expected[:12]}…)")
        checkout = checkout_at(row["provenance"]["commit"], args.checkout)
    except (OSError, ValueError) as e:
        parser.exit(2, f"reproduce.py: error: {e}\n")
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="reproduce-")
    print(f"rerunning {args.epochs} epoch(s) of {args.run} from {row['provenance']['commit'][:7]} in {checkout}, "
          f"oneDNN {'on' if row_onednn(row) else 'off'}", flush=True)
    try:
        losses = rerun_losses(checkout, rerun_argv(row, os.path.abspath(args.data), work_dir, args.epochs),
                              Path(work_dir) / "runs" / args.run, onednn=row_onednn(row))
    except (OSError, RuntimeError) as e:
        parser.exit(2, f"reproduce.py: error: {e}\n")
    table = compare_losses(row["history"]["loss"][:args.epochs], losses)
    print("| epoch | recorded loss | rerun loss | same to 6 decimals |\n|---|---|---|---|")
    for epoch, a, b, same in table:
        print(f"| {epoch} | {a:.6f} | {b:.6f} | {'yes' if same else 'NO'} |")
    worst = max(abs(a - b) for _, a, b, _ in table) if table else math.nan
    same = len(table) == args.epochs and all(t[3] for t in table)
    print(f"{args.run}: {'reproduced' if same else 'NOT reproduced'} ({len(table)} epochs, largest difference {worst:.2g})")
    if args.output:
        record = {"rows": os.path.relpath(os.path.abspath(args.rows), ROOT), "run_name": args.run,
                  "row_commit": row["provenance"]["commit"], "epochs": args.epochs, "onednn": row_onednn(row),
                  "recorded_loss": [a for _, a, _, _ in table], "rerun_loss": [b for _, _, b, _ in table],
                  "largest_difference": worst, "reproduced": same,
                  "provenance": provenance.provenance(data_path=args.data,
                                                      command=["benchmarks/reproduce.py", *(argv or sys.argv[1:])])}
        quality.append_result(args.output, record)
        print(f"added to {args.output}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
