"""The online monitors (myol_keras.monitors) and the embedding projector writer (myol_keras.projector)."""

import csv
import math
import os
import warnings

import numpy as np
import pytest

from myol_keras import monitors

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


# --- the measures, by hand ----------------------------------------------------------


def test_rankme_of_identity_like_features_is_their_rank():
    assert monitors.rankme(np.eye(8)) == pytest.approx(8.0, rel=1e-5)
    tall = np.zeros((20, 8))
    tall[:8] = 3.0 * np.eye(8)  # n > d, scaled: singular values all 3
    assert monitors.rankme(tall) == pytest.approx(8.0, rel=1e-5)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(64, 16)))  # orthonormal columns
    assert monitors.rankme(q) == pytest.approx(16.0, rel=1e-5)


def test_rankme_of_rank_one_features_is_one():
    rng = np.random.default_rng(1)
    assert monitors.rankme(np.outer(rng.normal(size=50), rng.normal(size=12))) == pytest.approx(1.0, abs=1e-4)
    assert monitors.rankme(np.ones((10, 4))) == pytest.approx(1.0, abs=1e-4)


def test_rankme_matches_the_closed_form_of_two_singular_values():
    # singular values (3, 1): p = (3/4, 1/4) + eps, RankMe = exp(H(p)).
    p = np.array([0.75, 0.25]) + monitors.RANKME_EPS
    expected = math.exp(-np.sum(p * np.log(p)))
    assert monitors.rankme(np.diag([3.0, 1.0])) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(1.7548, abs=1e-4)


def test_embedding_std_is_zero_for_a_rank_one_embedding():
    rng = np.random.default_rng(2)
    direction = rng.normal(size=32)
    z = rng.uniform(0.5, 3.0, size=(100, 1)) * direction  # positive multiples: one point on the sphere
    assert monitors.embedding_std(z) == pytest.approx(0.0, abs=1e-7)


def test_embedding_std_of_random_signs_is_one_over_sqrt_d():
    d = 64
    z = np.random.default_rng(3).choice([-1.0, 1.0], size=(4000, d)) / math.sqrt(d)
    assert monitors.embedding_std(z) == pytest.approx(1.0 / math.sqrt(d), rel=0.01)


def test_embedding_std_is_lightly_sample_std_of_the_normalised_rows():
    z = np.random.default_rng(4).normal(size=(5, 3))
    n = z / np.linalg.norm(z, axis=1, keepdims=True)
    by_hand = np.mean([math.sqrt(np.sum((n[:, j] - n[:, j].mean()) ** 2) / 4) for j in range(3)])
    assert monitors.embedding_std(z) == pytest.approx(by_hand, rel=1e-6)


@pytest.mark.parametrize("features, match", [
    (np.ones(4), r"shaped \[n, d\]"),
    (np.ones((1, 4)), r"n >= 2"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), r"finite features"),
])
def test_embedding_std_refuses_bad_features(features, match):
    with pytest.raises(ValueError, match=match):
        monitors.embedding_std(features)


@pytest.mark.parametrize("embed_std, rank, dim, expected", [
    (0.05, 30.0, 100, []),
    (0.009, 30.0, 100, ["embed_std 0.009 < 0.1/sqrt(100) = 0.01"]),
    (0.05, 1.5, 100, ["rankme 1.5 < 2"]),
    (0.0, 1.0, 4, ["embed_std 0 < 0.1/sqrt(4) = 0.05", "rankme 1 < 2"]),
])
def test_collapse_reasons_state_the_threshold(embed_std, rank, dim, expected):
    assert monitors.collapse_reasons(embed_std, rank, dim) == expected


def test_due_epochs_are_every_nth_and_the_last():
    assert [e for e in range(7) if monitors.is_due(e, 3, 7)] == [2, 5, 6]
    assert [e for e in range(4) if monitors.is_due(e, 1, 4)] == [0, 1, 2, 3]
    assert [e for e in range(4) if monitors.is_due(e, 5, None)] == []


def test_fixed_subsample_is_a_function_of_seed_and_stream():
    a = monitors.fixed_subsample(100, 10, seed=0, stream=1)
    assert np.array_equal(a, monitors.fixed_subsample(100, 10, seed=0, stream=1))
    assert list(a) == sorted(set(a)) and len(a) == 10
    assert not np.array_equal(a, monitors.fixed_subsample(100, 10, seed=0, stream=2))
    assert not np.array_equal(a, monitors.fixed_subsample(100, 10, seed=1, stream=1))
    assert np.array_equal(monitors.fixed_subsample(5, 10, 0, 1), np.arange(5))
    assert np.array_equal(monitors.fixed_subsample(5, None, 0, 1), np.arange(5))


