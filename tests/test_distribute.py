"""tf.distribute (docs/DECISIONS.md §4.9): a mirrored BYOL step with synchronised BatchNorm
equals a one-device step on the same global batch; MYOL replicas draw different λ; SuNCEt on
two replicas is the official multi-rank loss (docs/METHODS.md §2.11).

The comparison runs in a subprocess (tests/scripts/distribute_step.py) because
the CPU must be split into two logical devices before TensorFlow initialises.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent / "scripts" / "distribute_step.py"


@pytest.fixture(scope="module")
def step_result():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_mirrored_byol_step_equals_one_device(step_result):
    r = step_result
    assert r["replicas"] == 2 and r["sync_bn"]
    assert r["iterations"] == [1, 1]
    assert abs(r["loss_one_device"] - r["loss_mirrored"]) < 1e-5
    # Every online and target parameter moved, and both runs moved them alike.
    assert r["online_params_moved"] == r["num_online_params"] > 0
    assert r["target_params_moved"] == r["num_target_params"] > 0
    assert r["max_weight_diff"] < 1e-5, r["worst"]


def test_mirrored_myol_finite_and_replicas_draw_different_lambda(step_result):
    assert np.isfinite(step_result["myol_loss"])
    first, second = step_result["myol_lams"]
    assert len(first) == len(second) == 4
    assert not np.allclose(first, second)


def test_mirrored_in_step_ema_equals_the_callback(step_result):
    r = step_result
    assert r["in_step_iterations"] == 2 and r["in_step_target_moved"]
    assert r["in_step_ema_max_diff"] < 1e-5


def test_suncet_on_two_replicas_is_the_official_multi_rank_loss(step_result):
    # Each replica's anchors against the rows all-gathered from both, its own row excluded:
    # facebookresearch/suncet `init_suncet_loss` on each rank (NumPy in the script).
    r = step_result
    np.testing.assert_allclose(r["suncet_replica_losses"], r["suncet_official_losses"], rtol=1e-6)
    assert abs(r["suncet_replica_losses"][0] - r["suncet_replica_losses"][1]) > 0.1  # two different ranks
    # Their mean (what the step follows) is one replica's loss on the concatenated batch ...
    assert np.mean(r["suncet_replica_losses"]) == pytest.approx(r["suncet_one_replica_loss"], rel=1e-6)
    # ... and so is the gradient: all_gather's gradient sums the replicas' (the code's AllGather.backward).
    assert r["suncet_grad_max"] > 1e-2 and r["suncet_grad_max_diff"] < 1e-6


def test_suncet_labelled_stream_gives_each_replica_one_class_balanced_block(step_result):
    r = step_result
    assert r["suncet_block_shapes"] == [[6, 16, 16, 3]] * 2 and r["suncet_view_shapes"] == [[4, 16, 16, 3]] * 2
    for targets in r["suncet_block_targets"]:  # C = 3 classes x s = 2 images, row j*C + i of class i
        np.testing.assert_array_equal(targets, np.tile(np.eye(3), (2, 1)))
    assert r["suncet_block_epochs"] == [[1] * 6] * 2


def test_suncet_step_on_two_replicas_equals_one_device_on_the_concatenated_batch(step_result):
    r = step_result
    assert r["suncet_iterations"] == 1 and np.isfinite(r["suncet_step_loss_mirrored"])
    assert r["suncet_step_mirrored"] == pytest.approx(r["suncet_step_one_device"], rel=1e-5)
    assert r["suncet_step_mirrored"] == pytest.approx(r["suncet_official_on_model"], rel=1e-5)


def test_strategy_validation():
    from myol_keras import distribute

    with pytest.raises(ValueError, match="unknown --strategy='tpu2'; choose one of: auto"):
        distribute.validate_strategy("tpu2")
    with pytest.raises(ValueError, match="needs the TF_CONFIG"):
        distribute.validate_strategy("multi_worker", environ={})
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribute.validate_strategy("multi_worker", environ={"TF_CONFIG": "{cluster"})
    distribute.validate_strategy("multi_worker", environ={"TF_CONFIG": json.dumps(
        {"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}})})


def test_the_method_base_class_carries_the_multi_worker_workaround():
    import keras

    from myol_keras import distribute
    from myol_keras.methods import BootstrapMethod

    mro = BootstrapMethod.__mro__
    assert mro.index(distribute.MultiWorkerFitWorkaround) < mro.index(keras.Model)  # its overrides come first
    assert "keras-team/keras/issues/20585" in distribute.MultiWorkerFitWorkaround.__doc__


UPSTREAM = Path(__file__).resolve().parent / "scripts" / "keras_upstream.py"


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_keras_fit_on_two_workers_still_fails_upstream():
    # keras-team/keras#20585: Keras' own fit of a plain model under MultiWorkerMirroredStrategy.
    # When this fails because Keras trained, delete distribute.MultiWorkerFitWorkaround (see its docstring).
    cluster = {"worker": [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, str(UPSTREAM), "multi_worker"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert out.strip(), err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert not any(r["ok"] for r in results), "Keras fits under MultiWorkerMirroredStrategy now: delete the workaround"
    assert all(r["error"] == "ValueError" and "PerReplica" in r["message"] for r in results), results


@pytest.mark.slow
def test_keras_steps_per_execution_under_mirrored_still_fails_upstream():
    # The guard in training._compile_model: Keras' own steps_per_execution loop under a
    # MirroredStrategy of two replicas. When this fails because Keras trained, delete that guard.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, str(UPSTREAM), "steps_per_execution"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.stdout.strip(), result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert not outcome["ok"], "Keras runs steps_per_execution > 1 under MirroredStrategy now: delete the guard"
    assert outcome["error"] == "InvalidArgumentError", outcome
    assert "must feed a value for placeholder tensor" in outcome["message"], outcome
