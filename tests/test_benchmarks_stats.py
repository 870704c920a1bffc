"""benchmarks/stats.py and results_doc.py: the paired interval, the wording rule, McNemar, the generated section."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    import sys

    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_interval_is_the_t_interval_with_n_minus_1_degrees_of_freedom():
    stats = _load("stats")
    iv = stats.paired_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.302653
    assert iv["mean"] == pytest.approx(2.0)
    assert iv["sd"] == pytest.approx(1.0)
    assert iv["low"] == pytest.approx(2.0 - 4.302653 / np.sqrt(3), abs=1e-5)
    assert iv["high"] == pytest.approx(2.0 + 4.302653 / np.sqrt(3), abs=1e-5)
    assert stats.paired_interval([5.0])["low"] == float("-inf")


def test_one_wording_rule_for_every_row():
    stats = _load("stats")
    assert stats.verdict(0.01, 3.0) == "holds"
    assert stats.verdict(-3.0, -0.01) == "does not hold"
    assert stats.verdict(-0.01, 3.0) == "not resolved"


def test_mcnemar_exact_on_the_discordant_images():
    stats = _load("stats")
    out = stats.mcnemar("1111100000", "1111111111")  # 5 images right only under B
    assert (out["only_a"], out["only_b"]) == (0, 5)
    assert out["p"] == pytest.approx(2 * 0.5 ** 5)
    assert stats.mcnemar("10", "10")["p"] == 1.0
    with pytest.raises(ValueError, match="same test images"):
        stats.mcnemar("10", "1")


def test_the_generated_section_comes_from_rows_with_provenance(tmp_path):
    doc = _load("results_doc")
    labels = np.array([0, 1, 2, 3])
    np.savez(tmp_path / "data.npz", y_test=labels)
    prov = {"commit": "abcdef0123", "dirty": False, "versions": {"tensorflow": "2.21.0"},
            "cpu": {"model": "CPU", "flags": ["avx2"]}, "data": {"sha256": "f" * 64}}
    curve = {"eps": [1.0], "steps": 10, "restarts": 2, "clean": 50.0, "robust": [25.0],
             "faithful": {"clip_only": 40.0, "pgd8_4": 10.0}}
    rows = []
    for seed, (b, m) in enumerate([(40.0, 42.0), (41.0, 43.5), (39.0, 41.2)]):
        rows.append({"method": "byol", "seed": seed, "epochs": 50, "top1": b, "predictions": "0100", "provenance": prov,
                     "robust_curve": curve})
        rows.append({"method": "myol", "seed": seed, "epochs": 50, "top1": m, "predictions": "0123", "provenance": prov,
                     "robust_curve": {**curve, "robust": [30.0]}})
    rows.append({"method": "byol", "seed": 9, "top1": 1.0, "predictions": "0000"})  # no provenance: not used
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    text = "# R\n" + "".join(f"<!-- generated:{name} -->\nold\n<!-- end:{name} -->\n"
                             for name in ("q1_paired", "q1_official", "reproduced", "q1_paired_semisup",
                                          "q1_batch_paired", "q1_family", "q1_clsa_suncet"))
    (tmp_path / "R.md").write_text(text)
    (tmp_path / "REFERENCE.md").write_text("| method | seed | epochs | linear top-1 % |\n|---|---|---|---|\n"
                                           "| BYOL | 0 | 50 | 38.84 |\n| MYOL | 0 | 50 | 40.24 |\n")
    argv = [f"--doc={tmp_path / 'R.md'}", f"--paired={tmp_path / 'rows.json'}", f"--data={tmp_path / 'data.npz'}",
            f"--clsa_suncet={tmp_path / 'none.json'}", f"--paired_semisup={tmp_path / 'none.json'}",
            f"--reference={tmp_path / 'REFERENCE.md'}", f"--reproduced={tmp_path / 'none.json'}",
            f"--batch={tmp_path / 'none.json'}", f"--family={tmp_path / 'none.json'}"]
    assert doc.main(argv + ["--check"]) == 1
    assert doc.main(argv) == 0
    out = (tmp_path / "R.md").read_text()
    assert "Rows: 6 from commit abcdef0" in out
    assert "| 0 | 40.00 | 42.00 | +2.00 | 0 / 2, p = 0.50 |" in out
    # differences 2.0, 2.5, 2.2: mean 2.233, sd 0.2517, half-width 4.3027 * 0.2517 / sqrt(3) = 0.625
    assert "MYOL > BYOL (linear top-1, B = 128): holds** — n = 3 pairs" in out
    assert "MYOL − BYOL +2.23 [+1.61, +2.86] (95 % paired t interval)" in out
    assert "| 1 | 25.00 | 30.00 | 0.500 | 0.600 | +5.00 [+5.00, +5.00] | holds |" in out
    assert (tmp_path / "q1_paired_robust.png").exists()
    assert "| BYOL | 3 (40.00, 41.00, 39.00) | 40.00 ± 1.00 | 38.84 |" in out  # the official section, from REFERENCE.md
    assert "\nold\n" not in out and "<!-- generated:q1_paired_semisup -->\nNo rows yet.\n" in out  # every section regenerated
    assert "<!-- generated:q1_batch_paired -->\nNo seed has its four runs yet.\n" in out
    assert doc.main(argv + ["--check"]) == 0


def test_prediction_interval_by_hand():
    stats = _load("stats")
    # [40, 41, 42]: mean 41, sd 1; t(0.975, 2) = 4.302653; one more run: 41 ± 4.302653 * sqrt(1 + 1/3) = 41 ± 4.968
    iv = stats.prediction_interval([40.0, 41.0, 42.0])
    assert (iv["low"], iv["high"]) == (pytest.approx(36.0317, abs=1e-3), pytest.approx(45.9683, abs=1e-3))
    # the mean of 3 more runs: 41 ± 4.302653 * sqrt(1/3 + 1/3) = 41 ± 3.513
    assert stats.prediction_interval([40.0, 41.0, 42.0], draws=3)["high"] == pytest.approx(44.5131, abs=1e-3)
    with pytest.raises(ValueError, match="at least 2 values"):
        stats.prediction_interval([1.0])


def test_the_official_section_compares_one_official_run_with_our_seeds():
    doc = _load("results_doc")
    prov = {"commit": "abcdef0123", "dirty": False, "versions": {"tensorflow": "2.21.0"},
            "cpu": {"model": "CPU", "flags": ["avx2"]}, "data": {"sha256": "f" * 64}}
    rows = [{"method": m, "seed": seed, "top1": t, "provenance": prov}
            for seed, pair in enumerate([(40.0, 42.0), (41.0, 43.5), (42.0, 44.2)]) for m, t in zip(("byol", "myol"), pair)]
    out = doc.official_section(rows, {"byol": [38.84], "myol": [40.24], "random": [29.4, 27.58]})
    # BYOL: 41 - 38.84 = +2.16, half-width 4.968 (the test above): [-2.81, +7.13]
    assert "| BYOL | 3 (40.00, 41.00, 42.00) | 41.00 ± 1.00 | 38.84 | +2.16 [-2.81, +7.13] | not resolved |" in out
    # MYOL - BYOL per seed 2.0, 2.5, 2.2: mean 2.233, sd 0.2517; one more pair: 2.233 ± 4.3027 * 0.2517 * 1.1547 = ± 1.250
    assert "The official code's MYOL − BYOL, +1.40 (one pair of runs), is inside the 95 % interval of one more of " \
           "our pairs, [+0.98, +3.48]" in out
    assert "random" not in out.lower().split("rows:")[0] and "| RANDOM" not in out  # no rows of ours: not compared
    assert doc.official_section(rows[:2], {"byol": [38.84]}).startswith("No method with both")


def test_the_reproduced_section_puts_each_rerun_beside_its_row():
    doc = _load("results_doc")
    record = {"rows": "benchmarks/q1_paired.json", "run_name": "q1-byol-s0", "row_commit": "36afec9" + "0" * 33,
              "epochs": 2, "onednn": True, "recorded_loss": [2.37099, 1.612345], "rerun_loss": [2.371236, 1.613412],
              "largest_difference": 0.001067, "reproduced": False, "provenance": {"commit": "abcdef0123", "dirty": False}}
    out = doc.reproduced_section([record])
    assert out.startswith("Reruns made by commit abcdef0:")
    assert ("| q1-byol-s0 (benchmarks/q1_paired.json) | 36afec9 | 2 | on | 2.370990, 1.612345 | 2.371236, 1.613412 | "
            "0.001 | differs |") in out
    assert doc.reproduced_section([]) == "No row rerun yet."


def test_the_semisup_section_pairs_the_encoders_by_seed_per_fraction():
    doc = _load("results_doc")
    prov = {"commit": "fedcba9876", "dirty": False, "versions": {"tensorflow": "2.21.0"},
            "cpu": {"model": "CPU", "flags": ["avx2"]}, "data": {"sha256": "e" * 64}}
    link = {"output": "../evidence/benchmarks/q1_paired.json", "commit": "36afec9aaa", "dirty": False, "top1": 40.0}
    rows = [{"method": m, "seed": seed, "label_fraction": 0.1, "num_labelled": 460, "top1": t, "provenance": prov,
             "encoder_row": link}
            for seed, pair in [(1, (40.0, 40.5)), (0, (41.0, 42.0))] for m, t in zip(("byol", "myol"), pair)]
    rows.append({"method": "byol", "seed": 2, "label_fraction": 0.1, "num_labelled": 460, "top1": 50.0, "provenance": prov})
    out = doc.q1_semisup_section(rows)
    assert "Encoders: the Q1 rows of commit 36afec9 (benchmarks/q1_paired.json)." in out
    assert "10 % of the labels (460 images)" in out and "| 0 | 41.00 | 42.00 | +1.00 |" in out
    assert "| 2 |" not in out  # no MYOL row of seed 2: not a pair
    # differences 1.0, 0.5: mean 0.75, se 0.25, t(0.975, 1) = 12.706: 0.75 ± 3.177
    assert "**10 % labels, MYOL > BYOL: not resolved** — n = 2, MYOL − BYOL +0.75 [-2.43, +3.93]." in out
    assert doc.q1_semisup_section([]) == "No rows yet."


def test_the_batch_section_pairs_four_runs_per_seed_and_takes_the_difference_of_the_drops():
    doc = _load("results_doc")
    prov = {"commit": "36afec9f87", "dirty": False, "versions": {"tensorflow": "2.21.0"},
            "cpu": {"model": "CPU", "flags": ["avx2"]}, "data": {"sha256": "a" * 64}}

    def rows(batch_size, table, epochs=None):
        epochs = epochs or 50 * batch_size // 128  # Q1-batch's schedule: 12 epochs at B = 32, 50 at 128
        return [{"method": m, "seed": seed, "batch_size": batch_size, "epochs": epochs, "top1": t, "provenance": prov}
                for seed, pair in table.items() for m, t in zip(("byol", "myol"), pair)]

    large = rows(128, {0: (40.0, 41.0), 1: (42.0, 40.0), 2: (39.0, 39.0), 3: (45.0, 45.0)})
    small = rows(32, {0: (38.0, 40.0), 1: (41.0, 38.0), 2: (36.0, 39.0), 4: (30.0, 31.0)}) + rows(64, {3: (1.0, 2.0)})
    out = doc.q1_batch_section(small + rows(32, {3: (1.0, 2.0)}, epochs=2), large)  # 2 epochs: not Q1-batch
    assert "Rows: 6 from commit 36afec9" in out and "(3 pairs of them)" in out
    assert "| 0 | 40.00 | 38.00 | 41.00 | 40.00 | +2.00 | +1.00 | +1.00 |" in out
    assert "| 2 | 39.00 | 36.00 | 39.00 | 39.00 | +3.00 | +0.00 | +3.00 |" in out
    assert "| 3 |" not in out and "| 4 |" not in out  # seed 3 has no Q1-batch B = 32 pair, seed 4 no B = 128 pair
    # gaps 1, -1, 3: mean 1, sd 2, se 2/sqrt(3) = 1.1547, t(0.975, 2) = 4.3027: 1 ± 4.968
    assert ("**MYOL degrades least (BYOL drop − MYOL drop, 128 → 32): not resolved** — n = 3, +1.00 [-3.97, +5.97], "
            "sd 2.00.") in out
    # MYOL - BYOL at B = 32: 2, -3, 3: mean 0.667, sd 3.2146, se 1.8559: 0.667 ± 7.985
    assert "**MYOL > BYOL at B = 32: not resolved** — n = 3, +0.67 [-7.32, +8.65], sd 3.21." in out
    assert doc.q1_batch_section([], large) == "No seed has its four runs yet."


def test_the_family_section_pairs_each_method_with_byol_by_seed():
    doc = _load("results_doc")
    prov = {"commit": "36afec9f87", "dirty": False, "versions": {"tensorflow": "2.21.0"},
            "cpu": {"model": "CPU", "flags": ["avx2"]}, "data": {"sha256": "a" * 64}}

    def row(method, seed, top1, epochs=50):
        return {"method": method, "seed": seed, "batch_size": 128, "epochs": epochs, "top1": top1, "provenance": prov}

    byol = [row("byol", s, t) for s, t in enumerate([40.0, 41.0, 42.0])]
    family = ([row("unmix", s, t) for s, t in enumerate([41.0, 43.0, 42.0])]
              + [row("imix", 0, 30.0), row("imix", 5, 30.0), row("moco", 1, 99.0, epochs=2)])
    out = doc.q1_family_section(family, byol)
    assert "Rows: 4 from commit 36afec9" in out  # imix seed 5 has no BYOL row, moco's 2-epoch row is not Q1
    # unmix - byol: 1, 2, 0: mean 1, sd 1, se 0.5774, t(0.975, 2) = 4.3027: 1 ± 2.484
    assert "| unmix | 0,1,2 | 41.00, 43.00, 42.00 | 42.00 ± 1.00 | 41.00 | +1.00 [-1.48, +3.48] | not resolved |" in out
    assert "| imix | 0 | 30.00 | 30.00 | 40.00 | -10.00 (an interval needs 2 seeds) | not resolved |" in out
    assert "moco" not in out and out.index("| unmix") < out.index("| imix")  # the family's order
    assert doc.q1_family_section([], byol) == "No row yet."


def test_docs_results_is_what_the_recorded_rows_give():
    """docs/RESULTS.md's generated sections are regenerated from benchmarks/q1_paired.json, never hand-edited."""
    doc = _load("results_doc")
    assert doc.main(["--check"]) == 0, "run: python benchmarks/results_doc.py"