# --- the callbacks --------------------------------------------------------------------------


def _holder(backbone):
    """A compiled model with a `backbone` attribute, trained on a regression loss."""
    import keras

    class Holder(keras.Model):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.head = keras.layers.Dense(1)

        def call(self, x):
            return self.head(self.backbone(x))

    model = Holder()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def _resnet_holder(seed=0):
    import keras

    from myol_keras.backbones import ResNet

    keras.utils.set_random_seed(seed)
    model = _holder(ResNet(18, stem="cifar", width=4))
    model(np.zeros((1, 16, 16, 3), "float32"))
    model.optimizer.build(model.trainable_variables)  # before fit, so a restore loads its state (DESIGN 4.3)
    return model


def _images(n, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8), np.arange(n) % 3


def _read_history(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_build_monitors_refuses_unknown_names_and_missing_data():
    x, y = _images(8)
    with pytest.raises(ValueError, match=r"unknown monitor 'rankme'; choose from: knn, rank"):
        monitors.build_monitors("knn,rankme", image_size=16, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"knn monitor needs labelled images"):
        monitors.build_monitors("knn", image_size=16, mean=MEAN, std=STD, bank_images=x)
    with pytest.raises(ValueError, match=r"rank monitor needs images"):
        monitors.build_monitors("rank", image_size=16, mean=MEAN, std=STD)
    assert monitors.build_monitors("", image_size=16, mean=MEAN, std=STD) == []
    knn_monitor, health = monitors.build_monitors("knn,rank", image_size=16, mean=MEAN, std=STD, bank_images=x,
                                                  bank_labels=y, query_images=x, query_labels=y, bank_size=6,
                                                  query_size=4)
    assert np.array_equal(health.images, knn_monitor.query_images)  # the health batch is the kNN queries
    assert health.feature_cache is knn_monitor.feature_cache


def test_monitors_refuse_bad_arguments():
    x, y = _images(8)
    with pytest.raises(ValueError, match=r"Expected `every` to be an int >= 1. Received: every=0"):
        monitors.KNNMonitor(x, y, x, y, image_size=16, mean=MEAN, std=STD, every=0)
    with pytest.raises(ValueError, match=r"one int label per bank image"):
        monitors.KNNMonitor(x, y[:3], x, y, image_size=16, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"Expected `temperature` to be a number > 0"):
        monitors.KNNMonitor(x, y, x, y, image_size=16, mean=MEAN, std=STD, temperature=0)
    with pytest.raises(ValueError, match=r"at least 2 images"):
        monitors.HealthMonitor(x[:1], image_size=16, mean=MEAN, std=STD)


def test_knn_monitor_equals_the_knn_evaluation_on_the_same_bank_and_queries(tmp_path):
    """The monitor (in-process, inference mode) and `knn_evaluate` (the export's SavedModel) agree exactly."""
    import keras

    from myol_keras.backbones import ResNet
    from myol_keras.evaluation import features
    from myol_keras.evaluation import knn
    from myol_keras.export import export_encoder

    keras.utils.set_random_seed(0)
    backbone = ResNet(18, stem="cifar", width=4)
    model = _holder(backbone)
    model(np.zeros((1, 32, 32, 3), "float32"))
    mean, std = (0.1, 0.1, 0.1), (0.3, 0.3, 0.3)
    x_train, y_train, _ = features.load_labelled_arrays("digits", "train", max_images=300)
    x_test, y_test, _ = features.load_labelled_arrays("digits", "test", max_images=120)
    monitor = monitors.KNNMonitor(x_train, y_train, x_test, y_test, image_size=32, mean=mean, std=std, k=20,
                                  temperature=0.1, bank_size=None, query_size=None, verbose=False)
    monitor.set_model(model)
    measured = monitor.measure()["knn_top1"]

    root = str(tmp_path / "saved_models" / "enc")
    export_encoder(backbone, root, version=1, image_size=32, mean=mean, std=std,
                   metadata={"dataset": "digits", "run_dir": str(tmp_path / "run")})
    evaluated = knn.knn_evaluate(root, "digits", k=20, temperature=0.1, max_train_images=300, max_test_images=120,
                                 verbose=False)
    assert evaluated["top1"] == measured
    assert 0.2 < measured < 1.0  # a random encoder still beats chance (0.1) on digits
    # The same vote on the same features, through the evaluation's own function:
    direct = knn.knn_accuracy(monitor.features(monitor.bank_images), monitor.bank_labels,
                              monitor.features(monitor.query_images), monitor.query_labels, 10, 20, 0.1)
    assert direct["top1"] == measured
    loaded = features.load_export(root + "/1")
    served = features.extract_features(loaded.serve_uint8, x_test, verbose=False)
    np.testing.assert_allclose(monitor.features(x_test), served, rtol=1e-4, atol=1e-5)


def _constant_backbone(dim=16):
    import keras

    backbone = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(dim, kernel_initializer="zeros", bias_initializer="ones"),
    ])
    backbone.trainable = False  # stays collapsed (constant output) while the head trains
    return backbone


