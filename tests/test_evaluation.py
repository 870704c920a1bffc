"""Evaluation protocols (docs/METHODS.md §3): probe schedule, kNN vote, label subsets, fine-tuning BatchNorm."""

import math

import numpy as np
import pytest

from myol_keras.evaluation import common, knn, linear_probe, semisup


def test_probe_cosine_lr_is_half_at_mid_training():
    total = 100 * 73
    assert common.probe_learning_rate(0, total) == pytest.approx(0.2)
    assert common.probe_learning_rate(total / 2, total) == pytest.approx(0.1)
    assert common.probe_learning_rate(total, total) == pytest.approx(0.0, abs=1e-12)
    schedule = common.cosine_schedule(0.2, total)
    for step in (0, total // 4, total // 2, total - 1):
        assert float(schedule(step)) == pytest.approx(common.probe_learning_rate(step, total), rel=1e-5, abs=1e-7)
    assert float(schedule(total // 2)) == pytest.approx(0.1, rel=1e-6)


def test_knn_vote_on_a_hand_made_example():
    # Cosine similarities of the test point (1, 0.1) to the bank: 0.995, 0.0995, 0.774.
    train = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = np.array([0, 1, 1])
    test = np.array([[1.0, 0.1]])
    s = test[0] / np.linalg.norm(test[0])
    cos = (train / np.linalg.norm(train, axis=1, keepdims=True)) @ s
    # T = 1, k = 3: class 1 wins on two votes, e^0.0995 + e^0.774 = 3.27 > e^0.995 = 2.70.
    scores = knn.knn_scores(train, labels, test, 2, k=3, temperature=1.0)
    np.testing.assert_allclose(scores[0], [math.exp(cos[0]), math.exp(cos[1]) + math.exp(cos[2])], rtol=1e-6)
    assert knn.knn_predict(train, labels, test, 2, k=3, temperature=1.0)[0] == 1
    # T = 0.1 sharpens the vote: e^9.95 > e^0.995 + e^7.74, class 0.
    assert knn.knn_predict(train, labels, test, 2, k=3, temperature=0.1)[0] == 0
    # k = 1: only the nearest neighbour votes.
    np.testing.assert_allclose(knn.knn_scores(train, labels, test, 2, k=1, temperature=0.1)[0],
                               [math.exp(cos[0] / 0.1), 0.0], rtol=1e-6)


def test_linear_probe_head_is_float32_whatever_the_global_policy():
    # main --eval probes in the process that pre-trained, possibly under mixed_bfloat16.
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    runs = []
    for policy in ("mixed_bfloat16", "float32"):
        keras.mixed_precision.set_global_policy(policy)
        runs.append(linear_probe.train_linear_classifier(x, y, x, y, 2, epochs=2, batch_size=16, eval_every=1,
                                                         verbose=False))
    np.testing.assert_array_equal(runs[0]["kernel"], runs[1]["kernel"])
    assert runs[0]["top1"] == runs[1]["top1"]


def test_knn_accuracy_separable_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8) * 5
    y_train = np.repeat(np.arange(4), 50)
    y_test = np.repeat(np.arange(4), 10)
    x_train = centres[y_train] + rng.normal(size=(200, 8))
    x_test = centres[y_test] + rng.normal(size=(40, 8))
    assert knn.knn_accuracy(x_train, y_train, x_test, y_test, 4, k=200, temperature=0.1)["top1"] == 1.0


@pytest.mark.parametrize("per_class, num_classes, ratio, expected", [
    (5000, 10, 0.01, 50),   # CIFAR-10 1%
    (5000, 10, 0.1, 500),   # CIFAR-10 10%
    (500, 10, 0.01, 5),     # STL-10 1%
    (500, 200, 0.01, 5),    # Tiny-ImageNet 1%
    (500, 100, 0.1, 50),    # CIFAR-100 10%
])
def test_class_balanced_subset_sizes(per_class, num_classes, ratio, expected):
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(num_classes), per_class))
    index = semisup.class_balanced_subset(labels, ratio, seed=0)
    counts = np.bincount(labels[index], minlength=num_classes)
    assert (counts == expected).all()
    assert len(np.unique(index)) == len(index) == expected * num_classes


