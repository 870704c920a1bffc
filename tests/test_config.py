"""The library core (issue 16): `PretrainConfig`, its flags, validation before anything runs,
and hand-computable checks of what the training step and the schedules compute."""

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import run_main_in_process
from myol_keras import config as config_lib
from myol_keras.config import PretrainConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--width=4", "--projector_hidden_dim=16", "--projection_dim=8", "--predictor_hidden_dim=16", "--epochs=1"]


# --- the settings and their flags -------------------------------------------------------------


def test_every_setting_is_a_flag_with_the_same_default():
    from myol_keras import main

    for field in config_lib.fields():
        assert field.name in main.FLAGS, field.name
        assert main.FLAGS[field.name].default == field.default, field.name


def test_json_round_trip_and_unknown_names(tmp_path):
    config = PretrainConfig(method="byol", dataset="npz", data_dir="x.npz", epochs=3, warmup_epochs=2.5)
    path = config.to_json(tmp_path / "c.json")
    assert PretrainConfig.from_json(path) == config
    saved = json.loads(Path(path).read_text())
    saved["resolved"] = {"image_size": 32}  # a run directory's config.json carries this beside the settings
    assert PretrainConfig.from_dict(saved) == config
    with pytest.raises(ValueError, match="unknown setting.*learning_rate"):
        PretrainConfig.from_dict({"learning_rate": 0.1})


def _bad_values(field):
    """Values every constrained setting must refuse: out of its bounds, off its choices, not finite."""
    meta, kind = field.metadata, config_lib.annotation_type(field)
    bad = []
    if config_lib.choices_of(meta):
        bad.append("not_a_choice" if kind is str else 99)
    if meta["minimum"] is not None:
        bad.append(kind(meta["minimum"] - 1))
    if meta["maximum"] is not None:
        bad.append(kind(meta["maximum"] + 1))
    if meta["above"] is not None:
        bad.append(kind(meta["above"]))
    if kind is float:
        bad += [float("nan"), float("inf")]
    return bad


CONSTRAINED = [(f.name, value) for f in config_lib.fields() for value in _bad_values(f)]


def test_every_constrained_setting_is_covered():
    names = {name for name, _ in CONSTRAINED}
    floats = {f.name for f in config_lib.fields() if config_lib.annotation_type(f) is float}
    assert floats <= names and {"method", "batch_size", "epochs", "lr", "alpha", "queue_size", "theta_pos"} <= names


@pytest.mark.parametrize("name, value", CONSTRAINED, ids=[f"{n}={v}" for n, v in CONSTRAINED])
def test_validate_refuses_each_bad_value_in_one_line(name, value):
    with pytest.raises(ValueError) as info:
        PretrainConfig(**{name: value}).validate()
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"--{name}="), message