def test_the_clsa_suncet_section_pairs_suncet_with_simclr_and_gives_the_minutes(tmp_path):
    doc = _load("results_doc")
    prov = {"commit": "1234567abc", "dirty": False, "versions": {"tensorflow": "2.21.0"},
            "cpu": {"model": "CPU", "flags": ["avx2"]}, "data": {"sha256": "e" * 64}}
    rows = []
    # Rows land in the order the runs finish, not by seed: the table lists seeds in order.
    for seed, (simclr, suncet, clsa) in [(0, (50.0, 52.0, 45.0)), (2, (49.0, 51.5, 44.0)), (1, (51.0, 52.0, 46.0))]:
        # pretrain_seconds is the last process's wall clock (a resumed run's is short): the minutes use train_seconds.
        rows.append({"method": "simclr", "seed": seed, "top1": simclr, "pretrain_seconds": 300.0, "train_seconds": 1200.0,
                     "images_per_second": 200.0, "provenance": prov})
        rows.append({"method": "suncet", "seed": seed, "top1": suncet, "pretrain_seconds": 1500.0, "train_seconds": 1500.0,
                     "images_per_second": 160.0, "provenance": prov})
        rows.append({"method": "clsa", "seed": seed, "top1": clsa, "pretrain_seconds": 1800.0, "provenance": prov})
    byol = [{"method": "byol", "seed": s, "top1": 40.0 + s, "train_seconds": 4800.0, "images_per_second": 100.0,
             "provenance": prov} for s in (0, 1, 2, 3)]  # seed 3 has no CLSA/SuNCEt row: left out
    semisup = [{"method": "byol", "seed": 0, "label_fraction": 0.1, "top1": 41.0},
               {"method": "byol", "seed": 0, "label_fraction": 0.01, "top1": 20.0}]
    cost = {"base": "simclr", "reps": 3, "steps": 20, "threads": 1,
            "provenance": {"commit": "abcdef0123", "dirty": False, "load_average": [2.5, 2, 2], "load_average_at_end": [2.75]},
            "methods": {"simclr": {"images_per_second": 128.0, "q1_minutes": 30.0, "cost_vs_base": 1.0},
                        "suncet": {"images_per_second": 120.0, "q1_minutes": 32.0, "cost_vs_base": 1.07}}}
    diagnosis = {"epochs": 2, "seed": 1, "provenance": {"commit": "fedcba9876", "dirty": True},
                 "gradient_norms_at_init": {"ntxent": 2.0, "suncet": 7.0},
                 "variants": {"simclr": [{"loss": 5.3}, {"loss": 4.9}],
                              "suncet": [{"loss": 8.3, "ntxent_loss": 5.4, "suncet_loss": 2.9},
                                         {"loss": 8.2, "ntxent_loss": 5.3, "suncet_loss": 2.9}]}}
    out = doc.q1_clsa_suncet_section(rows, byol, semisup, plot_path=str(tmp_path / "m.png"), step_cost=cost,
                                     diagnosis=diagnosis)
    assert "the first 2 Q1 epochs of each variant, seed 1, the same data and views; commit fedcba9 (dirty)" in out
    assert "| simclr | 5.300, 4.900 | — |" in out and "| suncet | 5.400, 5.300 | 2.900, 2.900 |" in out
    assert "NT-Xent 2.00, SuNCEt term 7.00 (3.5×)." in out
    assert "median of 3 repetitions of 20 steps after a tracing epoch; commit abcdef0, load 2.5 → 2.75" in out
    assert "| suncet | 120.0 | 32.0 | 1.07× |" in out
    assert "Rows: 12 from commit 1234567" in out
    assert "| suncet | 0,1,2 | 52.00, 52.00, 51.50 | 51.83 ± 0.29 | 25.0 | 160.0 |" in out
    assert "| byol | 0,1,2 | 40.00, 41.00, 42.00 | 41.00 ± 1.00 | 80.0 | 100.0 |" in out
    assert "| 2 | 49.00 | 20.0 | 51.50 | 25.0 | +2.50 | 1.25 |" in out
    # differences 2.0, 1.0, 2.5: mean 1.833, sd 0.7638, half-width 4.3027 * 0.7638 / sqrt(3) = 1.897
    assert "SuNCEt − SimCLR, linear top-1: +1.83 [-0.06, +3.73] → not resolved** (n = 3), at 1.25×" in out
    assert "only in fine-tuning (Q1-semisup at 10 %, above) reach BYOL 41.00 (n = 1)." in out
    assert (tmp_path / "m.png").exists()
    assert "| clsa | 0,1,2 | 45.00, 46.00, 44.00 | 45.00 ± 1.00 | — |" in out  # no train_seconds: no minutes shown