def test_class_balanced_subset_depends_on_the_seed_only():
    labels = np.repeat(np.arange(10), 100)
    a = semisup.class_balanced_subset(labels, 0.1, seed=0)
    np.testing.assert_array_equal(a, semisup.class_balanced_subset(labels, 0.1, seed=0))
    assert not np.array_equal(a, semisup.class_balanced_subset(labels, 0.1, seed=1))
    with pytest.raises(ValueError, match="ratio"):
        semisup.class_balanced_subset(labels, 0.0)


def test_topk_accuracy():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15]])
    acc = common.topk_accuracy(logits, np.array([1, 2]), ks=(1, 2, 5))
    assert acc == {"top1": 0.5, "top2": 1.0, "top5": 1.0}


def _tiny_export(tmp_path, width=4):
    from myol_keras.backbones import ResNet
    from myol_keras.export import export_encoder

    backbone = ResNet(18, stem="cifar", width=width)
    backbone(np.zeros((2, 16, 16, 3), "float32"))
    return export_encoder(backbone, str(tmp_path / "saved_models" / "enc"), image_size=16,
                          mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                          metadata={"run_dir": str(tmp_path / "run"), "dataset": "npz"})


def test_finetuning_from_backbone_keras_changes_batchnorm_moving_statistics(tmp_path):
    from myol_keras.export import load_backbone

    path = _tiny_export(tmp_path)
    backbone = load_backbone(path)
    before = {v.path: v.numpy().copy() for v in backbone.non_trainable_variables if "moving" in v.path}
    assert before, "the backbone has BatchNorm moving statistics"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    out = semisup.finetune(backbone, x, y, x[:8], y[:8], 4, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3,
                           epochs=1, batch_size=8, encoder_lr=0.03, head_lr=0.08, verbose=False)
    after = {v.path: v.numpy() for v in backbone.non_trainable_variables if "moving" in v.path}
    changed = [k for k in before if not np.allclose(before[k], after[k])]
    assert len(changed) == len(before)
    assert len(out["history"]) == 1 and 0.0 <= out["top1"] <= 1.0


def test_finetuning_flips_depend_on_the_seed_only_and_change_every_epoch():
    # Q1-semisup rows must rerun to the same number: the train flips are drawn from the seed, not from
    # TensorFlow's global generator (a stateful draw inside a parallel map gave one encoder 16.85 % and
    # 18.24 % in two runs), and every epoch draws new ones.
    import tensorflow as tf

    x = np.random.default_rng(0).integers(0, 256, size=(64, 4, 4, 3), dtype=np.uint8)  # distinct, none symmetric
    y = np.arange(64) % 4

    def two_epochs(seed):
        ds = semisup.make_dataset(x, y, 8, image_size=4, mean=(0.5,) * 3, std=(0.25,) * 3, flip=True,
                                  shuffle=True, seed=seed)
        return [np.concatenate([b.numpy() for b, _ in ds]) for _ in range(2)]

    tf.random.set_seed(1)
    first = two_epochs(0)
    tf.random.uniform(())  # move the global generator: the data must not follow it
    again = two_epochs(0)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1]), "a new shuffle and new flips every epoch"
    other = two_epochs(1)
    assert not np.array_equal(first[0], other[0])
    # Both orientations occur: the flips are random, not all on or all off.
    originals = semisup.make_dataset(x, y, 64, image_size=4, mean=(0.5,) * 3, std=(0.25,) * 3, flip=False,
                                     shuffle=False)
    plain = next(iter(originals))[0].numpy()
    mirrored = plain[:, :, ::-1]
    rows = {tuple(r.ravel()) for r in first[0]}
    kept = sum(tuple(r.ravel()) in rows for r in plain)
    turned = sum(tuple(r.ravel()) in rows for r in mirrored)
    assert kept + turned == 64 and 10 < kept < 54


def test_finetuning_twice_with_one_seed_gives_the_same_history(tmp_path):
    from myol_keras.export import load_backbone

    path = _tiny_export(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(48, 16, 16, 3), dtype=np.uint8)
    y = np.arange(48) % 4
    runs = [semisup.finetune(load_backbone(path, trainable=True), x, y, x[:16], y[:16], 4, image_size=16,
                             mean=(0.5,) * 3, std=(0.25,) * 3, epochs=2, batch_size=8, encoder_lr=0.03, head_lr=0.08,
                             flip=True, seed=3, verbose=False) for _ in range(2)]
    assert runs[0]["history"] == runs[1]["history"] and runs[0]["top1"] == runs[1]["top1"]


