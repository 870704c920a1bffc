"""Evaluation protocols of docs/METHODS.md §3 on exported SavedModels.

Each module is `python -m`-runnable and exposes a function returning a result
dict that is also appended to the run's `results.json`:

* `linear_probe.linear_probe` (§3.1) -> classifier export `saved_models/<name>-linear/`
* `knn.knn_evaluate` (k = 200, T = 0.1); its pre-training twin is `myol_keras.monitors.KNNMonitor`
* `semisup.semisup_evaluate` (§3.2), `transfer.transfer_evaluate` (§3.3)
* `attack.attack_evaluate` (§3.4, FGSM / PGD, pixel or faithful space)
* `random_init.random_init_evaluate`: the linear probe and kNN of a randomly
  initialised encoder of the same architecture, the baseline that shows what
  pre-training bought (`random_init.comparison_rows`)

`run_evaluations` chains them after pre-training (`main --eval=linear,knn,attack`).
They share `common` (linear head, cosine schedule, top-k, the features cache)
and `features` (reading exports and labelled data, feature extraction with a
progress line, `results.json`); every image goes through
`myol_keras.preprocessing.evaluation_transform`.
"""

EVALUATIONS = ("linear", "knn", "attack", "semisup", "transfer", "random_init")


def check_settings(evaluations, dataset=""):
    """Check the evaluation settings before any training: raises ValueError with a one-line message.

    Args:
        evaluations: names from `EVALUATIONS`.
        dataset: the labelled dataset of the evaluations ("" = the pre-training dataset); must be a name
            from `myol_keras.data.DATASETS`.

    Example:
    ```python
    check_settings(["linear", "knn"], "cifar10")
    ```
    """
    names = [e.strip() for e in evaluations if e and e.strip()]
    unknown = [e for e in names if e not in EVALUATIONS]
    if unknown:
        raise ValueError(f"unknown --eval={','.join(unknown)}; choose from: {', '.join(EVALUATIONS)}")
    if dataset:
        from myol_keras.data import DATASETS

        if dataset not in DATASETS:
            raise ValueError(f"unknown --eval_dataset={dataset!r}; choose from: {', '.join(sorted(DATASETS))}")
        if not names:
            raise ValueError(f"--eval_dataset={dataset} is set but --eval is empty: name the evaluations to run on it "
                             f"(e.g. --eval=linear)")


def run_evaluations(export_dir, evaluations, dataset="", data_dir=None, *, probe_epochs=100, download=True,
                    attack_space="pixel", label_fractions=(0.01, 0.1), transfer_targets=None,
                    transfer_mode="linear", knn_k=200, verbose=True, **kwargs):
    """Run the named evaluations on an encoder export; returns {name: result}.

    Args:
        export_dir: the encoder export (`saved_models/<name>` or a version directory).
        evaluations: names from `EVALUATIONS`; "attack" trains the linear probe first if
            "linear" is not in the list (it attacks the probe's classifier);
            "random_init" runs "linear" and "knn" too (it is their baseline).
        dataset, data_dir: labelled data (default: the export's pre-training dataset).
        probe_epochs: linear-probe epochs (100 in the protocol).
        attack_space: "pixel" or "normalized_clip01".
        label_fractions: semi-supervised label fractions.
        transfer_targets: transfer targets (default: the paper's list).
        transfer_mode: "linear" or "finetune".
        knn_k: neighbours of the kNN evaluation and of the random-init baseline's kNN (200 in the protocol).
        **kwargs: passed to the linear probe (e.g. batch_size, max_train_images), and
            those it shares with it to the random-init baseline.

    Raises:
        ValueError: an unknown evaluation name (the message lists the valid ones).

    Example:
    ```python
    from myol_keras.evaluation import run_evaluations
    results = run_evaluations(export_path, ["linear", "knn", "attack"])
    results["attack"]["accuracy"]["pgd(16)"]
    ```
    """
    names = [e.strip() for e in evaluations if e and e.strip()]
    unknown = [e for e in names if e not in EVALUATIONS]
    if unknown:
        raise ValueError(f"unknown evaluation(s) {', '.join(unknown)}; choose from: {', '.join(EVALUATIONS)}")
    from myol_keras.evaluation import attack, knn, linear_probe, random_init, semisup, transfer

    if "random_init" in names:
        names += [e for e in ("linear", "knn") if e not in names]
    # The data caps of the probe apply to kNN and the baseline too: the same features, extracted once.
    caps = {k: v for k, v in kwargs.items() if k in ("feature_batch_size", "max_train_images", "max_test_images")}
    cache = {}
    results = {}
    if "linear" in names or "attack" in names:
        results["linear"] = linear_probe.linear_probe(export_dir, dataset, data_dir, epochs=probe_epochs,
                                                      download=download, cache=cache, verbose=verbose, **kwargs)
    if "knn" in names:
        results["knn"] = knn.knn_evaluate(export_dir, dataset, data_dir, k=knn_k, download=download, cache=cache,
                                          verbose=verbose, **caps)
    if "random_init" in names:
        shared = {k: v for k, v in kwargs.items() if k in ("batch_size", "lr", "eval_every", "seed")}
        results["random_init"] = random_init.random_init_evaluate(export_dir, dataset, data_dir, epochs=probe_epochs,
                                                                   k=knn_k, download=download, verbose=verbose,
                                                                   **shared, **caps)
    cache.clear()  # the features of the trained encoder are not needed after this point
    if "attack" in names:
        results["attack"] = attack.attack_evaluate(results["linear"]["classifier"], dataset, data_dir,
                                                   attack_space=attack_space, download=download, verbose=verbose)
    if "semisup" in names:
        results["semisup"] = [semisup.semisup_evaluate(export_dir, dataset, data_dir, label_fraction=f,
                                                       download=download, verbose=verbose)
                              for f in label_fractions]
    if "transfer" in names:
        results["transfer"] = transfer.transfer_evaluate(
            export_dir, transfer_targets or transfer.PAPER_TARGETS, mode=transfer_mode, download=download,
            verbose=verbose)
    return results
