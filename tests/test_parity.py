"""Step parity with the official MYOL code: three recorded steps per method, replayed here.

The fixtures `tests/fixtures/parity/<method>.npz` come from
`benchmarks/parity_torch.py`, which runs the official `algo.py`
(cneyang/MYOL-MixupYourOwnLatent @ded881c) and the training loop of its
`train.py` for three SGD steps on a tiny ResNet-18 (width 4, 16 px, batch 8)
and records the views, the random draws made inside `forward`, the per-step
losses and the initial and final online and target networks. Each test maps
the torch weights into the same myol_keras model, injects the same draws
through the methods' sampling hooks (`sample_mixing`, `IMix.draw_mixing`),
trains three steps with `fit` and `EMATargetUpdate` (the library's own step,
optimizer and EMA) and compares.

Configuration (`config/*` in each fixture): the official mechanisms — SGD
momentum 0.9 with torch's coupled weight decay on every parameter, a constant
learning rate, the EMA after every optimizer step — with lr 0.001, weight
decay 1e-2 and tau 0.9 instead of the official 0.05 / 1e-4 / 0.996: at 0.05 a
width-4 network's three-step trajectory is chaotic (the official code's own
float32 and float64 runs differ by up to 5e-2 in a weight), and with the
official weight decay and tau those two mechanisms would move weights by less
than float32 noise (see `benchmarks/parity_torch.py`).

Tolerances (float32 on both sides, different convolution kernels): per-step
losses rtol 1e-5; every final parameter, BatchNorm statistic and target
parameter `|ours - torch| <= 5e-6 + 1e-5 |torch|`. Measured: losses within
2.7e-6 (relative), tensors within 1.8e-6 (absolute), i.e. at the level of the
official code's own float32-vs-float64 difference (< 1.2e-6 and < 7.3e-7).
Breaking weight decay changes weights by ~5.6e-5 |w|, far outside.

TriBYOL's target BatchNorm moving statistics depend on the order in which the target sees the two views
(the outputs, the loss and the parameters do not): the library runs the official order, A on x2 then x1
and B on x3 then x1 (before this test it ran A on x1, x2 and B on x1, x3: up to 1.3e-2 in a running
variance after three steps).
"""

import pathlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from myol_keras import backbones
from myol_keras.callbacks import EMATargetUpdate
from myol_keras.methods import get_method

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "parity"
OFFICIAL_METHODS = ("byol", "myol", "unmix", "imix", "tribyol", "simclr", "moco")
LOSS_RTOL = 1e-5
WEIGHT_RTOL = 1e-5
WEIGHT_ATOL = 5e-6

_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def load_fixture(method):
    path = FIXTURES / f"{method}.npz"
    if not path.exists():
        pytest.fail(f"missing fixture {path}: run benchmarks/parity_torch.py (see its docstring)")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def config_value(fixture, name):
    return fixture[f"config/{name}"].item()


# --- torch state dict -> keras variables ------------------------------------------------------


def _backbone_layer(torch_key):
    """`(keras layer name, torch attribute)` of a torchvision ResNet key."""
    *path, attribute = torch_key.split(".")
    if path[0] in ("conv1", "bn1"):
        return path[0], attribute
    stage, block, *rest = path  # layer2 . 0 . conv1 | downsample . 0
    if rest[0] == "downsample":
        rest = ["downsample_conv" if rest[1] == "0" else "downsample_bn"]
    return f"{stage}_block{block}_{rest[0]}", attribute


def _head_layer(torch_key):
    """MLP `net.0/1/3` (Linear-BN-ReLU-Linear) or contrastive `0/2` (Linear-ReLU-Linear)."""
    *path, attribute = torch_key.split(".")
    if path[0] == "net":
        return {"0": "hidden_dense", "1": "hidden_bn", "3": "output_dense"}[path[1]], attribute
    return {"0": "hidden_dense", "2": "output_dense"}[path[0]], attribute


