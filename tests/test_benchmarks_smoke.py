"""The throughput benchmark cannot rot: its smoke mode runs one tiny step of each part.

Not a timed test: it checks that `benchmarks/throughput.py --smoke` runs the
library's real train step (through `fit`, with the EMA callback), the tf.data
pipeline and the augmentation pipeline, and writes its table and JSON. The
PyTorch reference and the comparison driver need the torch venv, which CI does
not have, so only their command lines are checked here.
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_throughput_smoke_runs_every_part(tmp_path, capsys):
    throughput = _load("throughput")
    output = tmp_path / "smoke.json"
    payload = throughput.main(["--smoke", f"--output={output}"])

    saved = json.loads(output.read_text())
    assert saved["meta"]["settings"]["smoke"] is True
    assert saved["meta"]["cpu_model"]
    assert len(saved["meta"]["load_average_before"]) == 3
    assert {"tensorflow", "keras"} <= set(saved["meta"]["versions"])
    got = {(r["part"], r["method"], r["views"]) for r in saved["results"]}
    assert got == {
        ("train_step", "byol", 2), ("end_to_end", "byol", 2),
        ("train_step", "myol", 2), ("end_to_end", "myol", 2),
        ("augment", None, 2), ("augment", None, 3),
    }
    for record in saved["results"]:
        assert record["images_per_second"]["median"] > 0
        assert record["peak_rss_mb"][0] > 0
    assert payload["results"][0]["ema"] == "callback"
    table = capsys.readouterr().out
    assert "| myol_keras | train_step | byol | 2 | float32 |" in table
    assert "CPU" in table and "Load average before the run" in table


@pytest.mark.slow
def test_scale_smoke_runs_cold_and_warm_and_times_the_pipelines(tmp_path, capsys):
    scale = _load("scale")
    output = tmp_path / "scale.json"
    payload = scale.main(["--smoke", f"--work_dir={tmp_path / 'work'}", f"--output={output}"])
    saved = json.loads(output.read_text())
    assert saved["meta"]["smoke"] is True and saved["meta"]["cpu_model"]
    (row,) = saved["results"]
    assert row["num_images"] == 300 and row["folder_mb"] > 0
    for run in ("cold", "warm"):
        assert row[run]["status"] == 0, row[run]["stderr_tail"]
        assert row[run]["startup_seconds"] > 0 and row[run]["peak_rss_anon_mb"] > 0
        assert len(row[run]["load_before"]) == 3
    names = {"cache, global permutation", "in memory, global permutation",
             "in memory, shuffle buffer 10000 (previous pipeline)"}
    assert set(row["pipeline"]) == names | {f"{name}, no views" for name in names}
    assert all(p["median"] > 0 for p in row["pipeline"].values())
    assert payload["results"][0]["warm"]["status"] == 0
    table = capsys.readouterr().out
    assert "| 300 |" in table and "| warm |" in table and "SMOKE" in table


@pytest.mark.parametrize("script", ["reference_torch.py", "compare.py"])
def test_torch_side_command_lines_parse_without_torch(script):
    # Both import torch lazily, so --help works in the project's environment.
    shown = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "--smoke" in shown.stdout and "--require_quiet" in shown.stdout


def test_require_quiet_refuses_on_a_busy_machine(monkeypatch):
    common = _load("bench_common")
    monkeypatch.setattr(common, "load_average", lambda: (3.0, 3.0, 3.0))
    args = common.add_common_args(__import__("argparse").ArgumentParser()).parse_args(["--require_quiet"])
    with pytest.raises(SystemExit) as exit_info:
        common.check_load(args, stream=sys.stderr)
    assert exit_info.value.code == 3


@pytest.mark.slow
def test_quality_smoke_runs_q1_end_to_end_and_skips_finished_runs(tmp_path, capsys):
    # Protocol Q1's model and data, but 1 epoch of 2 steps and 1 probe epoch:
    # the CLI run, the export, the probe and the JSON bookkeeping all execute.
    quality = _load("quality")
    output = tmp_path / "q1.json"
    argv = ["--smoke", "--methods=byol", "--seeds=0", "--jobs=2", "--robust_curve", "--curve_eps=1,4", "--curve_steps=1",
            "--curve_restarts=1", f"--work_dir={tmp_path / 'work'}", f"--output={output}"]
    assert quality.main(argv) == 0
    results = json.loads(output.read_text())
    assert len(results) == 1, capsys.readouterr().out
    result = results[0]
    assert (result["method"], result["seed"], result["epochs"], result["precision"]) == ("byol", 0, 1, "float32")
    assert 0.0 <= result["top5"] <= 100.0 and result["top1"] <= result["top5"]
    assert result["run_name"] == "q1-byol-s0-e1-smoke"
    assert result["pretrain_seconds"] > 0 and result["threads"] == 1
    # Training-step seconds come from the run's history (every epoch, even across a resume).
    assert result["train_seconds"] == round(quality.run_train_seconds(tmp_path / "work" / "runs" / result["run_name"]), 1) > 0
    # The loss curve travels in the JSON (the run directory is gitignored scratch).
    assert len(result["history"]["loss"]) == 1 and math.isfinite(result["history"]["loss"][0])
    assert "| byol (1 ep) | 0 |" in capsys.readouterr().out
    # Provenance (issue 26): the row says which code, data, machine and command made it.
    prov = result["provenance"]
    assert len(prov["commit"]) == 40 and isinstance(prov["dirty"], bool)
    assert prov["command"][:2] == ["benchmarks/quality.py", "--smoke"] and "--seed=0" in prov["cli_argv"]
    assert prov["config"]["method"] == "byol" and prov["config"]["shuffle_buffer"] == 0
    assert len(prov["data"]["sha256"]) == 64 and {"tensorflow", "keras", "numpy"} <= set(prov["versions"])
    assert len(result["predictions"]) == 932 and set(result["predictions"]) <= set("0123456789")
    # The robustness curve of the same encoder and probe (20 test images under --smoke).
    curve = result["robust_curve"]
    assert curve["eps"] == [1.0, 4.0] and len(curve["robust_bits"][1]) == curve["num_test"] == 20
    assert all(r <= curve["clean"] for r in curve["robust"])  # robust means right clean and under attack
    # A second call finds the run in the JSON and does not train again.
    assert quality.main(argv) == 0
    assert "skip byol seed 0" in capsys.readouterr().out
    assert len(json.loads(output.read_text())) == 1


@pytest.mark.slow
def test_quality_smoke_runs_q1_batch_at_a_small_batch(tmp_path, capsys):
    # Q1-batch plumbing (issue 18): B = 32 reaches the run (its own run name and row key) with Q1-batch's
    # fractional warm-up, 10 * 32 / 128 = 2.5 epochs; 1 epoch of 2 steps, 1 probe epoch.
    quality = _load("quality")
    output = tmp_path / "q1.json"
    argv = ["--smoke", "--methods=byol", "--seeds=0", "--batch_sizes=32", "--jobs=1",
            f"--work_dir={tmp_path / 'work'}", f"--output={output}"]
    assert quality.main(argv) == 0
    [result] = json.loads(output.read_text())
    assert (result["batch_size"], result["epochs"], result["run_name"]) == (32, 1, "q1-byol-s0-b32-e1-smoke")
    flags = (tmp_path / "work" / "runs" / result["run_name"] / "flags.txt").read_text().split()
    assert "--batch_size=32" in flags and "--warmup_epochs=2.5" in flags
    assert "| 32 |" in capsys.readouterr().out  # the batch-size table is printed


def test_quality_reference_comparison_uses_seed_spread_or_binomial_error():
    tables = _load("q1_tables")
    # ours: 3 seeds, mean 42, SE = 2/sqrt(3); the official code: 1 run at 40 %, binomial SE on 932 images.
    assert tables.binomial_se(40.0) == pytest.approx(100 * math.sqrt(0.4 * 0.6 / 932))
    results = [{"method": "byol", "seed": s, "epochs": 50, "top1": a} for s, a in enumerate([40.0, 42.0, 44.0])]
    results.append({"method": "byol", "seed": 0, "epochs": 50, "top1": 10.0, "precision": "mixed_bfloat16"})
    table = tables.reference_comparison(results, {"byol": [40.0], "myol": [45.0]})
    tolerance = 2 * math.sqrt(4 / 3 + tables.binomial_se(40.0) ** 2)
    assert f"| byol | 3, 42.00 ± 1.15 | 1, 40.00 ± 1.60 | +2.00 | {tolerance:.2f} | yes |" in table
    assert "myol" not in table  # no runs of ours: no row
    far = tables.reference_comparison([{"method": "byol", "seed": 0, "epochs": 50, "top1": 30.0}], {"byol": [40.0]})
    assert far.endswith("| NO |")


@pytest.mark.slow
def test_quality_smoke_runs_robust_and_semisup_on_the_smoke_encoder(tmp_path, capsys):
    # Q1-robust and Q1-semisup plumbing: the smoke encoder (1 epoch of 2 steps), its 1-epoch probe attacked on
    # 20 test images (FGSM and a 1-step PGD) in both spaces, and 1 epoch of 1 % label fine-tuning.
    quality = _load("quality")
    robust, semisup = tmp_path / "robust.json", tmp_path / "semisup.json"
    argv = ["--smoke", "--methods=byol", "--seeds=0", f"--work_dir={tmp_path / 'work'}", f"--output={tmp_path / 'q1.json'}",
            f"--robust_output={robust}", f"--semisup_output={semisup}", "--protocols=robust,semisup"]
    # No encoder yet: one line names the command that makes it.
    assert quality.main(argv) == 0
    out = capsys.readouterr().out
    assert "missing encoder q1-byol-s0: make it with `python benchmarks/quality.py --encoders_only --methods=byol " \
           "--seeds=0 --batch_sizes=128" in out
    assert not robust.exists() and not semisup.exists()

    assert quality.main(["--encoders_only", *argv]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "q1.json").exists()  # encoders only: no linear row
    rows = json.loads(robust.read_text())
    assert [r["attack_space"] for r in rows] == ["pixel", "normalized_clip01"]
    for r in rows:
        assert (r["method"], r["seed"], r["batch_size"], r["run_name"], r["num_test"]) == ("byol", 0, 128, "q1-byol-s0-e1-smoke", 20)
        assert list(r["accuracy"]) == ["clean", "fgsm(4/255)", "fgsm(8/255)", "pgd(1)"]
        assert all(0.0 <= v <= 100.0 for v in r["accuracy"].values()) and r["cpu"]
    (row,) = json.loads(semisup.read_text())
    assert (row["method"], row["label_fraction"], row["epochs"], row["num_test"]) == ("byol", 0.01, 1, 20)
    for r in [*rows, row]:  # traceable rows (issue 26); no Q1 row of the encoder in q1.json, so no link to one
        assert {"commit", "dirty", "versions", "cpu", "data", "command", "onednn", "load_average_at_start"} <= set(r["provenance"])
        assert r["provenance"]["command"][0] == "benchmarks/quality.py" and "encoder_row" not in r
    assert row["num_labelled"] > 0 and 0.0 <= row["top1"] <= 100.0 and len(row["history_top1"]) == 1
    assert "| pixel | pgd(1) |" in out and "| 1 % |" in out  # both tables, MYOL side empty
    # A second call finds every row and runs nothing.
    assert quality.main(argv) == 0
    out = capsys.readouterr().out
    assert "skip robust q1-byol-s0-e1-smoke" in out and "skip semisup q1-byol-s0-e1-smoke 0.01" in out
    assert len(json.loads(robust.read_text())) == 2 and len(json.loads(semisup.read_text())) == 1


def test_a_stage_row_names_the_q1_row_of_its_encoder(tmp_path):
    quality = _load("quality")
    q1 = tmp_path / "q1.json"
    q1.write_text(json.dumps([
        {"run_name": "q1-byol-s0", "top1": 40.0, "provenance": {"commit": "old", "dirty": False}},
        {"run_name": "q1-myol-s0", "top1": 41.0},
        {"run_name": "q1-byol-s0", "top1": 43.5, "provenance": {"commit": "abc123", "dirty": True}},
    ]))
    link = quality.encoder_row_of(str(q1), "q1-byol-s0")
    assert (link["commit"], link["dirty"], link["top1"]) == ("abc123", True, 43.5)  # the last row of the run wins
    assert link["output"].endswith("q1.json")
    assert quality.encoder_row_of(str(q1), "q1-myol-s0")["commit"] is None  # a row without provenance: linked, no commit
    assert quality.encoder_row_of(str(q1), "q1-byol-s1") is None
    assert quality.encoder_row_of(str(tmp_path / "none.json"), "q1-byol-s0") is None


def test_myol_vs_byol_verdicts_follow_twice_the_standard_error():
    tables = _load("q1_tables")
    # BYOL [40, 41, 42], MYOL [45, 46, 47]: means 41 and 46, each SE 1/sqrt(3); difference 5, its SE sqrt(2/3) = 0.82.
    b, b_se, m, m_se, diff, se, verdict = tables.compare([40.0, 41.0, 42.0], [45.0, 46.0, 47.0])
    assert (b, m, diff) == (41.0, 46.0, 5.0)
    assert b_se == pytest.approx(1 / math.sqrt(3)) and se == pytest.approx(math.sqrt(2 / 3))
    assert verdict == "holds"
    assert tables.compare([45.0, 46.0, 47.0], [40.0, 41.0, 42.0])[-1] == "does not hold"
    assert tables.compare([40.0, 41.0, 42.0], [40.5, 41.5, 42.5])[-1] == "not resolved at this scale"  # 0.5 < 1.63
    assert tables.verdict(1.0, 0.5) == "not resolved at this scale"  # exactly 2 SE is not more than 2 SE

    rows = [{"method": m, "seed": s, "attack_space": "pixel", "accuracy": {"clean": a, "pgd(8)": a - 30}}
            for m, accs in (("byol", [40, 41, 42]), ("myol", [45, 46, 47])) for s, a in enumerate(accs)]
    table = tables.robust_table(rows)
    assert "| pixel | pgd(8) | 11.00 ± 0.58 (n=3) | 16.00 ± 0.58 (n=3) | +5.00 ± 0.82 | holds |" in table
    semisup = [{"method": "byol", "seed": 0, "label_fraction": 0.1, "top1": 50.0}]
    assert "| 10 % | 50.00 ± 1.64 (n=1) | — | — | no runs to compare |" in tables.semisup_table(semisup)


def test_batch_size_claim_compares_the_drops_from_128_to_32():
    tables = _load("q1_tables")
    schedule = _load("q1_protocol").q1_batch_schedule

    def rows(method, batch_size, accs):  # rows without "batch_size" are B = 128 (written before Q1-batch)
        extra = {} if batch_size == 128 else {"batch_size": batch_size}
        return [{"method": method, "seed": s, "epochs": schedule(batch_size)[0], "top1": a, **extra}
                for s, a in enumerate(accs)]

    results = (rows("byol", 128, [40, 41, 42]) + rows("byol", 32, [30, 31, 32])
               + rows("myol", 128, [45, 46, 47]) + rows("myol", 32, [43, 44, 45])
               + rows("byol", 64, [35]) + [{"method": "byol", "seed": 0, "epochs": 5, "batch_size": 32, "top1": 0.0}])
    # Drops: BYOL 10 ± sqrt(2/3), MYOL 2 ± sqrt(2/3); difference 8 ± sqrt(4/3) = 1.15 -> holds.
    assert tables.batch_size_drop(tables.batch_size_values(results), "byol") == (10.0, pytest.approx(math.sqrt(2 / 3)))
    table = tables.batch_size_table(results)
    assert "| points | 10.00 ± 0.82 | 2.00 ± 0.82 | +8.00 ± 1.15 | holds |" in table
    assert "| 64 | 35.00 ± 1.56 (n=1) | — | — | no runs to compare |" in table  # a short run (5 epochs) is not Q1-batch
    assert "| 32 | 31.00 ± 0.58 (n=3) | 44.00 ± 0.58 (n=3) | +13.00 ± 0.82 | holds |" in table


def test_compare_names_the_peer_configurations_and_their_targets():
    # Issue 17: the peer in its best CPU configuration (bf16 autocast + channels_last) beside float32.
    compare = _load("compare")
    assert compare.parse_reference("bf16+channels_last") == ("bf16", True)
    assert compare.parse_reference("float32") == ("float32", False)
    with pytest.raises(SystemExit, match="unknown reference configuration"):
        compare.parse_reference("fp16")
    assert compare.reference_label("bf16", True) == "torch bf16_autocast+channels_last"
    target = compare.target_for
    assert target("train_step", 2, "mixed_bfloat16", "bf16_autocast+channels_last") == "≥ 1.5× (native-bf16 CPU)"
    assert target("train_step", 2, "mixed_bfloat16", "float32") == "≥ 1.8× (native-bf16 CPU)"
    assert target("end_to_end", 2, "float32", "float32") == "≥ 1.3×"
    assert target("augment", 2, "float32", "bf16_autocast+channels_last") == "≥ 3× (2 views)"
    shown = subprocess.run([sys.executable, str(BENCHMARKS / "compare.py"), "--help"],
                           capture_output=True, text=True, timeout=60).stdout
    assert "--torch_precision" in shown and "--channels_last" in shown and "--extra_references" in shown


def test_train_flops_per_image_counts_the_passes_of_each_method():
    common = _load("bench_common")
    # ResNet-18 width 64, CIFAR stem, 32 px: 0.557 GMAC forward (heads included).
    assert common.forward_macs(18, 64, 32) == pytest.approx(0.5573e9, rel=1e-3)
    byol, myol = common.train_flops_per_image("byol"), common.train_flops_per_image("myol")
    assert byol == pytest.approx(8.92e9, rel=1e-2)  # 2 online passes x 3 + 2 target passes
    assert myol / byol == pytest.approx(11 / 8)  # one more online pass
    assert common.train_flops_per_image("simclr") is None and common.forward_macs(50) is None


def test_profile_step_reads_onednn_lines_and_names_the_parts_of_a_step():
    profile = _load("profile_step")
    lines = [
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_bf16,forward_training,"
        "src:bf16::blocked:acdb::f0 wei:bf16:a:blocked:AcdB64a2b::f0 dst:bf16::blocked:acdb::f0,,"
        "alg:convolution_direct,mb128_ic64oc64_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1,2.5",
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,"
        "src:bf16::blocked:cdba::f0 dst:bf16::blocked:AcdB64a2b::f0,,,64x64x3x3,0.5",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_bf16,forward_training,"
        "src:bf16::blocked:acdb::f0,,,mb128,1.5",
        "not a oneDNN line",
    ]
    parsed = profile.parse_onednn(lines)
    assert parsed["total_ms"] == pytest.approx(4.5)
    assert parsed["primitives"][0] == ["convolution", "forward_training", "brg_conv_fwd:avx512_core_bf16", 2, 4.0]
    assert parsed["reorders"] == [["bf16 cdba", "bf16 AcdB64a2b", 1, 0.5]]
    assert profile.op_category("_MklNativeConv2DBackpropFilter") == "conv backward (weights)"
    assert profile.op_category("_MklNativeFusedBatchNormEx") == "batchnorm forward"
    assert profile.op_part("StatefulPartitionedCall/target/res_net_1/conv1/convolution") == "target forward"
    assert profile.op_part("StatefulPartitionedCall/gradient_tape/online_1/res_net/conv1/Conv2DBackpropFilter") \
        == "online backward"
    assert profile.op_part("StatefulPartitionedCall/sgd/Mul_3").startswith("optimizer")


def test_resnet_convolutions_list_the_network_that_forward_macs_counts():
    common = _load("bench_common")
    convs = common.resnet_convolutions(18, 64, 32)
    assert len(convs) == 20  # stem + 8 blocks x 2 + 3 shortcuts
    assert [c["name"] for c in convs if c["kernel"] == 1] == [
        "stage2.block1.shortcut", "stage3.block1.shortcut", "stage4.block1.shortcut"]
    shortcut = convs[[c["name"] for c in convs].index("stage2.block1.shortcut")]
    assert (shortcut["side"], shortcut["side_out"], shortcut["c_in"], shortcut["c_out"]) == (32, 16, 64, 128)
    heads = 512 * 2048 + 2048 * 128 + 128 * 2048 + 2048 * 128
    assert sum(common.conv_macs(c) for c in convs) + heads == common.forward_macs(18, 64, 32)
    assert common.resnet_convolutions(50) is None


def test_kernel_ceiling_composes_a_step_from_its_passes(tmp_path, capsys):
    ceiling = _load("kernel_ceiling")
    args = ceiling.parse_args(["--batch_size=10"])
    conv = {"kernel": 1, "c_in": 1, "c_out": 1, "side": 1, "side_out": 1, "stride": 1}
    # Two convolutions of 10 images x 1 MAC = 20 FLOP each; the stem has no input gradient.
    rows = [dict(conv, name="stem", forward={"ms": 1.0}, weight_gradient={"ms": 2.0}),
            dict(conv, name="stage1.block1.conv1", forward={"ms": 3.0}, input_gradient={"ms": 4.0},
                 weight_gradient={"ms": 5.0})]
    by_direction, by_method = ceiling.summarise(rows, args)
    assert by_direction["forward"]["ms"] == 4.0 and by_direction["input_gradient"]["ms"] == 4.0
    assert by_direction["forward"]["tflops"] == pytest.approx(40 / 4e-3 / 1e12)
    assert by_direction["input_gradient"]["tflops"] == pytest.approx(20 / 4e-3 / 1e12)
    # online pass 4 + 4 + 7 = 15 ms, target pass 4 ms: BYOL 2*15 + 2*4, MYOL 3*15 + 2*4.
    assert by_method["byol"]["convolution_ms_per_step"] == pytest.approx(38.0)
    assert by_method["myol"]["convolution_ms_per_step"] == pytest.approx(53.0)
    assert by_method["byol"]["ceiling_images_per_second"] == pytest.approx(10 / 0.038)

    output = tmp_path / "ceiling.json"
    ceiling.main(["--width=4", "--image_size=8", "--batch_size=2", "--reps=1", "--precision=float32",
                  "--gemm_weight_gradient_side=4", f"--output={output}"])
    saved = json.loads(output.read_text())
    assert saved["label"] == "tensorflow float32 gemm_weight_gradient_side=4"
    assert len(saved["convolutions"]) == 20 and "input_gradient" not in saved["convolutions"][0]
    assert all(r["weight_gradient"]["ms"] > 0 for r in saved["convolutions"])
    assert saved["by_method"]["myol"]["convolution_ms_per_step"] > saved["by_method"]["byol"]["convolution_ms_per_step"]
    assert "| byol |" in capsys.readouterr().out


@pytest.mark.slow
def test_step_cost_smoke_measures_through_the_cli_and_records_provenance(tmp_path, capsys):
    step_cost = _load("step_cost")
    output = tmp_path / "cost.json"
    assert step_cost.main(["--smoke", "--methods=simclr", "--base=simclr", f"--output={output}"]) == 0
    record = json.loads(output.read_text())
    row = record["methods"]["simclr"]
    assert row["images_per_second"] > 0 and row["cost_vs_base"] == 1.0 and len(row["per_rep"]) == 1
    assert len(record["provenance"]["commit"]) == 40 and record["provenance"]["load_average_at_end"]
    assert "| simclr |" in capsys.readouterr().out


@pytest.mark.slow
def test_suncet_diagnosis_smoke_trains_its_variants_and_measures_the_gradients(tmp_path, capsys):
    diagnosis = _load("suncet_diagnosis")
    output = tmp_path / "diag.json"
    assert diagnosis.main(["--smoke", "--variants=suncet_term_only", f"--output={output}"]) == 0
    record = json.loads(output.read_text())
    (term_only,) = record["variants"]["suncet_term_only"]
    assert term_only["loss"] == term_only["suncet_loss"] != term_only["ntxent_loss"]  # the supervised term alone
    assert record["gradient_norms_at_init"]["suncet"] > 0 and record["gradient_norms_at_init"]["ntxent"] > 0
    assert "| suncet_term_only |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        diagnosis.main(["--variants=suncet,nope"])
    assert exit_info.value.code == 2