@pytest.mark.parametrize("name, value", CONSTRAINED, ids=[f"{n}={v}" for n, v in CONSTRAINED])
def test_cli_refuses_each_bad_value_in_one_line_and_writes_nothing(name, value, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = run_main_in_process([*TINY, f"--{name}={value}"], capsys)
    assert status == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("myol_keras.main: error: ") and f"--{name}=" in lines[0], err
    assert "Traceback" not in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, match", [
    (["--warmup_mode=myol_faithful", "--lr_schedule=cosine"], "cannot be combined"),
    (["--strategy=one_device", "--sync_batchnorm"], "one replica"),
    (["--theta_pos=0.1", "--theta_neg=0.5"], "must not exceed"),
])
def test_cross_setting_rules_in_python_and_on_the_command_line(argv, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = {}
    for arg in argv:
        key, _, value = arg[2:].partition("=")
        field = next(f for f in config_lib.fields() if f.name == key)
        kind = config_lib.annotation_type(field)
        settings[key] = True if not value else (kind(value) if kind is not bool else value == "true")
    with pytest.raises(ValueError, match=match):
        PretrainConfig(**settings).validate()
    status, _, err = run_main_in_process([*TINY, *argv], capsys)
    assert status == 2 and match in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flag", ["run_dir", "export_dir"])
def test_an_output_path_that_is_a_file_fails_before_training(flag, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a directory")
    status, _, err = run_main_in_process([*TINY, f"--{flag}=a_file/sub", "--dataset=digits"], capsys)
    assert status == 2 and "is a file, not a directory" in err, err
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


# --- the Python entry point ----------------------------------------------------------------------


def test_pretrain_gives_back_the_process_settings_it_changes(tmp_path):
    # issue 29: pretrain() used to leave Keras' global dtype policy at the run's precision (and the global
    # random generators seeded by the run) after it returned.
    import keras
    import numpy as np

    import myol_keras

    np.random.seed(123)
    expected_draw = np.random.get_state()[1].copy()
    before = keras.config.dtype_policy().name
    myol_keras.pretrain(myol_keras.PretrainConfig(
        method="byol", dataset="digits", image_size=16, width=4, projector_hidden_dim=16, projection_dim=8,
        predictor_hidden_dim=16, batch_size=16, steps_per_epoch=1, epochs=1, warmup_epochs=1,
        precision="mixed_bfloat16", verbose=0, deterministic=True,
        run_dir=str(tmp_path / "runs"), export_dir=str(tmp_path / "sm"), run_name="r"))
    assert keras.config.dtype_policy().name == before == "float32"
    assert np.array_equal(np.random.get_state()[1], expected_draw)
    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled()



def test_pretrain_from_python_writes_the_cli_run_directory(cifar_subset_path, tmp_path, capsys):
    import myol_keras

    settings = dict(method="myol", dataset="npz", data_dir=cifar_subset_path, image_size=16, width=4,
                    projector_hidden_dim=16, projection_dim=8, predictor_hidden_dim=16, batch_size=16,
                    steps_per_epoch=2, epochs=2, warmup_epochs=1, precision="float32", verbose=0, seed=3,
                    deterministic=True)
    python_run = myol_keras.pretrain(myol_keras.PretrainConfig(
        **settings, run_dir=str(tmp_path / "py" / "runs"), export_dir=str(tmp_path / "py" / "saved_models"), run_name="r"))
    # Determinism was for that run only: the process (and the next test) is back to TensorFlow's default.
    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled()
    argv = [f"--{k}={v}" for k, v in settings.items()]
    status, out, err = run_main_in_process(
        [*argv, f"--run_dir={tmp_path}/cli/runs", f"--export_dir={tmp_path}/cli/saved_models", "--run_name=r"], capsys)
    assert status == 0, err
    assert python_run == str(tmp_path / "py" / "saved_models" / "r" / "1")
    py_dir, cli_dir = tmp_path / "py" / "runs" / "r", tmp_path / "cli" / "runs" / "r"
    assert sorted(os.listdir(py_dir)) == sorted(os.listdir(cli_dir))
    py_config, cli_config = (json.loads((d / "config.json").read_text()) for d in (py_dir, cli_dir))
    for name in ("run_dir", "export_dir"):
        py_config.pop(name), cli_config.pop(name)
    py_config["resolved"].pop("export_root"), cli_config["resolved"].pop("export_root")
    assert py_config == cli_config
    assert PretrainConfig.from_json(py_dir / "config.json").method == "myol"
    # Same seed, same data, deterministic ops: the same loss curve.
    import csv

    py_rows, cli_rows = (list(csv.DictReader(open(d / "history.csv"))) for d in (py_dir, cli_dir))
    assert len(py_rows) == len(cli_rows) == 2
    for a, b in zip(py_rows, cli_rows):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), abs=1e-6)


# --- hand-computable numbers ---------------------------------------------------------------------


