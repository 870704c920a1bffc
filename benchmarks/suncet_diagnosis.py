"""Why SuNCEt trails SimCLR under protocol Q1: short runs that take SuNCEt apart, term by term.

    python benchmarks/suncet_diagnosis.py --output=benchmarks/suncet_diagnosis.json
    python benchmarks/suncet_diagnosis.py --smoke     # CI: one step of each variant

Under Q1 (50 epochs, 466 labelled images) SuNCEt's NT-Xent term falls far more
slowly than SimCLR's (at epoch 10: 5.06 against 3.20, seed 1). Each variant here
trains the first `--epochs` epochs of Q1 (seed 1 by default, the same data and
views) and records the per-epoch NT-Xent and SuNCEt terms:

* `simclr` (τ = 0.07) and `simclr_tau_0.1`: the baseline and SuNCEt's temperature;
* `suncet`: the library's SuNCEt (τ = 0.1 for both terms, head without BatchNorm);
* `suncet_ntxent_tau_0.07`: SuNCEt with SimCLR's NT-Xent temperature;
* `suncet_bn_head`: SuNCEt with BatchNorm after the head's hidden layer (the official head,
  Linear-BN-ReLU-Linear-BN-ReLU-Linear, has BatchNorm after each of its two hidden layers);
* `suncet_ntxent_only`: the labelled images still in the forward (BatchNorm), the term not added;
* `suncet_term_only`: the supervised term alone.

It also gives, on the first batch of the run and the freshly built model, the
gradient norm of each term over the encoder and head.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's myol_keras
sys.path.insert(1, str(HERE))  # quality.py, provenance.py (this script runs as a file)

VARIANTS = ("simclr", "simclr_tau_0.1", "suncet", "suncet_ntxent_tau_0.07", "suncet_bn_head", "suncet_ntxent_only",
            "suncet_term_only")


def _suncet_variant(name):
    """A SuNCEt subclass for a variant that needs a code change (None: a flag suffices)."""
    from myol_keras.methods.family_heads import ContrastiveHead
    from myol_keras.methods.suncet import SuNCEt

    class Variant(SuNCEt):
        def make_projector(self, head_name):
            if name == "suncet_bn_head":  # Linear-BN-ReLU-Linear (the official head has two hidden layers)
                return ContrastiveHead(self.projector_hidden_dim, self.projection_dim, batch_norm=True, name=head_name)
            return super().make_projector(head_name)

        def compute_loss_terms(self, views, targets, seed):
            terms = super().compute_loss_terms(views, targets, seed)
            if name == "suncet_ntxent_only":
                terms["loss"] = terms["ntxent_loss"]
            elif name == "suncet_term_only":
                terms["loss"] = terms["suncet_loss"]
            return terms

    return Variant if name in ("suncet_bn_head", "suncet_ntxent_only", "suncet_term_only") else None


def run_variant(name, data, epochs, steps_per_epoch, seed, work_dir):
    """Per-epoch history rows (dicts of floats) of one variant's first `epochs` Q1 epochs."""
    import quality

    from myol_keras import methods

    method = "simclr" if name.startswith("simclr") else "suncet"
    extra = {"simclr_tau_0.1": ["--simclr_temperature=0.1"], "suncet_ntxent_tau_0.07": ["--suncet_ntxent_temperature=0.07"]}
    variant = _suncet_variant(name)
    original = methods.get_method
    if variant is not None:
        methods.get_method = lambda key: variant if key == "suncet" else original(key)
    try:
        rows = quality.short_q1_run(method, data, work_dir, f"diag-{name}", epochs=epochs,
                                    steps_per_epoch=steps_per_epoch, seed=seed, extra=extra.get(name, []))
    finally:
        methods.get_method = original
    keep = ("loss", "ntxent_loss", "suncet_loss")
    return [{k: round(float(r[k]), 4) for k in keep if r.get(k)} for r in rows]


def gradient_norms(config_path):
    """Global gradient norm over encoder and head of each SuNCEt term, at initialisation, on the first batch.

    Args:
        config_path: the `config.json` of a SuNCEt run (the `suncet` variant's).
    """
    import tensorflow as tf

    from myol_keras import config as config_lib
    from myol_keras import losses
    from myol_keras import methods
    from myol_keras import training

    config = config_lib.PretrainConfig.from_json(config_path)
    plan = training.plan_run(config)
    batch = next(iter(training.build_dataset(config, plan, methods.get_method("suncet"))))
    model = training.build_model(config, plan)
    x1, x2 = batch["views"]
    images = tf.concat([x1, x2, batch["labelled"]], 0)
    model.online_forward(images[:2])
    variables = model.backbone.trainable_variables + model.projector.trainable_variables
    norms = {}
    for term in ("ntxent", "suncet"):
        with tf.GradientTape() as tape:
            z, _ = model.online_forward(images)
            n = 2 * int(x1.shape[0])
            loss = (losses.simclr_loss(z[:n], model.temperature) if term == "ntxent"
                    else losses.suncet_loss(z[n:], batch["labelled_targets"], model.suncet_temperature))
        norms[term] = round(float(tf.linalg.global_norm(tape.gradient(loss, variables))), 4)
    return norms


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", default=str(HERE.parent / ".." / "shared" / "data" / "cifar10_subset.npz"))
    parser.add_argument("--output", default=None)
    parser.add_argument("--smoke", action="store_true", help="plumbing check for CI: 1 epoch of 1 step per variant")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.exit(2, f"suncet_diagnosis.py: error: unknown variant(s) {', '.join(unknown)}; choose from "
                       f"{', '.join(VARIANTS)}\n")
    if not os.path.exists(args.data):
        parser.exit(2, f"suncet_diagnosis.py: error: {args.data} not found (the shared CIFAR-10 subset)\n")
    epochs, steps = (1, 1) if args.smoke else (args.epochs, 0)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from myol_keras import process_settings

    process_settings.set_threads(1)  # warns and keeps the pools if TensorFlow already runs (pytest)
    import provenance

    record = {"seed": args.seed, "epochs": epochs, "provenance": provenance.provenance(
        data_path=args.data, command=["benchmarks/suncet_diagnosis.py", *(argv if argv is not None else sys.argv[1:])])}
    record["variants"] = {}
    with tempfile.TemporaryDirectory(prefix="suncet_diag_") as work_dir:
        for name in variants:
            record["variants"][name] = run_variant(name, args.data, epochs, steps, args.seed, work_dir)
            print(f"{name}: {record['variants'][name]}", file=sys.stderr, flush=True)
        suncet_runs = [name for name in variants if name.startswith("suncet")]
        if suncet_runs:  # every SuNCEt variant shares the config: the gradients are the library's SuNCEt's
            record["gradient_norms_at_init"] = gradient_norms(
                Path(work_dir) / "runs" / f"diag-{suncet_runs[0]}" / "config.json")
    print("| variant | NT-Xent per epoch | SuNCEt term per epoch |\n|---|---|---|")
    for name, rows in record["variants"].items():
        print(f"| {name} | {', '.join(str(r.get('ntxent_loss', r['loss'])) for r in rows)} | "
              f"{', '.join(str(r['suncet_loss']) for r in rows if 'suncet_loss' in r) or '—'} |")
    if "gradient_norms_at_init" in record:
        print(f"gradient norms at initialisation: {record['gradient_norms_at_init']}")
    if args.output:
        provenance.write_record(args.output, record)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
