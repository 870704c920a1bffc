"""Regenerate the generated sections of `docs/RESULTS.md` from the result rows, in one command.

    python benchmarks/results_doc.py                 # rewrites the marked sections of docs/RESULTS.md
    python benchmarks/results_doc.py --check         # exit 1 if docs/RESULTS.md is not what the rows give

A generated section sits between `<!-- generated:NAME -->` and `<!-- end:NAME -->` in the document; only
rows that carry their provenance (`provenance.py`: commit, versions, data hash, CPU, command, config) are
used, and the table says which commit(s) they came from.

Sections:
* `q1_paired` — the primary claim (issue 26): protocol Q1, BYOL vs MYOL paired by seed from
  `benchmarks/q1_paired.json` (linear top-1, the paired interval and the verdict by `stats.RULE`, McNemar
  per seed on the per-image predictions), and the pixel-space robustness curve of the same encoders
  (robust accuracy and robust/clean per eps) with `docs/q1_paired_robust.png`.
* `q1_official` — the same rows against the official code's Q1 runs (`../shared/benchmarks/REFERENCE.md`,
  one per method), each through the interval in which one more of our runs would fall.
* `q1_paired_semisup` — Q1-semisup (1 % and 10 % label fine-tuning) of the same encoders, BYOL vs MYOL paired
  by seed, from `benchmarks/q1_paired_semisup.json`.
* `q1_batch_paired` — Q1-batch at B = 32 (`benchmarks/q1_batch_paired.json`) beside the same seeds' B = 128
  rows: "MYOL degrades least at small batch sizes" as BYOL's drop − MYOL's drop, paired by seed, the same rule.
* `q1_family` — the rest of the family under protocol Q1 (`benchmarks/q1_family.json`), each method against
  BYOL's rows of the same seeds, paired by seed, the same rule.
* `reproduced` — rows rerun from their own commit (`benchmarks/reproduce.py --output=benchmarks/reproduced.json`):
  the first epochs' losses beside the recorded ones.
* `q1_clsa_suncet` — issue 27: protocol Q1 for CLSA (single crop), SuNCEt (10 % labels) and SimCLR from
  `benchmarks/q1_clsa_suncet.json`, beside BYOL's rows of the same seeds from `q1_paired.json`, with the
  pre-training minutes of each; SuNCEt against SimCLR paired by seed (top-1 and minutes, the same rule), and
  top-1 against pre-training minutes in `docs/q1_clsa_suncet.png`; and the methods' cost measured side by
  side under one load (`benchmarks/step_cost.json`, from `step_cost.py`), and SuNCEt's terms in short runs
  of its variants (`benchmarks/suncet_diagnosis.json`, from `suncet_diagnosis.py`).
"""

import argparse
import contextlib
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import q1_protocol  # noqa: E402  (this directory, run as a script)
import stats  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "cifar10_subset.npz"


def load_rows(path):
    """The rows of the JSON list at `path` that carry their provenance ([] if there is no such file)."""
    return [r for r in load_record(path) or [] if r.get("provenance")]