def test_train_seconds_counts_every_epoch_of_a_resumed_run(tmp_path, capsys):
    """The driver's wall clock sees only the process that finished a run; the history sees every epoch."""
    quality = _load("quality")
    # Epoch images/s 100, 200, 50 at 10 steps of 20 images: 2 + 1 + 4 = 7 s of training steps.
    history = [{"images_per_second": "100"}, {"images_per_second": "200.0"}, {"images_per_second": "50"}]
    assert quality.train_seconds(history, 10, 20) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="epoch"):
        quality.train_seconds([{"images_per_second": ""}], 10, 20)
    run_dir = tmp_path / "work" / "runs" / "q1-byol-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "history.csv").write_text("epoch,loss,images_per_second\n0,5.0,100\n1,4.0,200\n2,3.0,50\n")
    (run_dir / "config.json").write_text(json.dumps({"batch_size": 20, "resolved": {"steps_per_epoch": 10}}))
    output = tmp_path / "q1.json"
    # A run resumed after epoch 2: its last process trained 1 epoch (4 s) and the row says 4.1.
    output.write_text(json.dumps([{"method": "byol", "seed": 0, "run_name": "q1-byol-s0", "pretrain_seconds": 4.1},
                                  {"method": "myol", "seed": 0, "run_name": "q1-myol-s0", "train_seconds": 9.0}]))
    argv = ["--fill_train_seconds", f"--output={output}", f"--work_dir={tmp_path / 'work'}"]
    assert quality.main(argv) == 0
    assert "filled train_seconds in 1 row(s)" in capsys.readouterr().out
    byol, myol = json.loads(output.read_text())
    assert byol["train_seconds"] == 7.0 and byol["pretrain_seconds"] == 4.1
    assert byol["train_seconds_filled"]["from"].endswith("q1-byol-s0/history.csv")
    assert myol == {"method": "myol", "seed": 0, "run_name": "q1-myol-s0", "train_seconds": 9.0}  # had it: untouched
    # A row whose run directory is gone: one line, exit 2.
    output.write_text(json.dumps([{"method": "simclr", "seed": 1, "run_name": "q1-simclr-s1"}]))
    with pytest.raises(SystemExit) as exit_info:
        quality.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "q1-simclr-s1: no history.csv" in err and err.count("\n") == 1
    assert json.loads(output.read_text()) == [{"method": "simclr", "seed": 1, "run_name": "q1-simclr-s1"}]  # untouched


