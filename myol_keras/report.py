"""Tables and plots of one or several runs: `report.md` from history.csv and results.json.

    python -m myol_keras.report --runs=runs/byol-c10,runs/myol-c10 --output=reports/c10

For each run directory: pre-training curves from `history.csv` (loss, the
collapse monitor `z_std`, learning rate and EMA tau), the accuracy under attack
against epsilon from the attack records of `results.json`, and what the
encoder learned: the linear-probe and kNN top-1 of the trained encoder next to
a randomly initialised one of the same architecture (`--eval=random_init`), a
2-D map of test-image embeddings coloured by class (PCA; `--embedding_map=tsne`
for t-SNE on at most 2,000 points) from the sample the linear probe keeps
(`embedding_sample.npz`), and beside it a retrieval grid: a few test images,
each with its nearest training images by cosine similarity of the embeddings,
neighbours of another class framed in red (`retrieval_sample.npz`, kept by
the linear probe and kNN). The results table has one row per run. With several
runs, the curves are drawn side by side (one line per run).
"""

import csv
import os

import numpy as np
from absl import flags

from myol_keras import cli, rundir

PROG = "myol_keras.report"
REPORT_FILE = "report.md"
PLOT_DIR = "plots"

FLAGS = flags.FlagValues()
flags.DEFINE_list("runs", [], "Run directories (runs/<name>), comma-separated.", flag_values=FLAGS)
flags.register_validator("runs", bool, message="pass at least one run directory (--runs=runs/<name>)",
                         flag_values=FLAGS)
flags.DEFINE_string("output", "", "Output directory (default: the run directory when there is one run).", flag_values=FLAGS)
flags.DEFINE_enum("embedding_map", "pca", ["pca", "tsne"], "2-D projection of the embedding map.", flag_values=FLAGS)