def load_record(path):
    """A JSON object from `path`, or None if there is no such file."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def pairs(rows):
    """`{seed: {"byol": row, "myol": row}}` for seeds that have both (the last row of a (method, seed) wins)."""
    by_seed = {}
    for r in rows:
        if r["method"] in ("byol", "myol"):
            by_seed.setdefault(r["seed"], {})[r["method"]] = r
    return {s: v for s, v in sorted(by_seed.items()) if len(v) == 2}


def test_labels(data_path):
    import numpy as np

    return np.load(data_path)["y_test"].astype("int64").ravel()


def correctness(row, labels):
    return "".join("1" if int(p) == int(y) else "0" for p, y in zip(row["predictions"], labels))


def _fmt_interval(iv):
    return f"{iv['mean']:+.2f} [{iv['low']:+.2f}, {iv['high']:+.2f}]"


def _interval_or_mean(iv, unit):
    """The interval, or for a single `unit` (a pair, a seed) the mean alone, saying why."""
    return _fmt_interval(iv) if iv["n"] > 1 else f"{iv['mean']:+.2f} (an interval needs 2 {unit})"


def provenance_line(rows):
    commits = sorted({_commit(r["provenance"]) for r in rows})
    cpus = sorted({f"{r['provenance']['cpu']['model']} ({', '.join(r['provenance']['cpu']['flags'])})" for r in rows})
    versions = sorted({", ".join(f"{k} {v}" for k, v in r["provenance"]["versions"].items()) for r in rows})
    data = sorted({r["provenance"]["data"]["sha256"][:12] for r in rows if r["provenance"].get("data")})
    return (f"Rows: {len(rows)} from commit {', '.join(commits)}; {'; '.join(versions)}; CPU {'; '.join(cpus)}; "
            f"data SHA-256 {', '.join(data)}…")


def q1_paired_section(rows, data_path, plot_path=None, draw=True):
    """Markdown of the primary claim and the robustness curve (see the module docstring)."""
    matched = pairs(rows)
    lines = [provenance_line(rows) if rows else "No rows yet.", ""]
    if not matched:
        return "\n".join(lines + ["No complete BYOL/MYOL pair yet."])
    labels = test_labels(data_path)
    lines += ["| seed | BYOL top-1 % | MYOL top-1 % | MYOL − BYOL | McNemar: only BYOL right / only MYOL right, p |",
              "|---|---|---|---|---|"]
    diffs = []
    for seed, pair in matched.items():
        b, m = pair["byol"], pair["myol"]
        test = stats.mcnemar(correctness(b, labels), correctness(m, labels))
        diffs.append(m["top1"] - b["top1"])
        lines.append(f"| {seed} | {b['top1']:.2f} | {m['top1']:.2f} | {diffs[-1]:+.2f} | "
                     f"{test['only_a']} / {test['only_b']}, p = {test['p']:.2f} |")
    iv = stats.paired_interval(diffs)
    byol = [p["byol"]["top1"] for p in matched.values()]
    myol = [p["myol"]["top1"] for p in matched.values()]
    spread = (f"MYOL − BYOL {_fmt_interval(iv)} (95 % paired t interval), sd of the differences {iv['sd']:.2f}; "
              f"a true difference of {stats.detectable_difference(iv['sd'], iv['n']):.2f} points would be found "
              f"with 80 % power at this n and sd." if iv["n"] > 1 else
              f"MYOL − BYOL {iv['mean']:+.2f}; an interval needs at least 2 pairs (8 are planned).")
    lines += ["", f"**Primary claim, MYOL > BYOL (linear top-1, B = 128): {stats.verdict(iv['low'], iv['high'])}** — "
                  f"n = {iv['n']} pair{'s' if iv['n'] != 1 else ''}, BYOL {sum(byol) / len(byol):.2f}, "
                  f"MYOL {sum(myol) / len(myol):.2f}, " + spread]
    curves = {s: p for s, p in matched.items() if "robust_curve" in p["byol"] and "robust_curve" in p["myol"]}
    if curves:
        first = next(iter(curves.values()))["byol"]["robust_curve"]
        eps = first["eps"]
        lines += ["", f"Robustness curve, pixel space (n = {len(curves)} pairs; PGD-{first['steps']}, step 2.5·ε/steps, "
                      f"{first['restarts']} random restarts; robust = right on the clean image and after every "
                      "restart). Mean over seeds; the last column by the rule above:", "",
                  "| ε (/255) | BYOL robust % | MYOL robust % | BYOL robust/clean | MYOL robust/clean | "
                  "MYOL − BYOL robust, 95 % interval | verdict |", "|---|---|---|---|---|---|---|"]
        table = []
        for k, e in enumerate(eps):
            rb = [p["byol"]["robust_curve"]["robust"][k] for p in curves.values()]
            rm = [p["myol"]["robust_curve"]["robust"][k] for p in curves.values()]
            qb = [p["byol"]["robust_curve"]["robust"][k] / max(p["byol"]["robust_curve"]["clean"], 1e-9) for p in curves.values()]
            qm = [p["myol"]["robust_curve"]["robust"][k] / max(p["myol"]["robust_curve"]["clean"], 1e-9) for p in curves.values()]
            d = stats.paired_interval([y - x for x, y in zip(rb, rm)])
            table.append((e, rb, rm))
            lines.append(f"| {e:g} | {sum(rb) / len(rb):.2f} | {sum(rm) / len(rm):.2f} | {sum(qb) / len(qb):.3f} | "
                         f"{sum(qm) / len(qm):.3f} | {_fmt_interval(d)} | {stats.verdict(d['low'], d['high'])} |")
        cb = [p["byol"]["robust_curve"]["faithful"] for p in curves.values()]
        cm = [p["myol"]["robust_curve"]["faithful"] for p in curves.values()]
        d = stats.paired_interval([y["pgd8_4"] - x["pgd8_4"] for x, y in zip(cb, cm)])
        lines += ["", "The paper's number (the `normalized_clip01` space, PGD-8 at 4/255, step = ε) next to its ε = 0 "
                      "control, the [0, 1] clip of the normalised image alone:", "",
                  "| | BYOL % | MYOL % |", "|---|---|---|",
                  f"| clip alone (ε = 0) | {sum(x['clip_only'] for x in cb) / len(cb):.2f} | "
                  f"{sum(x['clip_only'] for x in cm) / len(cm):.2f} |",
                  f"| PGD-8, 4/255 | {sum(x['pgd8_4'] for x in cb) / len(cb):.2f} | {sum(x['pgd8_4'] for x in cm) / len(cm):.2f} |",
                  "", f"MYOL − BYOL under PGD-8 there: {_fmt_interval(d)}; the clip alone already moves the accuracy, "
                      "so this number measures resistance to the clip plus the clean gap, not adversarial robustness."]
        if plot_path:
            if draw:
                plot_curve(curves, plot_path)
            lines += ["", f"![robustness curve]({os.path.basename(plot_path)})"]
    return "\n".join(lines)


def official_section(rows, reference):
    """Markdown: our paired Q1 rows against the official code's runs under the same protocol.

    `reference` is `{method: [top-1 of each official run]}` (`q1_tables.reference_results`,
    from `../shared/benchmarks/REFERENCE.md`). The official runs are few (one per
    method), so each is compared with our seeds through the interval in which the
    mean of that many more of our runs would fall (`stats.prediction_interval`),
    and worded by the one rule: "not resolved" means no difference was found.
    """
    table = _last_rows(rows, ("byol", "myol"))
    compared = [m for m in ("byol", "myol") if len(table.get(m, {})) > 1 and reference.get(m)]
    if not compared:
        return "No method with both our rows (at least 2 seeds) and an official run yet."
    lines = [provenance_line([r for m in compared for r in table[m].values()]), "",
             "| method | ours: n (top-1 % per seed) | ours mean ± sd | official run(s) | ours − official, 95 % interval "
             "| verdict |", "|---|---|---|---|---|---|"]
    for method in compared:
        ours, official = table[method], reference[method]
        pi = stats.prediction_interval([r["top1"] for r in ours.values()], draws=len(official))
        shift = sum(official) / len(official)
        low, high = pi["low"] - shift, pi["high"] - shift
        seeds = ", ".join(f"{r['top1']:.2f}" for r in ours.values())
        lines.append(f"| {method.upper()} | {len(ours)} ({seeds}) | "
                     f"{pi['mean']:.2f} ± {pi['sd']:.2f} | {', '.join(f'{v:.2f}' for v in official)} | "
                     f"{pi['mean'] - shift:+.2f} [{low:+.2f}, {high:+.2f}] | {stats.verdict(low, high)} |")
    matched = pairs(rows)
    if len(matched) > 1 and len(reference.get("byol", [])) == 1 and len(reference.get("myol", [])) == 1:
        gaps = [p["myol"]["top1"] - p["byol"]["top1"] for p in matched.values()]
        pi = stats.prediction_interval(gaps)
        theirs = reference["myol"][0] - reference["byol"][0]
        inside = pi["low"] <= theirs <= pi["high"]
        lines += ["", f"The official code's MYOL − BYOL, {theirs:+.2f} (one pair of runs), is "
                      f"{'inside' if inside else 'outside'} the 95 % interval of one more of our pairs, "
                      f"[{pi['low']:+.2f}, {pi['high']:+.2f}] (our {len(gaps)} pairs: mean {pi['mean']:+.2f}, "
                      f"sd {pi['sd']:.2f})."]
    return "\n".join(lines)


def q1_semisup_section(rows):
    """Markdown: Q1-semisup of the paired encoders, BYOL vs MYOL paired by seed per label fraction, the one rule."""
    if not rows:
        return "No rows yet."
    encoders = sorted({f"{(r['encoder_row'].get('commit') or '?')[:7]} (benchmarks/{Path(r['encoder_row']['output']).name})"
                       for r in rows if r.get("encoder_row")})
    lines = [provenance_line(rows) + (f" Encoders: the Q1 rows of commit {', '.join(encoders)}." if encoders else ""),
             ""]
    for fraction in sorted({r["label_fraction"] for r in rows}):
        matched = pairs([r for r in rows if r["label_fraction"] == fraction])
        if not matched:
            continue
        labelled = next(iter(matched.values()))["byol"]["num_labelled"]
        lines += [f"{fraction * 100:g} % of the labels ({labelled} images), fine-tuned top-1 %:", "",
                  "| seed | BYOL | MYOL | MYOL − BYOL |", "|---|---|---|---|"]
        diffs = []
        for seed, pair in matched.items():
            diffs.append(pair["myol"]["top1"] - pair["byol"]["top1"])
            lines.append(f"| {seed} | {pair['byol']['top1']:.2f} | {pair['myol']['top1']:.2f} | {diffs[-1]:+.2f} |")
        iv = stats.paired_interval(diffs)
        shown = _interval_or_mean(iv, "pairs")
        lines += ["", f"**{fraction * 100:g} % labels, MYOL > BYOL: {stats.verdict(iv['low'], iv['high'])}** — "
                      f"n = {iv['n']}, MYOL − BYOL {shown}.", ""]
    return "\n".join(lines).rstrip("\n")


def q1_batch_section(small_rows, q1_rows, batch_size=32):
    """Markdown: "MYOL degrades least at small batch sizes", paired by seed (the module docstring).

    A seed counts when it has all four runs: BYOL and MYOL at B = 128 (`q1_rows`, the primary claim's) and
    at B = `batch_size` in float32 on Q1-batch's schedule (`small_rows`; other rows are left out). A drop is
    top-1 at B = 128 minus top-1 at the small batch; the claim is BYOL's drop − MYOL's drop > 0, which is
    also (MYOL − BYOL at the small batch) − (MYOL − BYOL at B = 128).
    """
    epochs = q1_protocol.q1_batch_schedule(batch_size)[0]
    small = pairs([r for r in small_rows if r.get("batch_size") == batch_size and r.get("epochs") == epochs
                   and r.get("precision", "float32") == "float32"])
    large = pairs([r for r in q1_rows if q1_protocol.is_q1(r)])
    seeds = [s for s in small if s in large]
    if not seeds:
        return "No seed has its four runs yet."
    used = [small[s][m] for s in seeds for m in ("byol", "myol")]
    lines = [provenance_line(used) + f" B = 128: the primary claim's rows ({len(seeds)} pairs of them).", "",
             f"| seed | BYOL B = 128 | BYOL B = {batch_size} | MYOL B = 128 | MYOL B = {batch_size} | BYOL drop | "
             "MYOL drop | BYOL drop − MYOL drop |", "|---|---|---|---|---|---|---|---|"]
    gaps, small_diffs = [], []
    for s in seeds:
        b128, b_small = large[s]["byol"]["top1"], small[s]["byol"]["top1"]
        m128, m_small = large[s]["myol"]["top1"], small[s]["myol"]["top1"]
        gaps.append((b128 - b_small) - (m128 - m_small))
        small_diffs.append(m_small - b_small)
        lines.append(f"| {s} | {b128:.2f} | {b_small:.2f} | {m128:.2f} | {m_small:.2f} | {b128 - b_small:+.2f} | "
                     f"{m128 - m_small:+.2f} | {gaps[-1]:+.2f} |")
    for claim, diffs in ((f"MYOL degrades least (BYOL drop − MYOL drop, 128 → {batch_size})", gaps),
                         (f"MYOL > BYOL at B = {batch_size}", small_diffs)):
        iv = stats.paired_interval(diffs)
        shown = _interval_or_mean(iv, "seeds")
        lines += ["", f"**{claim}: {stats.verdict(iv['low'], iv['high'])}** — n = {iv['n']}, {shown}"
                      + (f", sd {iv['sd']:.2f}." if iv["n"] > 1 else ".")]
    return "\n".join(lines)


FAMILY = ("unmix", "imix", "tribyol", "repmix", "ccsl", "cssl", "moco", "simclr")


def q1_family_section(rows, q1_rows):
    """Markdown: each method of the family against BYOL's Q1 rows of the same seeds, paired by seed, the one rule.

    Only protocol-Q1 rows count (`q1_protocol.is_q1`); a seed counts for a method when BYOL has a row at it.
    """
    byol = _last_rows([r for r in q1_rows if q1_protocol.is_q1(r)], ("byol",)).get("byol", {})
    by_method = _last_rows([r for r in rows if q1_protocol.is_q1(r)], FAMILY, set(byol))
    if not by_method:
        return "No row yet."
    used = [r for runs in by_method.values() for r in runs.values()]
    lines = [provenance_line(used) + " BYOL: the primary claim's rows.", "",
             "| method | seeds | top-1 % per seed | mean ± sd | BYOL at those seeds | method − BYOL, 95 % interval | "
             "verdict |", "|---|---|---|---|---|---|---|"]
    for method in [m for m in FAMILY if m in by_method]:
        runs = by_method[method]
        top1 = [r["top1"] for r in runs.values()]
        base = [byol[s]["top1"] for s in runs]
        iv = stats.paired_interval([t - b for t, b in zip(top1, base)])
        values = stats.paired_interval(top1)  # its mean and sd are those of the top-1 values
        spread = f"{values['mean']:.2f}" + (f" ± {values['sd']:.2f}" if values["n"] > 1 else "")
        shown = _interval_or_mean(iv, "seeds")
        lines.append(f"| {method} | {','.join(map(str, runs))} | {', '.join(f'{t:.2f}' for t in top1)} | {spread} | "
                     f"{sum(base) / len(base):.2f} | {shown} | {stats.verdict(iv['low'], iv['high'])} |")
    return "\n".join(lines)


def reproduced_section(records):
    """Markdown: rows rerun from their own commit by `benchmarks/reproduce.py` (its `--output` records)."""
    if not records:
        return "No row rerun yet."
    lines = [f"Reruns made by commit {', '.join(sorted({_commit(r['provenance']) for r in records}))}:", "",
             "| row | its commit | epochs rerun | oneDNN | recorded loss | rerun loss | largest difference | "
             "to 6 decimals |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['run_name']} (benchmarks/{Path(r['rows']).name}) | {r['row_commit'][:7]} | {r['epochs']} | "
                     f"{'on' if r['onednn'] else 'off'} | {', '.join(f'{v:.6f}' for v in r['recorded_loss'])} | "
                     f"{', '.join(f'{v:.6f}' for v in r['rerun_loss'])} | {r['largest_difference']:.1g} | "
                     f"{'same' if r['reproduced'] else 'differs'} |")
    return "\n".join(lines)


CLSA_SUNCET_METHODS = ("clsa", "suncet", "simclr", "byol")


def _last_rows(rows, methods, seeds=None):
    """`{method: {seed: row}}`, seeds ascending (the last row of a (method, seed) wins), B = 128 float32 Q1 rows only."""
    table = {}
    for r in rows:
        if r["method"] in methods and r.get("batch_size", 128) == 128 and r.get("precision", "float32") == "float32":
            if seeds is None or r["seed"] in seeds:
                table.setdefault(r["method"], {})[r["seed"]] = r
    return {method: dict(sorted(by_seed.items())) for method, by_seed in table.items()}  # seeds in order


def q1_clsa_suncet_section(rows, byol_rows, semisup_rows=(), plot_path=None, draw=True, step_cost=None,
                           diagnosis=None):
    """Markdown of issue 27's Q1 rows (see the module docstring); `semisup_rows` are Q1-semisup rows of BYOL/MYOL.

    `step_cost` is `benchmarks/step_cost.py`'s record: the methods' cost measured side by side under one load;
    `diagnosis` is `benchmarks/suncet_diagnosis.py`'s: SuNCEt's terms in short runs of its variants.
    """
    table = _last_rows(rows, CLSA_SUNCET_METHODS)
    seeds = sorted({seed for by_seed in table.values() for seed in by_seed})
    table.update(_last_rows(byol_rows, ("byol",), set(seeds)))
    used = [r for by_seed in table.values() for r in by_seed.values()]
    if not used:
        return "No rows yet."
    lines = [provenance_line(used), "",
             "| method | seeds | linear top-1 % per seed | mean ± sd | pre-train min (mean) | img/s (mean) |",
             "|---|---|---|---|---|---|"]
    for method in CLSA_SUNCET_METHODS:
        by_seed = table.get(method)
        if not by_seed:
            continue
        top1 = [r["top1"] for r in by_seed.values()]
        iv = stats.paired_interval(top1)
        minutes = [_minutes(r) for r in by_seed.values()]
        speeds = [r["images_per_second"] for r in by_seed.values() if r.get("images_per_second")]
        sd = f" ± {iv['sd']:.2f}" if iv["n"] > 1 else ""
        lines.append(f"| {method} | {','.join(str(s) for s in by_seed)} | {', '.join(f'{t:.2f}' for t in top1)} | "
                     f"{iv['mean']:.2f}{sd} | {_mean_minutes(minutes)} | "
                     f"{sum(speeds) / len(speeds) if speeds else float('nan'):.1f} |")
    both = sorted(set(table.get("suncet", {})) & set(table.get("simclr", {})))
    if both:
        lines += ["", "SuNCEt against SimCLR, paired by seed:", "",
                  "| seed | SimCLR top-1 % | SimCLR min | SuNCEt top-1 % | SuNCEt min | SuNCEt − SimCLR "
                  "| minutes ratio |",
                  "|---|---|---|---|---|---|---|"]
        diffs, ratios = [], []
        for seed in both:
            a, b = table["simclr"][seed], table["suncet"][seed]
            diffs.append(b["top1"] - a["top1"])
            ratio = _minutes(b) / _minutes(a) if _minutes(a) and _minutes(b) else None
            ratios += [ratio] if ratio else []
            lines.append(f"| {seed} | {a['top1']:.2f} | {_mean_minutes([_minutes(a)])} | {b['top1']:.2f} | "
                         f"{_mean_minutes([_minutes(b)])} | {diffs[-1]:+.2f} | {f'{ratio:.2f}' if ratio else '—'} |")
        iv = stats.paired_interval(diffs)
        shown = _interval_or_mean(iv, "pairs")
        lines += ["", f"**SuNCEt − SimCLR, linear top-1: {shown} → {stats.verdict(iv['low'], iv['high'])}** "
                      f"(n = {iv['n']}), at "
                      f"{f'{sum(ratios) / len(ratios):.2f}×' if ratios else '—'} SimCLR's pre-training minutes."]
    if step_cost:
        lines += ["", step_cost_lines(step_cost)]
    if diagnosis:
        lines += ["", diagnosis_lines(diagnosis)]
    semisup = [r for r in semisup_rows if abs(r.get("label_fraction", 0) - 0.1) < 1e-9]
    if semisup:
        means = {m: [r["top1"] for r in semisup if r["method"] == m] for m in ("byol", "myol")}
        said = ", ".join(f"{m.upper()} {sum(v) / len(v):.2f} (n = {len(v)})" for m, v in means.items() if v)
        lines += ["", f"SuNCEt saw 10 % of the labels while pre-training; the BYOL and MYOL encoders that saw them "
                      f"only in fine-tuning (Q1-semisup at 10 %, above) reach {said}."]
    if plot_path and (table.get("suncet") or table.get("simclr")):
        if draw:
            plot_minutes(table, plot_path)
        lines += ["", f"![top-1 against pre-training minutes]({os.path.basename(plot_path)})"]
    return "\n".join(lines)


def step_cost_lines(record):
    """Markdown of a `step_cost.py` record: each method's images/s, Q1 minutes and cost against the base."""
    prov, base = record["provenance"], record["base"]
    lines = [f"Cost under one load (`benchmarks/step_cost.py`: every method in one process, {record['threads']} thread, "
             f"rotated order, median of {record['reps']} repetitions of {record['steps']} steps after a tracing epoch; "
             f"commit {_commit(prov)}, load "
             f"{prov['load_average'][0]} → {prov['load_average_at_end'][0]}):", "",
             f"| method | img/s | minutes for Q1's 50 epochs | cost vs {base} (median of per-repetition ratios) |",
             "|---|---|---|---|"]
    for method, row in record["methods"].items():
        lines.append(f"| {method} | {row['images_per_second']:.1f} | {row['q1_minutes']:.1f} | "
                     f"{row['cost_vs_base']:.2f}× |")
    return "\n".join(lines)


def diagnosis_lines(record):
    """Markdown of a `suncet_diagnosis.py` record: each variant's NT-Xent and SuNCEt term per epoch."""
    prov = record["provenance"]
    lines = [f"SuNCEt taken apart (`benchmarks/suncet_diagnosis.py`: the first {record['epochs']} Q1 epochs of each "
             f"variant, seed {record['seed']}, the same data and views; commit {_commit(prov)}):", "",
             "| variant | NT-Xent term per epoch | SuNCEt term per epoch |", "|---|---|---|"]
    for name, rows in record["variants"].items():
        ntxent = ", ".join(f"{r.get('ntxent_loss', r['loss']):.3f}" for r in rows)
        term = ", ".join(f"{r['suncet_loss']:.3f}" for r in rows if "suncet_loss" in r) or "—"
        lines.append(f"| {name} | {ntxent} | {term} |")
    norms = record.get("gradient_norms_at_init")
    if norms:
        lines += ["", f"Gradient norm over encoder and head at initialisation, first batch: NT-Xent {norms['ntxent']:.2f}, "
                      f"SuNCEt term {norms['suncet']:.2f} ({norms['suncet'] / norms['ntxent']:.1f}×)."]
    return "\n".join(lines)


def _commit(prov):
    """A one-measurement record's commit, short, with " (dirty)" if the checkout had changes."""
    return f"{(prov.get('commit') or '?')[:7]}{' (dirty)' if prov.get('dirty') else ''}"


def _minutes(row):
    """Pre-training minutes of a row: its training steps over every epoch (`train_seconds`), resumed runs included.

    None for rows without the field: their `pretrain_seconds` is the wall clock of
    the last process only, which undercounts a resumed run.
    """
    return row["train_seconds"] / 60 if row.get("train_seconds") else None


def _mean_minutes(minutes):
    return "—" if not minutes or None in minutes else f"{sum(minutes) / len(minutes):.1f}"


@contextlib.contextmanager
def _figure(path, title, xlabel, ylabel):
    """The axes of one 5.5 x 3.8 in figure, saved to `path` (120 dpi, grid and legend) when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    try:
        yield ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def plot_minutes(table, path):
    with _figure(path, "Q1: top-1 against pre-training minutes", "pre-training minutes (1 thread)",
                 "linear top-1 %") as ax:
        for method, by_seed in table.items():
            timed = [r for r in by_seed.values() if _minutes(r)]
            ax.scatter([_minutes(r) for r in timed], [r["top1"] for r in timed], label=f"{method} (n = {len(timed)})")


def plot_curve(curves, path):
    eps = next(iter(curves.values()))["byol"]["robust_curve"]["eps"]
    with _figure(path, "Q1 robustness curve, PGD-10, 2 restarts", "ε (/255), pixel space; 0 = clean",
                 "top-1 % (mean ± SE over seeds)") as ax:
        for method, colour in (("byol", "tab:blue"), ("myol", "tab:orange")):
            per_eps = [[p[method]["robust_curve"]["clean"] for p in curves.values()]]
            per_eps += [[p[method]["robust_curve"]["robust"][k] for p in curves.values()] for k in range(len(eps))]
            xs = [0.0] + list(eps)
            means = [sum(v) / len(v) for v in per_eps]
            ses = [stats.paired_interval(v)["se"] if len(v) > 1 else 0.0 for v in per_eps]
            ax.errorbar(xs, means, yerr=ses, marker="o", capsize=3, label=f"{method.upper()} (n = {len(curves)})",
                        color=colour)
        ax.set_xscale("symlog", linthresh=0.25)


def replace_section(text, name, body):
    """`text` with the body between `<!-- generated:name -->` and `<!-- end:name -->` replaced."""
    pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- end:{name} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no section '<!-- generated:{name} -->' ... '<!-- end:{name} -->' in the document")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--doc", default=str(ROOT / "docs" / "RESULTS.md"))
    parser.add_argument("--paired", default=str(HERE / "q1_paired.json"))
    parser.add_argument("--clsa_suncet", default=str(HERE / "q1_clsa_suncet.json"))
    parser.add_argument("--paired_semisup", default=str(HERE / "q1_paired_semisup.json"))
    parser.add_argument("--family", default=str(HERE / "q1_family.json"),
                        help="Q1 rows of the rest of the family (from the primary claim's frozen commit)")
    parser.add_argument("--batch", default=str(HERE / "q1_batch_paired.json"),
                        help="Q1-batch rows at B = 32 (from the primary claim's frozen commit)")
    parser.add_argument("--reference", default=str(ROOT / ".." / "shared" / "benchmarks" / "REFERENCE.md"),
                        help="the official code's Q1 runs (a Markdown table: method | seed | epochs | top-1 | ...)")
    parser.add_argument("--step_cost", default=str(HERE / "step_cost.json"))
    parser.add_argument("--suncet_diagnosis", default=str(HERE / "suncet_diagnosis.json"))
    parser.add_argument("--reproduced", default=str(HERE / "reproduced.json"))
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--check", action="store_true", help="exit 1 if the document differs from what the rows give")
    args = parser.parse_args(argv)
    with open(args.doc) as f:
        text = f.read()
    docs_dir = Path(args.doc).parent
    paired = load_rows(args.paired)
    new = replace_section(text, "q1_paired", q1_paired_section(
        paired, args.data, str(docs_dir / "q1_paired_robust.png"), draw=not args.check))
    import q1_tables  # the official runs' table reader (this directory)

    new = replace_section(new, "q1_official", official_section(paired, q1_tables.reference_results(args.reference)))
    new = replace_section(new, "reproduced", reproduced_section(load_record(args.reproduced) or []))
    semisup = load_rows(args.paired_semisup)
    new = replace_section(new, "q1_paired_semisup", q1_semisup_section(semisup))
    new = replace_section(new, "q1_batch_paired", q1_batch_section(load_rows(args.batch), paired))
    new = replace_section(new, "q1_family", q1_family_section(load_rows(args.family), paired))
    new = replace_section(new, "q1_clsa_suncet", q1_clsa_suncet_section(
        load_rows(args.clsa_suncet), paired, semisup, str(docs_dir / "q1_clsa_suncet.png"),
        draw=not args.check, step_cost=load_record(args.step_cost),
        diagnosis=load_record(args.suncet_diagnosis)))
    if args.check:
        if new != text:
            print(f"{args.doc} is out of date: run python benchmarks/results_doc.py", file=sys.stderr)
            return 1
        return 0
    with open(args.doc, "w") as f:
        f.write(new)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