def _random_projection_backbone(dim=16):
    import keras

    return keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(dim)])


def _fit_with_health(model, epochs=1, **kwargs):
    x, _ = _images(64)
    health = monitors.HealthMonitor(x, image_size=16, mean=MEAN, std=STD, sample_size=48, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x.astype("float32") / 255, np.zeros((64, 1)), epochs=epochs, batch_size=32, verbose=0,
                            callbacks=[health])
    return history.history, [w for w in caught if issubclass(w.category, monitors.CollapseWarning)], health


def test_monitors_log_nan_for_a_diverged_encoder():
    model = _holder(_random_projection_backbone(8))
    model(np.zeros((1, 16, 16, 3), "float32"))
    kernel = model.backbone.layers[-1].kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    x, y = _images(12)
    for monitor in monitors.build_monitors("knn,rank", image_size=16, mean=MEAN, std=STD, bank_images=x,
                                           bank_labels=y, query_images=x, query_labels=y, k=3, verbose=False):
        monitor.set_model(model)
        values = monitor.measure()
        assert values and all(math.isnan(v) for v in values.values())
        if isinstance(monitor, monitors.HealthMonitor):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                monitor.after_measure(0, values)  # no collapse warning for NaN


def test_health_monitor_warns_when_the_encoder_collapses(capsys):
    history, caught, _ = _fit_with_health(_holder(_constant_backbone(16)))
    assert history["embed_std"][0] == pytest.approx(0.0, abs=1e-6)
    assert history["rankme"][0] == pytest.approx(1.0, abs=1e-3)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "collapsed at epoch 1" in message and "< 0.1/sqrt(16) = 0.025" in message and "rankme 1 < 2" in message
    assert "monitor: epoch 1/1: embed_std 0.0000" in capsys.readouterr().out


@pytest.mark.parametrize("make_backbone", [_random_projection_backbone, lambda: _resnet_holder().backbone],
                         ids=["random_projection", "resnet18_random_init"])
def test_health_monitor_is_silent_for_a_healthy_encoder(make_backbone):
    history, caught, health = _fit_with_health(_holder(make_backbone()))
    assert caught == []
    assert history["rankme"][0] > 2.0
    assert history["embed_std"][0] > 0.1 / math.sqrt(health.dim)


def test_monitors_survive_resume_with_the_same_values_at_the_same_epochs(tmp_path):
    """A run resumed after epoch 2 (ResumableBackup + initial_epoch) measures what an uninterrupted one does."""
    from myol_keras.callbacks import EpochHistoryCSV
    from myol_keras.checkpoint import ResumableBackup

    x, y = _images(48, seed=5)
    inputs, targets = x.astype("float32") / 255, np.linspace(-1, 1, 48)[:, None]

    def run(model, history_path, backup_dir, epochs, initial_epoch=0):
        found = monitors.build_monitors("knn,rank", image_size=16, mean=MEAN, std=STD, every=2, bank_images=x,
                                        bank_labels=y, query_images=x, query_labels=y, bank_size=32, query_size=16,
                                        k=5, seed=3, verbose=False)
        backup = ResumableBackup(str(backup_dir), str(history_path))
        start = backup.restore(model)
        assert start == initial_epoch
        model.fit(inputs, targets, epochs=epochs, initial_epoch=start, batch_size=16, shuffle=False, verbose=0,
                  callbacks=[*found, EpochHistoryCSV(str(history_path)), backup])
        return found

    whole = tmp_path / "whole.csv"
    run(_resnet_holder(), whole, tmp_path / "backup-whole", epochs=5)
    parts = tmp_path / "parts.csv"
    run(_resnet_holder(), parts, tmp_path / "backup-parts", epochs=2)
    resumed = run(_resnet_holder(seed=9), parts, tmp_path / "backup-parts", epochs=5, initial_epoch=2)

    assert resumed[0].seconds and len(resumed[0].seconds) == 2  # epochs 4 and 5 (the last), not 3
    rows_whole, rows_parts = _read_history(whole), _read_history(parts)
    assert [r["epoch"] for r in rows_parts] == ["0", "1", "2", "3", "4"]
    for row_whole, row_parts in zip(rows_whole, rows_parts):
        due = row_parts["epoch"] in ("1", "3", "4")
        for key in ("knn_top1", "embed_std", "rankme"):
            assert (row_parts[key] != "") == due, (key, row_parts)
            if due:
                assert float(row_parts[key]) == pytest.approx(float(row_whole[key]), rel=1e-5), (key, row_parts)