def keras_variable(network, torch_key, is_backbone):
    """The keras variable holding torch's `torch_key`, and how to convert the array."""
    layer_name, attribute = (_backbone_layer if is_backbone else _head_layer)(torch_key)
    layer = network.get_layer(layer_name) if is_backbone else getattr(network, layer_name)
    if attribute in _BN and isinstance(layer, keras.layers.BatchNormalization):
        return getattr(layer, _BN[attribute]), lambda a: a
    if attribute == "weight" and "conv" in layer_name:
        return layer.kernel, lambda a: np.transpose(a, (2, 3, 1, 0))  # OIHW -> HWIO
    if attribute == "weight":
        return layer.kernel, lambda a: a.T  # [out, in] -> [in, out]
    if attribute == "bias":
        return layer.bias, lambda a: a
    raise KeyError(f"no keras variable for torch key {torch_key!r} ({layer_name}.{attribute})")


def networks(model):
    """`{fixture group: keras network}` of a method model."""
    groups = {"online_backbone": model.backbone, "online_projector": model.projector}
    if getattr(model, "predictor", None) is not None:
        groups["predictor"] = model.predictor
    if getattr(model, "target_backbone", None) is not None:
        groups.update({"target_backbone": model.target_backbone, "target_projector": model.target_projector})
    if getattr(model, "target_backbone_b", None) is not None:
        groups.update({"target_b_backbone": model.target_backbone_b, "target_b_projector": model.target_projector_b})
    return groups


def state_pairs(model, fixture, stage):
    """`[(name, keras variable, expected array)]` of every recorded tensor of `stage`."""
    pairs = []
    groups = networks(model)
    prefix = re.compile(rf"^{stage}/([a-z_]+)/(.+)$")
    recorded = {prefix.match(k).groups(): v for k, v in fixture.items() if prefix.match(k)}
    if stage == "init":  # a target's parameters equal the online ones at construction
        for (group, key), value in list(recorded.items()):
            if group.startswith("online_"):
                for target in ("target_", "target_b_"):
                    target_group = group.replace("online_", target)
                    if target_group in groups and (target_group, key) not in recorded:
                        recorded[(target_group, key)] = value
    for (group, key), value in sorted(recorded.items()):
        variable, convert = keras_variable(groups[group], key, group.endswith("backbone"))
        pairs.append((f"{group}/{key}", variable, convert(value)))
    count = sum(len(n.trainable_variables) + len(n.non_trainable_variables) for n in groups.values())
    if stage == "init" and len(pairs) != count:
        raise AssertionError(f"the fixture sets {len(pairs)} of the model's {count} network variables")
    return pairs


# --- recorded draws -> the methods' sampling hooks -----------------------------------------------


def _step_index(model):
    return tf.cast(model.optimizer.iterations, tf.int32)


def inject_draws(model, method, fixture):
    """Make the model draw, at step k, what the official code drew at step k."""
    if method == "myol":
        lam = tf.constant(fixture["draws/lam"], tf.float32)  # torch.FloatTensor(np.random.beta(...))
        perm = tf.constant(fixture["draws/perm"], tf.int32)
        model.sample_mixing = lambda batch, seed: (tf.gather(lam, _step_index(model)), tf.gather(perm, _step_index(model)))
    elif method == "imix":
        lam = tf.constant(fixture["draws/lam"], tf.float32)  # before max(lam, 1 - lam): the library takes the max
        perm = tf.constant(fixture["draws/perm"], tf.int32)
        model.draw_mixing = lambda batch, seed: (tf.gather(lam, _step_index(model)), tf.gather(perm, _step_index(model)))
    elif method == "unmix":
        mixup = tf.constant(fixture["draws/r"] < 0.5)
        lam = tf.constant(fixture["draws/lam"], tf.float32)
        # rand_bbox's "cx" indexes axis 2 of NCHW (rows) and "cy" axis 3 (columns);
        # the library's center_x is a column, center_y a row.
        rows = tf.constant(np.maximum(fixture["draws/cx"], 0), tf.int32)
        cols = tf.constant(np.maximum(fixture["draws/cy"], 0), tf.int32)

        def sample(images, seed):
            k = _step_index(model)
            return tf.gather(mixup, k), tf.gather(lam, k), tf.gather(cols, k), tf.gather(rows, k)

        model.sample_mixing = sample
    elif method == "moco":
        model.queue.assign(fixture["moco/queue"])


# --- the replay --------------------------------------------------------------------------------