def read_history(run_dir):
    """history.csv as {column: np.array} (empty dict if absent)."""
    path = os.path.join(run_dir, rundir.HISTORY_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for key in (rows[0].keys() if rows else []):
        values = []
        for r in rows:
            try:
                values.append(float(r[key]))
            except (TypeError, ValueError):
                values.append(np.nan)
        columns[key] = np.asarray(values)
    return columns


def _run_settings(run_dir):
    """The settings in a run's config.json: the `PretrainConfig` dict (older runs: under "flags")."""
    config = rundir.read_json(os.path.join(run_dir, rundir.CONFIG_FILE), default={})
    return config.get("flags") or config


def summarize_run(run_dir):
    """One table row (an ordered dict of column -> value) for a run directory."""
    from myol_keras.evaluation.features import read_results

    flag_values = _run_settings(run_dir)
    history = read_history(run_dir)
    row = {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "method": flag_values.get("method", ""),
        "dataset": flag_values.get("dataset", ""),
        "batch": flag_values.get("batch_size", ""),
        "epochs": int(len(history.get("epoch", []))) or flag_values.get("epochs", ""),
    }
    for key, label in (("loss", "final loss"), ("z_std", "final z_std")):
        if key in history and len(history[key]):
            row[label] = float(history[key][-1])
    latest = {}
    for record in read_results(run_dir):
        kind = record.get("evaluation")
        if kind == "semisup":
            latest[f"semisup {record['label_fraction']:g}"] = record
        elif kind == "transfer":
            latest[f"transfer {record['mode']} {record['target']}"] = record
        elif kind == "attack":
            latest[f"attack {record['attack_space']}"] = record
        else:
            latest[kind] = record
    if "linear" in latest:
        row["linear top-1"] = latest["linear"]["top1"]
        row["linear top-5"] = latest["linear"]["top5"]
    if "knn" in latest:
        row["kNN top-1"] = latest["knn"]["top1"]
    if "random_init" in latest:
        row["random-init linear top-1"] = latest["random_init"]["linear"]["top1"]
        row["random-init kNN top-1"] = latest["random_init"]["knn"]["top1"]
    for key in sorted(latest):
        record = latest[key]
        if key.startswith("semisup") or key.startswith("transfer"):
            row[f"{key} top-1"] = record["top1"]
        elif key.startswith("attack"):
            space = record["attack_space"]
            for name, acc in record["accuracy"].items():
                row[f"{name} [{space}]"] = acc
    return row


def markdown_table(rows):
    """A Markdown table over the union of the rows' columns (missing cells blank)."""
    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns]

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(run_dirs, path):
    """Loss, z_std, learning rate and tau against epoch, one line per run; returns the path or None.

    Runs with online monitors (`--monitor`) get a second row: kNN top-1, the normalised embedding std
    and RankMe, drawn at the epochs where they were measured (`--monitor_every`).
    """
    histories = {os.path.basename(os.path.normpath(d)): read_history(d) for d in run_dirs}
    if not any(histories.values()):
        return None
    plt = _plt()
    panels = [("loss", "training loss"), ("z_std", "collapse monitor z_std"),
              ("learning_rate", "learning rate"), ("ema_tau", "EMA tau")]
    monitor_panels = [(k, t) for k, t in (("knn_top1", "kNN monitor top-1"), ("embed_std", "std of l2-normalised embedding"),
                                          ("rankme", "RankMe (effective rank)"))
                      if any(k in h and np.isfinite(h[k]).any() for h in histories.values())]
    rows = 2 if monitor_panels else 1
    fig, axes = plt.subplots(rows, 4, figsize=(16, 3.5 * rows), squeeze=False)
    for ax, (key, title) in zip([*axes[0], *(axes[1] if rows == 2 else [])], panels + monitor_panels):
        for name, h in histories.items():
            if key in h:
                measured = np.isfinite(h[key])  # monitors leave the epochs they skip empty
                epochs = h.get("epoch", np.arange(len(h[key]))) + 1
                ax.plot(epochs[measured], h[key][measured], label=name, marker=".")
        ax.set_title(title)
        ax.set_xlabel("epoch")
    for ax in (axes[1][len(monitor_panels):] if rows == 2 else []):
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_attacks(run_dirs, path):
    """Accuracy under attack vs epsilon (FGSM curve, PGD points), per run and attack space."""
    from myol_keras.evaluation.features import read_results

    curves = {}
    for d in run_dirs:
        for record in read_results(d):
            if record.get("evaluation") == "attack":
                curves[(os.path.basename(os.path.normpath(d)), record["attack_space"])] = record["curve"]
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (name, space), curve in curves.items():
        fg = sorted((c["eps"], c["accuracy"]) for c in curve if c["attack"] == "fgsm")
        line, = ax.plot([e * 255 for e, _ in fg], [a for _, a in fg], marker="o", label=f"{name} FGSM [{space}]")
        for c in curve:
            if c["attack"] == "pgd":
                ax.scatter([c["eps"] * 255], [c["accuracy"]], marker="x", color=line.get_color())
                ax.annotate(f"PGD-{c['steps']}", (c["eps"] * 255, c["accuracy"]), fontsize=7)
    ax.set_xlabel("epsilon (x 1/255)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title("accuracy under attack")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def project_2d(features, method="pca", seed=0, max_points=2000):
    """2-D coordinates of at most `max_points` features (PCA, or t-SNE)."""
    features = np.asarray(features, np.float64)[:max_points]
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, len(features) // 4)))
        return TSNE(2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(features)
    from sklearn.decomposition import PCA

    return PCA(2, random_state=seed).fit_transform(features)


def plot_embedding(run_dir, path, method="pca"):
    """2-D map of the run's embedding sample coloured by class; returns the path or None."""
    from myol_keras.evaluation.features import SAMPLE_FILE

    sample_path = os.path.join(run_dir, SAMPLE_FILE)
    if not os.path.exists(sample_path):
        return None
    sample = np.load(sample_path)
    if len(sample["features"]) < 3:
        return None
    xy = project_2d(sample["features"], method)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    scatter = ax.scatter(xy[:, 0], xy[:, 1], c=sample["labels"][: len(xy)], cmap="tab10", s=6)
    fig.colorbar(scatter, ax=ax, label="class")
    ax.set_title(f"{os.path.basename(os.path.normpath(run_dir))}: test embeddings ({method.upper()})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_embedding_projector(run_dir):
    """The run's embedding sample into TensorBoard's projector (`<run>/tensorboard/projector`); path or None.

    Vectors, their labels and, when the sample kept them, the images as the sprite: `tensorboard --logdir
    runs/<run>` then shows them in the Projector tab.
    """
    from myol_keras import projector
    from myol_keras.evaluation.features import SAMPLE_FILE

    sample_path = os.path.join(run_dir, SAMPLE_FILE)
    if not os.path.exists(sample_path):
        return None
    sample = np.load(sample_path)
    log_dir = os.path.join(run_dir, rundir.TENSORBOARD_DIR, "projector")
    projector.write_projector(log_dir, sample["features"], labels=sample["labels"],
                              images=sample["thumbnails"] if "thumbnails" in sample.files else None)
    return log_dir


def plot_retrieval(run_dir, path):
    """Grid of test images (left) and their nearest training images, wrong-class ones framed in red.

    Draws the run's `retrieval_sample.npz` (`evaluation.retrieval`): one row
    per query, its top-k training neighbours by cosine similarity, most similar
    first, each captioned with its class and similarity. Without labels
    nothing is framed. Returns the path, or None when the run has no sample.
    """
    from myol_keras.evaluation import retrieval

    sample = retrieval.load_retrieval_sample(run_dir)
    if sample is None or not len(sample["query_index"]):
        return None
    has_labels = bool(sample["has_labels"])
    queries, k = sample["neighbour_index"].shape
    plt = _plt()
    fig, axes = plt.subplots(queries, k + 1, figsize=(1.25 * (k + 1) + 0.3, 1.4 * queries + 1.1), squeeze=False)

    def show(ax, image, caption, colour, width):
        ax.imshow(image, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(width)
        ax.set_title(caption, fontsize=7, color=colour if colour == "red" else "black", pad=2)

    for i in range(queries):
        label = f"class {sample['query_labels'][i]}" if has_labels else f"test #{sample['query_index'][i]}"
        show(axes[i, 0], sample["query_images"][i], f"query: {label}", "royalblue", 2.5)
        for j in range(k):
            wrong = bool(sample["wrong"][i, j])
            caption = f"cos {sample['similarity'][i, j]:.2f}"
            if has_labels:
                caption = f"{sample['neighbour_labels'][i, j]} · {caption}"
            show(axes[i, j + 1], sample["neighbour_images"][i, j], caption, "red" if wrong else "lightgray",
                 3.0 if wrong else 0.8)
    name = os.path.basename(os.path.normpath(run_dir))
    fig.suptitle(f"{name}: nearest training images", fontsize=9)
    legend = (f"Left: a test image ({'one per class' if has_labels else 'the first ones'}). Right: its {k} nearest "
              f"of {int(sample['gallery_size'])} training images by cosine similarity of the embeddings, most "
              "similar first.")
    if has_labels:
        wrong = int(np.sum(sample["wrong"]))
        legend += f"\nRed frame: a neighbour of another class ({wrong} of {queries * k})."
    fig.text(0.5, 0.01, legend, ha="center", va="bottom", fontsize=6.5, wrap=True)
    fig.tight_layout(rect=(0, 0.04 if has_labels else 0.03, 1, 0.98), h_pad=1.0)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learned_table(run_dir):
    """Markdown rows of the trained vs random-init comparison of a run (`random_init.comparison_from_results`)."""
    from myol_keras.evaluation import random_init
    from myol_keras.evaluation.features import read_results

    flag_values = _run_settings(run_dir)
    label = "trained"
    if flag_values.get("method"):
        label = f"trained ({flag_values['method']}, {flag_values.get('epochs', '?')} epochs)"
    rows = random_init.comparison_from_results(read_results(run_dir), label)
    return [{k: (f"{100 * v:.1f} %" if isinstance(v, float) else v) for k, v in row.items()} for row in rows]


def render_report(run_dirs, output_dir=None, *, embedding_map="pca"):
    """Write `report.md` and its plots; returns {"report", "plots", "rows"}.

    Example:
    ```python
    render_report(["runs/byol-c10", "runs/myol-c10"], "reports/c10")["report"]
    ```
    """
    if isinstance(run_dirs, str):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise ValueError("no run directory given (pass at least one runs/<name>)")
    for d in run_dirs:
        if not os.path.isdir(d):
            raise FileNotFoundError(f"run directory {d!r} does not exist")
    if not output_dir:
        if len(run_dirs) > 1:
            raise ValueError("several runs: pass an output directory (--output=DIR) for the side-by-side report")
        output_dir = run_dirs[0]
    plot_dir = os.path.join(output_dir, PLOT_DIR)
    os.makedirs(plot_dir, exist_ok=True)
    rows = [summarize_run(d) for d in run_dirs]
    plots = {}
    plots["training"] = plot_training(run_dirs, os.path.join(plot_dir, "training.png"))
    plots["attack"] = plot_attacks(run_dirs, os.path.join(plot_dir, "attack_vs_eps.png"))
    learned, projectors = {}, {}
    for d in run_dirs:
        name = os.path.basename(os.path.normpath(d))
        plots[f"embedding {name}"] = plot_embedding(d, os.path.join(plot_dir, f"embedding_{name}.png"), embedding_map)
        plots[f"retrieval {name}"] = plot_retrieval(d, os.path.join(plot_dir, f"retrieval_{name}.png"))
        learned[name] = learned_table(d)
        projectors[name] = write_embedding_projector(d)
    plots = {k: v for k, v in plots.items() if v}
    lines = ["# myol_keras report", "", "## Results", "", markdown_table(rows), ""]
    titles = {"training": "Pre-training: loss, collapse monitor, learning rate and tau",
              "attack": "Accuracy under attack vs epsilon"}
    if plots:
        lines += ["## Plots", ""]
    for key, path in plots.items():
        if key in titles:
            lines += [f"### {titles[key]}", "", f"![{key}]({os.path.relpath(path, output_dir)})", ""]
    for name, table in learned.items():
        shown = [k for k in (f"embedding {name}", f"retrieval {name}") if k in plots]
        if not table and not shown:
            continue
        lines += [f"## What {name} learned", ""]
        if table:
            lines += ["Linear probe and kNN top-1 on the test split, next to a randomly initialised encoder of "
                      "the same architecture (the same probes):", "", markdown_table(table), ""]
        if shown:
            lines += [" ".join(f"![{k}]({os.path.relpath(plots[k], output_dir)})" for k in shown), ""]
            captions = {f"embedding {name}": "the test embeddings in 2-D, coloured by class",
                        f"retrieval {name}": "test images with their nearest training images by cosine similarity "
                                             "of the embeddings (a red frame: a neighbour of another class)"}
            if len(shown) == 2:
                lines += [f"Left: {captions[shown[0]]}. Right: {captions[shown[1]]}.", ""]
            else:
                lines += [captions[shown[0]][0].upper() + captions[shown[0]][1:] + ".", ""]
        if projectors.get(name):
            lines += [f"The same sample in 3-D, with its images: `tensorboard --logdir "
                      f"{os.path.dirname(projectors[name])}`, Projector tab.", ""]
    report = rundir.atomic_write(os.path.join(output_dir, REPORT_FILE), "\n".join(lines))
    return {"report": report, "plots": plots, "rows": rows, "projectors": {k: v for k, v in projectors.items() if v}}


def _run():
    out = render_report(FLAGS.runs, FLAGS.output or None, embedding_map=FLAGS.embedding_map)
    print(f"{PROG}: wrote {out['report']} ({len(out['rows'])} run(s), {len(out['plots'])} plot(s))")


main = cli.entry_point(PROG, FLAGS, _run, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