def test_two_q1_drivers_never_start_the_same_run(tmp_path, capsys, monkeypatch):
    """A driver claims a run before starting it and re-reads the JSON under the claim (issue 27's noticed race)."""
    quality = _load("quality")
    work, output = tmp_path / "work", tmp_path / "q1.json"
    work.mkdir()
    argv = ["--smoke", "--methods=byol", "--seeds=0", "--jobs=1", f"--work_dir={work}", f"--output={output}"]
    held = quality.claim_run(work, quality.run_name_for("byol", 0, 1))  # another driver is training it
    assert held is not None and quality.claim_run(work, quality.run_name_for("byol", 0, 1)) is None
    assert quality.main(argv) == 0
    assert "skip byol seed 0 B=128: another driver is running it" in capsys.readouterr().out
    assert not output.exists()
    held.close()
    # The other driver finished between this driver's start and its turn: the row is there now.
    keys = [set(), {("byol", 0, 128, 1, "float32")}]
    monkeypatch.setattr(quality, "finished_keys", lambda path: keys.pop(0))
    assert quality.main(argv) == 0
    assert "skip byol seed 0 B=128: finished by another driver" in capsys.readouterr().out
    assert not keys and not output.exists()


def test_step_cost_takes_the_ratio_within_each_repetition():
    cost = _load("step_cost")
    # Load halves every speed in repetition 2: the medians move, the per-repetition ratio does not.
    table = cost.summarize({"simclr": [120.0, 60.0, 118.0], "suncet": [100.0, 50.0, 100.0]}, "simclr")
    assert table["suncet"]["cost_vs_base"] == pytest.approx(1.2)  # ratios 1.2, 1.2, 1.18
    assert table["simclr"]["cost_vs_base"] == 1.0
    assert table["suncet"]["images_per_second"] == 100.0
    assert table["suncet"]["q1_minutes"] == pytest.approx(50 * 36 * 128 / 100.0 / 60, abs=0.05)  # 38.4
    with pytest.raises(SystemExit) as exit_info:
        cost.main(["--methods=suncet", "--base=simclr"])
    assert exit_info.value.code == 2