class StepLosses(keras.callbacks.Callback):
    """Each step's own loss (the tracker is reset before every step)."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_begin(self, batch, logs=None):
        self.model.loss_tracker.reset_state()

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def build_model(method, fixture):
    backbone = backbones.ResNet(18, stem="cifar", width=config_value(fixture, "width"))
    hidden = config_value(fixture, "hidden_dim")
    kwargs = {"projector_hidden_dim": hidden, "projection_dim": config_value(fixture, "projection_dim"),
              "predictor_hidden_dim": hidden, "weight_decay": config_value(fixture, "weight_decay")}
    if method == "unmix":
        kwargs["mix_prob"] = 0.5
    if method == "moco":
        kwargs["queue_size"] = fixture["moco/queue"].shape[0]
    return get_method(method)(backbone, **kwargs)


def replay(method, fixture=None, model=None):
    """Train `model` (built from the fixture by default) for the recorded steps -> (model, losses)."""
    fixture = load_fixture(method) if fixture is None else fixture
    keras.utils.set_random_seed(0)
    model = build_model(method, fixture) if model is None else model
    for _, variable, value in state_pairs(model, fixture, "init"):
        variable.assign(value)
    inject_draws(model, method, fixture)
    model.compile(optimizer=keras.optimizers.SGD(config_value(fixture, "lr"), momentum=config_value(fixture, "momentum")))
    views = tuple(tf.constant(fixture[f"x{i}"]) for i in range(1, model.num_views + 1))
    recorder = StepLosses()
    model.fit(tf.data.Dataset.from_tensor_slices(views), epochs=1, verbose=0, shuffle=False,
              callbacks=[EMATargetUpdate(tau=config_value(fixture, "tau")), recorder])
    return model, recorder.losses


def compare(model, losses, fixture):
    """`(max relative loss error, (max abs error, tensor))`; AssertionError beyond the tolerances."""
    expected = fixture["losses"]
    np.testing.assert_allclose(losses, expected, rtol=LOSS_RTOL, err_msg="per-step losses differ")
    failures, worst = [], (0.0, "")
    for name, variable, value in state_pairs(model, fixture, "final"):
        error = np.abs(np.asarray(variable.numpy()) - value)
        if (error - (WEIGHT_ATOL + WEIGHT_RTOL * np.abs(value))).max() > 0:
            failures.append(f"{name}: max abs error {error.max():.3g}")
        worst = max(worst, (float(error.max()), name))
    assert not failures, f"{len(failures)} final tensors differ: " + "; ".join(failures[:8])
    return float(np.max(np.abs(np.asarray(losses) - expected) / np.abs(expected))), worst


@pytest.mark.parametrize("method", OFFICIAL_METHODS)
def test_three_steps_match_official_code(method):
    fixture = load_fixture(method)
    model, losses = replay(method, fixture)
    compare(model, losses, fixture)


# --- methods without official code: a NumPy transcription of docs/METHODS.md §2.6-2.7 --------------------
# Representation mixing and CCSL/CSSL have no runnable official code, so each of three training
# steps (the library's own `fit`, optimizer and BatchNorm) is checked against the loss written in
# NumPy (float64) from METHODS.md on the step's own network outputs. The optimizer and the
# BatchNorm path they share with the BYOL family are covered by the official fixtures above.


def _np_normalize(v):
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def np_repmix_loss(m, temperature=0.5, reduction="log_mean"):
    """§2.6: rho_j = exp(s_P(j),j / t) / sum_{k != j} exp(s_kj / t), pairs (2b, 2b+1)."""
    z = _np_normalize(np.asarray(m, np.float64))
    s = z @ z.T / temperature
    n = len(z)
    rho = np.empty(n)
    for j in range(n):
        partner = j + 1 if j % 2 == 0 else j - 1
        denominator = sum(np.exp(s[k, j]) for k in range(n) if k != j)
        rho[j] = np.exp(s[partner, j]) / denominator
    return -np.log(rho.mean()) if reduction == "log_mean" else float(np.mean(-np.log(rho)))


def np_interleave(a, b):
    out = np.empty((2 * len(a), *a.shape[1:]), a.dtype)
    out[0::2], out[1::2] = a, b
    return out


def np_pseudo_pair_loss(p1, p2, z1, z2, theta_pos, theta_neg, kind, temperature=1.0):
    """§2.7 [RECON]: L_BYOL + mean_P extra + mean_N extra, both directions (direction 2 uses c_ji)."""
    p1, p2, z1, z2 = (_np_normalize(np.asarray(a, np.float64)) for a in (p1, p2, z1, z2))
    byol = np.mean((2 - 2 * np.sum(p1 * z2, -1)) + (2 - 2 * np.sum(p2 * z1, -1)))
    c = z1 @ z2.T
    total = byol
    for p, z, sim in ((p1, z2, c), (p2, z1, c.T)):
        cos = p @ z.T
        pos, neg = [], []
        for i in range(len(p)):
            for j in range(len(p)):
                if i == j:
                    continue
                if sim[i, j] > theta_pos:
                    pos.append(2 - 2 * cos[i, j] if kind == "ccsl" else np.log1p(np.exp(-cos[i, j] / temperature)))
                if sim[i, j] < theta_neg:
                    neg.append(max(0.0, cos[i, j]) if kind == "ccsl" else np.log1p(np.exp(cos[i, j] / temperature)))
        total += (np.mean(pos) if pos else 0.0) + (np.mean(neg) if neg else 0.0)
    return total


def test_numpy_repmix_transcription_reproduces_methods_checks():
    e = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.6, 0.8]])
    assert np_repmix_loss(e) == pytest.approx(0.622062, abs=1e-6)
    assert np_repmix_loss(e, reduction="mean_log") == pytest.approx(0.639934, abs=1e-6)


class _BeforeEachStep(keras.callbacks.Callback):
    def __init__(self, fn):
        super().__init__()
        self.fn, self.results = fn, []

    def on_train_batch_begin(self, batch, logs=None):
        self.results.append(self.fn(batch))


def _train_three_steps(model, views, before_step):
    model.compile(optimizer=keras.optimizers.SGD(0.001, momentum=0.9))
    expected, recorder = _BeforeEachStep(before_step), StepLosses()
    model.fit(tf.data.Dataset.from_tensor_slices(tuple(views)), epochs=1, verbose=0, shuffle=False,
              callbacks=[expected, EMATargetUpdate(tau=0.9), recorder])
    return np.array(recorder.losses), np.array(expected.results)


@pytest.mark.parametrize("reduction", ["log_mean", "mean_log"])
def test_repmix_three_steps_match_numpy_transcription(reduction):
    from conftest import tiny_method

    keras.utils.set_random_seed(1)
    model = tiny_method(get_method("repmix"), reduction=reduction, weight_decay=1e-2)
    rng = np.random.default_rng(1)
    views = rng.normal(size=(4, 3, 8, 16, 16, 3)).astype("float32")  # (N(x), N(r), A(r), A(x)) x 3 steps

    def numpy_loss(step):
        n_x, n_r, a_r, a_x = views[:, step]
        e_n = model.online_forward(np_interleave(n_x, n_r))[0].numpy()  # one pass: [x0, r0, x1, r1, ...]
        e_a = model.online_forward(np_interleave(a_r, a_x))[0].numpy()  # one pass: [r0, x0, r1, x1, ...]
        return np_repmix_loss(e_n.astype(np.float64) + e_a, 0.5, reduction)

    losses, expected = _train_three_steps(model, list(views), numpy_loss)
    np.testing.assert_allclose(losses, expected, rtol=1e-5)


@pytest.mark.parametrize("kind", ["ccsl", "cssl"])
def test_pseudo_pair_methods_three_steps_match_numpy_transcription(kind):
    from conftest import tiny_method

    keras.utils.set_random_seed(2)
    model = tiny_method(get_method(kind), weight_decay=1e-2)
    rng = np.random.default_rng(2)
    views = rng.normal(size=(2, 3, 8, 16, 16, 3)).astype("float32")

    def outputs(step):
        x1, x2 = views[:, step]
        (_, p1), (_, p2) = model.online_forward(x1), model.online_forward(x2)
        return [a.numpy() for a in (p1, p2, model.target_forward(x1), model.target_forward(x2))]

    # Thresholds at the quartiles of the target cosines, so both pseudo-label sets are populated.
    _, _, z1, z2 = outputs(0)
    c = (_np_normalize(z1) @ _np_normalize(z2).T)[~np.eye(len(z1), dtype=bool)]
    model.theta_pos, model.theta_neg = float(np.quantile(c, 0.75)), float(np.quantile(c, 0.25))

    def numpy_loss(step):
        return np_pseudo_pair_loss(*outputs(step), model.theta_pos, model.theta_neg, kind)

    losses, expected = _train_three_steps(model, list(views), numpy_loss)
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