def test_coupled_weight_decay_under_momentum_is_torch_sgd():
    """A zero-gradient weight w = 1, lr 0.1, momentum 0.9, wd 0.5: two steps give 0.8575 (coupled:
    the decay goes through the momentum buffer, as torch's SGD(weight_decay=...)); decoupled would give 0.9025."""
    import keras
    import tensorflow as tf

    from conftest import random_views, tiny_method
    from myol_keras.methods import BYOL

    class ZeroGradient(BYOL):
        def compute_loss_terms(self, views, targets, seed):
            terms = super().compute_loss_terms(views, targets, seed)
            # The loss still depends on every optimized variable, with gradient exactly 0.
            zero = tf.add_n([0.0 * tf.reduce_sum(v) for v in self.optimized_variables])
            return {**terms, "loss": zero}

    model = tiny_method(ZeroGradient, weight_decay=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    for v in model.optimized_variables:
        v.assign(tf.ones_like(v))
    views = random_views(batch=4, size=16)
    model.fit(tf.data.Dataset.from_tensors(views).repeat(2), epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 2
    for v in model.optimized_variables:
        np.testing.assert_allclose(v.numpy(), 0.8575, rtol=1e-6, err_msg=v.path)
    assert abs(0.8575 - 0.9025) > 0.04  # what decoupled decay would have given is far away


def test_batchnorm_statistics_are_per_view():
    """A BN-only backbone; x1 = [0, 2] and x2 = [10, 14] each normalise to -1, +1 with their own
    statistics, so the two views' projections are equal. One BatchNorm over the concatenated batch
    [0, 2, 10, 14] (mean 6.5, variance 32.75) would give other features for each."""
    import keras

    from myol_keras.batchnorm import BatchNormalization
    from myol_keras.methods import BYOL

    inputs = keras.Input((1, 1, 1))
    features = keras.layers.Flatten()(BatchNormalization(epsilon=1e-6)(inputs))
    backbone = keras.Model(inputs, features)
    model = BYOL(backbone, projector_hidden_dim=8, projection_dim=4, predictor_hidden_dim=8)
    x1 = np.array([0.0, 2.0], "float32").reshape(2, 1, 1, 1)
    x2 = np.array([10.0, 14.0], "float32").reshape(2, 1, 1, 1)
    np.testing.assert_allclose(backbone(x1, training=True).numpy().ravel(), [-1, 1], atol=1e-5)
    np.testing.assert_allclose(backbone(x2, training=True).numpy().ravel(), [-1, 1], atol=1e-5)
    z1, _ = model.online_forward(x1)
    z2, _ = model.online_forward(x2)
    np.testing.assert_allclose(z1.numpy(), z2.numpy(), atol=1e-5)
    t1, t2 = model.compute_targets([x1, x2])
    np.testing.assert_allclose(t1.numpy(), t2.numpy(), atol=1e-5)
    together = backbone(np.concatenate([x1, x2]), training=True).numpy().ravel()
    np.testing.assert_allclose(together, (np.array([0, 2, 10, 14]) - 6.5) / math.sqrt(32.75), atol=1e-5)
    assert not np.allclose(together[:2], [-1, 1], atol=0.1)


def test_faithful_warmup_of_the_paper_flagfile():
    """flags/paper/myol_cifar10.cfg: 50,000 images, batch 256 without dropping the remainder: T = 196,
    W = 1,960; lr(0) = 0.05 * (0 + 1 + 196) / 1960 = 0.0050255; after the warm-up 1.1 * 0.05 = 0.055."""
    from myol_keras import data
    from myol_keras import main
    from myol_keras.schedules import WarmupSchedule

    main.parse_flags(["myol_keras.main", f"--flagfile={ROOT / 'flags' / 'paper' / 'myol_cifar10.cfg'}"])
    config = main.config_from_flags().validate()
    main.FLAGS.unparse_flags()
    steps = data.steps_in_epoch(50_000, config.batch_size, config.drop_remainder, config.steps_per_epoch)
    assert steps == 196
    schedule = WarmupSchedule(config.learning_rate(), steps, config.warmup_epochs, config.warmup_mode,
                              config.lr_schedule)
    assert float(schedule(0)) == pytest.approx(0.0050255, abs=1e-7)
    assert float(schedule(1959)) == pytest.approx(0.05 * 1.1, rel=1e-6)  # (1959 + 1 + 196) / 1960 * 0.05 = 0.055
    assert float(schedule(1960)) == pytest.approx(0.055, rel=1e-6)
    assert float(schedule(100_000)) == pytest.approx(0.055, rel=1e-6)


def test_dataclass_fields_have_help_and_a_group():
    for field in dataclasses.fields(PretrainConfig):
        assert field.metadata["help"] and field.metadata["group"], field.name


# --- reading settings: no TensorFlow, the names and defaults old run directories recorded ------------

#: `PretrainConfig().to_dict()` before each method's settings moved beside the method (issue 25): the
#: keys and defaults every config.json and flags.txt written so far holds.
RECORDED_DEFAULTS = {
    'alpha': 2.0, 'augment_on': 'host', 'backbone': 'resnet18', 'batch_size': 256, 'cache_dir': '',
    'cssl_temperature': 1.0, 'data_dir': None, 'dataset': 'digits', 'deterministic': False, 'download': True,
    'drop_remainder': True, 'ema': 0.996, 'ema_schedule': 'constant', 'epochs': 500, 'export_dir': 'saved_models',
    'export_formats': 'saved_model', 'gamma': 1.0, 'image_size': 0, 'imix_alpha': 1.0, 'jit_compile': False,
    'lr': 0.05, 'lr_scaling': 'none', 'lr_schedule': 'constant', 'method': 'myol', 'moco_temperature': 0.07,
    'momentum': 0.9, 'neg_weight': 1.0, 'normalization': 'auto', 'overwrite': False, 'pos_weight': 1.0,
    'precision': 'auto', 'predictor_hidden_dim': 2048, 'projection_dim': 128, 'projector_hidden_dim': 2048,
    'queue_size': 4096, 'repmix_reduction': 'log_mean', 'repmix_temperature': 0.5, 'run_dir': 'runs', 'run_name': '',
    'seed': 0, 'shuffle_buffer': 0, 'simclr_temperature': 0.07, 'stem': 'auto', 'steps_per_epoch': 0,
    'steps_per_execution': 1, 'strategy': 'auto', 'sync_batchnorm': False, 'theta_neg': 0.2, 'theta_pos': 0.8,
    'threads': 0, 'unmix_prob': 0.5, 'unmix_target_view': 'x1', 'verbose': 1, 'warmup_epochs': 10.0,
    'warmup_mode': 'linear', 'weight_decay': 0.0001, 'width': 64,
}


def test_reading_settings_imports_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys, myol_keras.config as c; c.PretrainConfig(method='moco').method_kwargs(); "
            "c.PretrainConfig().to_dict(); c.reason_for('method', 'nope'); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_a_deterministic_cli_run_turns_onednn_off_before_tensorflow_starts(tmp_path):
    # oneDNN's CPU kernels made BYOL at protocol Q1's size differ run to run under op determinism (measured:
    # the last bits of the first update); TensorFlow reads TF_ENABLE_ONEDNN_OPTS only when it is imported.
    import subprocess
    import sys

    from myol_keras import process_settings

    code = ("from myol_keras import main, process_settings\n"
            f"main.parse_flags(['prog', '--deterministic', '--dataset=npz', '--data_dir={tmp_path}/none.npz'])\n"
            "try:\n    main.run()\nexcept SystemExit as e:\n    print('exit', e.code)\n"
            "print('onednn', process_settings.onednn_enabled())")
    env = {k: v for k, v in os.environ.items() if k != process_settings.ONEDNN_ENV}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert result.stdout.split() == ["exit", "2", "onednn", "False"], result.stdout + result.stderr[-2000:]


@pytest.mark.parametrize("onednn", [True, False])
def test_op_determinism_says_when_onednn_kernels_keep_a_run_from_repeating(onednn, monkeypatch, recwarn):
    from myol_keras import process_settings

    monkeypatch.setattr(process_settings, "onednn_enabled", lambda: onednn)
    with process_settings.op_determinism(True):
        pass
    said = [str(w.message) for w in recwarn if "oneDNN" in str(w.message)]
    assert len(said) == (1 if onednn else 0)
    if onednn:
        assert "set TF_ENABLE_ONEDNN_OPTS=0 before importing TensorFlow" in said[0]


#: settings added since RECORDED_DEFAULTS (issue 29: cluster_timeout; issue 28: the monitors), all of which may
#: change on resume, so a run directory recorded before them resumes unchanged.
ADDED_SINCE = {"cluster_timeout": 300, "monitor": "auto", "monitor_every": 1, "monitor_knn_k": 20}
#: the settings of methods added since (issue 27): no old run directory ran these methods, so none holds them.
NEW_METHODS_SETTINGS = {
    "clsa_temperature": 0.2, "clsa_ddm_temperature": 0.2, "clsa_alpha": 1.0, "clsa_form": "code",
    "clsa_symmetric": False, "clsa_queue_size": 4096, "clsa_strong_size": 0, "clsa_crops": "single",
    "labels_fraction": 0.1, "supervised_epochs": 0, "suncet_classes_per_batch": 0, "suncet_images_per_class": 2,
    "suncet_temperature": 0.1, "suncet_ntxent_temperature": 0.1,
}


def test_the_settings_and_defaults_are_those_old_run_directories_recorded(tmp_path):
    assert PretrainConfig().to_dict() == {**RECORDED_DEFAULTS, **ADDED_SINCE, **NEW_METHODS_SETTINGS}
    assert set(ADDED_SINCE) <= config_lib.RESUMABLE_CHANGES
    # a run directory's config.json from before: the settings plus its "resolved" section
    old = {**RECORDED_DEFAULTS, "method": "ccsl", "theta_pos": 0.9, "queue_size": 1024, "epochs": 3,
           "resolved": {"image_size": 32, "steps_per_epoch": 22}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    config = PretrainConfig.from_json(path)
    assert config.theta_pos == 0.9 and config.queue_size == 1024 and config.changed_from(old) == []
    assert config.method_kwargs()["theta_pos"] == 0.9 and "queue_size" not in config.method_kwargs()


def test_a_methods_own_rule_is_checked_like_the_others():
    # CCSL's thresholds rule is declared beside it (methods/ccsl_settings.py) and collected here.
    assert (("theta_neg", "theta_pos") in [names for names, _ in config_lib.CROSS_RULES])
    with pytest.raises(ValueError, match="theta_neg=0.9 is above --theta_pos=0.8"):
        PretrainConfig(method="ccsl", theta_neg=0.9).validate()


def test_choice_lists_are_declared_once():
    from myol_keras import ema, schedule_choices, schedules

    assert config_lib.EMA_SCHEDULES is ema.TAU_SCHEDULES is schedule_choices.EMA_SCHEDULES
    assert config_lib.LR_SCHEDULES is schedules.LR_DECAYS is schedule_choices.LR_SCHEDULES
    assert config_lib.WARMUP_MODES is schedules.WARMUP_MODES is schedule_choices.WARMUP_MODES
    fields = {f.name: f for f in config_lib.fields()}
    assert config_lib.choices_of(fields["ema_schedule"].metadata) == schedule_choices.EMA_SCHEDULES
    from myol_keras.data import DATASETS

    assert config_lib.choices_of(fields["dataset"].metadata) == DATASETS  # read when asked, not at import