def test_monitors_share_the_query_features_within_an_epoch():
    model = _resnet_holder()
    x, y = _images(24)
    knn_monitor, health = monitors.build_monitors("knn,rank", image_size=16, mean=MEAN, std=STD, bank_images=x,
                                                  bank_labels=y, query_images=x, query_labels=y, bank_size=16,
                                                  query_size=8, k=5, verbose=False)
    calls = []
    original = knn_monitor.feature_cache.features

    def counting(encoder, images, **kwargs):
        calls.append(len(images))
        return original(encoder, images, **kwargs)

    knn_monitor.feature_cache.features = counting
    model.fit(x.astype("float32") / 255, np.zeros((24, 1)), epochs=2, batch_size=8, verbose=0,
              callbacks=[knn_monitor, health])
    assert calls == [16, 8, 8, 16, 8, 8]  # bank, queries, health batch (a cache hit) per epoch
    # Only the bank and the queries were embedded: the health batch came from the memo.
    assert len(knn_monitor.feature_cache._memo) == 2


# --- the projector ------------------------------------------------------------------------------


def test_sprite_is_a_square_grid_in_row_major_order():
    from myol_keras import projector

    images = np.zeros((5, 8, 8, 3), np.uint8)
    for i in range(5):
        images[i] = 40 * (i + 1)
    sprite = projector.sprite_image(images, thumbnail=4)
    assert sprite.shape == (12, 12, 3)  # ceil(sqrt(5)) = 3 cells of 4 px
    assert sprite[0, 0, 0] == 40 and sprite[0, 4, 0] == 80 and sprite[0, 8, 0] == 120
    assert sprite[4, 0, 0] == 160 and sprite[4, 4, 0] == 200
    assert sprite[4, 8, 0] == 255 and sprite[8, 0, 0] == 255  # blank cells
    with pytest.raises(ValueError, match=r"wider than 8192 px"):
        projector.sprite_image(np.zeros((300, 2, 2, 3), np.uint8), thumbnail=512)


def test_write_projector_writes_a_config_the_checkpoint_metadata_and_sprite(tmp_path):
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorboard.plugins import projector as tb_projector

    from myol_keras import projector

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(10, 6)).astype("float32")
    images = rng.integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(10) % 3
    log_dir = tmp_path / "tensorboard" / "projector"
    written = projector.write_projector(str(log_dir), vectors, images=images, labels=labels,
                                        class_names=["zero", "one\ttab", "two"], thumbnail=8)

    config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), tb_projector.ProjectorConfig())
    (embedding,) = config.embeddings
    assert embedding.tensor_name == "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    assert embedding.metadata_path == "metadata.tsv" and embedding.sprite.image_path == "sprite.png"
    assert list(embedding.sprite.single_image_dim) == [8, 8]
    assert not config.model_checkpoint_path  # the plugin finds the newest checkpoint of the directory
    checkpoint = tf.train.latest_checkpoint(str(log_dir))
    assert checkpoint == written["checkpoint"]
    np.testing.assert_array_equal(tf.train.load_checkpoint(checkpoint).get_tensor(embedding.tensor_name), vectors)
    lines = (log_dir / "metadata.tsv").read_text().splitlines()
    assert lines[0] == "label\tclass" and lines[2] == "1\tone tab" and len(lines) == 11
    assert projector.metadata_text([2, 0]) == "label\tclass\n2\t2\n0\t0\n"
    sprite = tf.io.decode_png((log_dir / "sprite.png").read_bytes()).numpy()
    assert sprite.shape == (32, 32, 3)  # 4 x 4 cells of 8 px
    np.testing.assert_array_equal(sprite[:8, 8:16], images[1])  # same size: the cell is the image
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(log_dir))  # a TensorBoard run


def test_write_projector_refuses_mismatched_inputs(tmp_path):
    from myol_keras import projector

    with pytest.raises(ValueError, match=r"one of `labels` per embedding. Received: 3 labels, 4 embeddings"):
        projector.write_projector(str(tmp_path), np.zeros((4, 2)), labels=[0, 1, 2])
    with pytest.raises(ValueError, match=r"finite embeddings"):
        projector.write_projector(str(tmp_path), np.full((4, 2), np.nan))
    assert not os.listdir(tmp_path)
