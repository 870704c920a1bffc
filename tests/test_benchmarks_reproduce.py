"""benchmarks/reproduce.py: rerunning the first epochs of a recorded row from its own commit (no training here)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "benchmarks" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(**changes):
    row = {"run_name": "q1-byol-s3", "top1": 40.77, "history": {"loss": [2.37099, 1.612345, 1.549421]},
           "provenance": {"commit": "36afec9" + "0" * 33, "dirty": False, "data": {"sha256": "ab" * 32},
                          "config": {"lr_schedule": "constant", "ema_schedule": "constant", "epochs": 3},
                          "cli_argv": ["--method=byol", "--data_dir=/elsewhere/data.npz", "--epochs=3", "--seed=3",
                                       "--epochs=3", "--run_dir=/elsewhere/runs", "--export_dir=/elsewhere/sm",
                                       "--run_name=q1-byol-s3", "--threads=1"]}}
    for key, value in changes.items():
        target = row["provenance"] if key in row["provenance"] else row
        target[key] = value
    return row


def test_the_rerun_keeps_the_rows_arguments_and_replaces_where_and_how_long():
    reproduce = _load()
    argv = reproduce.rerun_argv(_row(), "/here/data.npz", "/tmp/w", 2)
    assert argv == ["--method=byol", "--seed=3", "--threads=1", "--data_dir=/here/data.npz", "--run_dir=/tmp/w/runs",
                    "--export_dir=/tmp/w/saved_models", "--run_name=q1-byol-s3", "--epochs=2"]


def test_losses_agree_to_the_recorded_six_decimals():
    reproduce = _load()
    table = reproduce.compare_losses([2.37099, 1.612345], [2.3709903, 1.6134])
    assert table == [(1, 2.37099, 2.3709903, True), (2, 1.612345, 1.6134, False)]


@pytest.mark.parametrize("changes, epochs, match", [
    ({"dirty": True}, 2, "uncommitted changes"),
    ({"cli_argv": None}, 2, "no commit, CLI arguments or loss history"),
    ({}, 4, "the row has 3 epochs of loss"),
    ({"config": {"lr_schedule": "cosine", "ema_schedule": "constant", "epochs": 3}}, 2,
     r"depend on the run's length: rerun it whole \(--epochs=3\)"),
])
def test_rows_that_cannot_be_rerun_say_why(changes, epochs, match):
    reproduce = _load()
    with pytest.raises(ValueError, match=match):
        reproduce.check_row(_row(**changes), epochs)
    reproduce.check_row(_row(config={"lr_schedule": "cosine", "ema_schedule": "cosine", "epochs": 3}), 3)  # whole: fine


def test_the_rerun_uses_the_rows_onednn_setting():
    reproduce = _load()
    assert reproduce.row_onednn(_row()) is True  # unrecorded: every run before the record had it on
    recorded = _row()
    recorded["provenance"]["onednn"] = False
    assert reproduce.row_onednn(recorded) is False


def test_bad_requests_are_one_line_and_exit_2(tmp_path, capsys):
    reproduce = _load()
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([_row()]))
    data = tmp_path / "data.npz"
    data.write_bytes(b"not the row's data")
    for argv, said in ([f"--rows={rows}", "--run=q1-myol-s9"], "no row of run 'q1-myol-s9'"),\
                      ([f"--rows={rows}", "--run=q1-byol-s3", f"--data={data}"], "is not the row's data"):
        with pytest.raises(SystemExit) as stop:
            reproduce.main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1