def test_knn_monitor_logs_accuracy(tmp_path):
    import keras
    from myol_keras import monitors

    from myol_keras.backbones import ResNet

    class Holder(keras.Model):
        def __init__(self):
            super().__init__()
            self.backbone = ResNet(18, stem="cifar", width=4)
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(self.backbone(x))

    model = Holder()
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(16, 16, 16, 3), dtype=np.uint8)
    y = np.arange(16) % 2
    monitor = monitors.KNNMonitor(x, y, x[:8], y[:8], image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, k=5, every=1)
    history = model.fit(x.astype("float32") / 255, np.zeros((16, 1)), epochs=1, batch_size=8, verbose=0,
                        callbacks=[monitor])
    assert 0.0 <= history.history["knn_top1"][0] <= 1.0


def test_sweep_plan_scales_epochs_with_batch_size():
    from myol_keras.sweep import sweep_plan

    plan = sweep_plan()
    assert [(p["batch_size"], p["epochs"]) for p in plan] == [(256, 500), (128, 250), (64, 125), (32, 62)]
    assert plan[0]["run_name"] == "sweep-b256"


@pytest.mark.parametrize("call, match", [
    (lambda: linear_probe.linear_probe("nowhere", epochs=0), r"Expected `epochs` to be an int >= 1. Received: epochs=0"),
    (lambda: linear_probe.linear_probe("nowhere", lr=0.0), r"Expected `lr` to be a number > 0"),
    (lambda: linear_probe.linear_probe("nowhere", feature_batch_size=0), r"feature_batch_size=0"),
    (lambda: knn.knn_evaluate("nowhere", k=0), r"Received: k=0"),
    (lambda: knn.knn_evaluate("nowhere", temperature=-1.0), r"Received: temperature=-1.0"),
    (lambda: semisup.semisup_evaluate("nowhere", label_fraction=0.0), r"Received: label_fraction=0.0"),
    (lambda: semisup.semisup_evaluate("nowhere", epochs=0), r"Received: epochs=0"),
    (lambda: __import__("myol_keras.evaluation.attack").evaluation.attack.attack_evaluate("nowhere", batch_size=0),
     r"Received: batch_size=0"),
    (lambda: __import__("myol_keras.evaluation.attack").evaluation.attack.attack_evaluate("nowhere", pgd_steps=(8, 0)),
     r"Received: pgd_steps\[1\]=0"),
    (lambda: __import__("myol_keras.evaluation.attack").evaluation.attack.attack_evaluate("nowhere", fgsm_eps=(2.0,)),
     r"outside \[0, 1\]"),
    (lambda: __import__("myol_keras.evaluation.transfer").evaluation.transfer.transfer_one("nowhere", "cifar10",
                                                                                          mode="frozen"),
     r"Received: mode='frozen'"),
    (lambda: __import__("myol_keras.embed").embed.embed_folder("nowhere", "nowhere", batch_size=0),
     r"Received: batch_size=0"),
    (lambda: __import__("myol_keras.sweep").sweep.sweep_plan([256, 1]), r"batch size 1 is below 2"),
    (lambda: __import__("myol_keras.report").report.render_report([]), r"no run directory given"),
    (lambda: __import__("myol_keras.evaluation.features").evaluation.features.load_export(""), r"no encoder export"),
    (lambda: __import__("myol_keras.evaluation.random_init").evaluation.random_init.random_init_evaluate(
        "nowhere", epochs=0), r"Received: epochs=0"),
    (lambda: __import__("myol_keras.evaluation.retrieval").evaluation.retrieval.nearest_neighbours(
        np.ones((1, 2)), np.ones((3, 2)), k=0), r"Received: k=0"),
], ids=["probe_epochs", "probe_lr", "probe_feature_batch", "knn_k", "knn_temperature", "semisup_fraction",
        "semisup_epochs", "attack_batch", "attack_steps", "attack_eps", "transfer_mode", "embed_batch", "sweep_batch",
        "report_runs", "no_export", "random_init_epochs", "retrieval_k"])
def test_library_functions_raise_value_error_not_usage_error(call, match):
    # Checked before anything is loaded ("nowhere" does not exist), with a plain ValueError a
    # Python caller can catch; only the tools' main() turns it into one line and exit 2.

    with pytest.raises(ValueError, match=match) as error:
        call()
    assert type(error.value) in (ValueError, FileNotFoundError)
