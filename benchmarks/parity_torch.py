"""Step-parity fixtures from the official MYOL code: three recorded SGD steps per method.

Runs from the PyTorch venv, never from the project's dependencies, and imports
the official `algo.py` (cneyang/MYOL-MixupYourOwnLatent @ded881c) from a
directory given on the command line; the official code is not part of this
repository:

    /work/torchvenv/bin/python benchmarks/parity_torch.py --official=/work/official

For each official class (BYOL, MYOL, UNMIX, IMIX, TRIBYOL, SIMCLR, MOCO) it
builds a tiny torchvision ResNet-18 (BasicBlock, v1.5, CIFAR stem: 3x3 s1 conv1,
no max-pool, fc = Identity; widths w, 2w, 4w, 8w), constructs the learner
exactly as `train.py` does (including its mock forward pass at construction),
then runs the official training loop of `train.py` for three steps on fixed
random views:

    loss = learner(x1, x2[, x3]); optimizer.zero_grad(); loss.backward();
    optimizer.step(); learner.update_moving_average()

with `torch.optim.SGD(learner.parameters(), lr, momentum=0.9, weight_decay)`
(torch's coupled L2) at a constant learning rate, float32, no AMP (CPU).

The defaults are the official mechanisms with other numbers: lr 0.001 (the
official 0.05 on a width-4 network moves the stem conv by ~1.5 in three steps
and the trajectory turns chaotic: the official code's own float32 and float64
runs then differ by up to 5e-2 in a weight, so no float32 reimplementation
can be compared tightly; at 0.001 they differ by < 1e-6), weight_decay 1e-2
and tau 0.9 (instead of 1e-4 and 0.996, so that weight decay and the EMA
move weights by far more than float32 noise: at lr 0.001 the official
values would change a weight by ~1e-8).
The random draws the official code makes inside `forward` (`np.random.beta`,
`np.random.rand`, `np.random.randint`, `torch.randperm`,
`torch.distributions.Beta.sample`) are recorded by wrapping those functions.
Un-Mix's coin `np.random.rand(1)` is scripted (0.3, 0.7, 0.8) so the three
steps cover global mixup and CutMix; every other draw is the RNG's own.

Deviations from running `train.py` verbatim, all outside `algo.py`'s maths:

* `.cuda()` is a no-op (monkeypatched on `torch.Tensor` and `nn.Module`);
* the tiny backbone and heads: BYOL-family heads through the constructor
  arguments (`projection_size`, `projection_hidden_size`); SIMCLR and MOCO
  hard-code `nn.Linear(2048, 2048)` heads, so after construction those two
  Linear layers are replaced by `Linear(8w, H)` and `Linear(H, P)` (MOCO's
  key encoder re-copied from the query encoder as its constructor does);
* MOCO moves its key encoder at the *start* of `forward`; the library does
  the same update after the optimizer step. After three steps the official
  key encoder still lacks the update with the third step's weights, which it
  makes at the start of step 4; the recorded final target includes that
  update (`_momentum_update_key_encoder()` once more), so both sides hold
  the same state.

Each `.npz` (one per method, `tests/fixtures/parity/<method>.npz`) holds:
`config/*` (scalars), `x1`, `x2`[, `x3`] (`[steps, B, H, W, 3]`, NHWC),
`draws/*`, `losses` (`[steps]`), and the network states
`init/<group>/<torch key>` (a target's BN statistics only: its parameters
equal the online ones) and `final/<group>/<torch key>` for the groups
`online_backbone`, `online_projector`, `predictor`, `target_backbone`,
`target_projector` (`target_b_*` for TriBYOL's second target), with
`moco/queue` for MoCo. `tests/test_parity.py` replays them with myol_keras.
"""

import argparse
import copy
import os
import sys

import numpy as np

METHODS = ("byol", "myol", "unmix", "imix", "tribyol", "simclr", "moco")
UNMIX_COINS = (0.3, 0.7, 0.8)  # step 0 global mixup, steps 1 and 2 CutMix


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="directory holding the official algo.py")
    parser.add_argument(
        "--output_dir",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "parity"),
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--width", type=int, default=4, help="ResNet-18 base width (features 8*width)")
    parser.add_argument("--image_size", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--hidden_dim", type=int, default=32, help="projector/predictor hidden width")
    parser.add_argument("--projection_dim", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight_decay", type=float, default=1e-2)
    parser.add_argument("--tau", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def import_official(path):
    """The official `algo` module, with `.cuda()` turned into a no-op."""
    import torch

    if not os.path.isfile(os.path.join(path, "algo.py")):
        raise FileNotFoundError(f"No algo.py in --official={path}; fetch cneyang/MYOL-MixupYourOwnLatent there")
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    sys.path.insert(0, os.path.abspath(path))
    import algo

    return algo


def tiny_resnet18(width):
    """torchvision's ResNet-18 (BasicBlock, stride on the 3x3 conv) with base width `width`.

    CIFAR stem as MYOL's `model.py`: conv1 -> 3x3 s1 p1 (torch's default init,
    as it is created after the model), maxpool -> Identity, fc -> Identity.
    Children order is torchvision's, so `hidden_layer=-2` is `avgpool`.
    """
    import torch.nn as nn
    from torchvision.models.resnet import BasicBlock, ResNet

    net = ResNet(BasicBlock, [2, 2, 2, 2])
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.maxpool = nn.Identity()
    net.layer1 = net._make_layer(BasicBlock, width, 2)
    net.layer2 = net._make_layer(BasicBlock, 2 * width, 2, stride=2)
    net.layer3 = net._make_layer(BasicBlock, 4 * width, 2, stride=2)
    net.layer4 = net._make_layer(BasicBlock, 8 * width, 2, stride=2)
    net.fc = nn.Identity()
    for name, module in net.named_modules():  # torchvision's init, except the replaced stem conv
        if isinstance(module, nn.Conv2d) and name != "conv1":
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return net


class DrawRecorder:
    """Wraps the RNG calls of `algo.py` and records what they return, per step."""

    def __init__(self, torch, np_module, unmix_coins=None):
        self.torch = torch
        self.np = np_module
        self.records = []
        self.coins = list(unmix_coins or [])
        self._originals = {}

    def _wrap(self, owner, name, wrapper_factory):
        original = getattr(owner, name)
        self._originals[(owner, name)] = original
        setattr(owner, name, wrapper_factory(original))

    def install(self):
        torch, np_random = self.torch, self.np.random

        def record(name):
            def factory(original):
                def wrapper(*args, **kwargs):
                    value = original(*args, **kwargs)
                    self.records.append((name, np.array(value.numpy() if hasattr(value, "numpy") else value)))
                    return value

                return wrapper

            return factory

        def scripted_rand(original):
            def wrapper(*args, **kwargs):
                if not self.coins:
                    raise RuntimeError("ran out of scripted np.random.rand coins")
                value = np.full(args if args else (), self.coins.pop(0))
                self.records.append(("rand", np.array(value)))
                return value

            return wrapper

        self._wrap(np_random, "beta", record("beta"))
        self._wrap(np_random, "randint", record("randint"))
        self._wrap(np_random, "rand", scripted_rand if self.coins else record("rand"))
        self._wrap(torch, "randperm", record("randperm"))
        self._wrap(torch.distributions.beta.Beta, "sample", record("beta_sample"))

    def uninstall(self):
        for (owner, name), original in self._originals.items():
            setattr(owner, name, original)
        self._originals.clear()

    def take(self):
        records, self.records = self.records, []
        return records


def make_learner(algo, method, args):
    """The official learner, constructed as `train.py` does, on a tiny backbone."""
    import torch.nn as nn

    net = tiny_resnet18(args.width)
    feature_dim = 8 * args.width
    if method in ("simclr", "moco"):
        learner = getattr(algo, method.upper())(net, projection_size=args.projection_dim,
                                                 moving_average_decay=args.tau, image_size=args.image_size)
        head = [nn.Linear(feature_dim, args.hidden_dim), nn.Linear(args.hidden_dim, args.projection_dim)]
        if method == "simclr":  # Sequential(Linear(2048, 2048), ReLU, Linear(2048, P)) in algo.py
            learner.projector[0], learner.projector[2] = head
        else:  # encoder_q = Sequential(net, Linear(2048, 2048), ReLU, Linear(2048, P))
            learner.encoder_q[1], learner.encoder_q[3] = head
            learner.encoder_k = copy.deepcopy(learner.encoder_q)
            for param_q, param_k in zip(learner.encoder_q.parameters(), learner.encoder_k.parameters()):
                param_k.data.copy_(param_q.data)
                param_k.requires_grad = False
        return learner
    return getattr(algo, method.upper())(
        net,
        image_size=args.image_size,
        hidden_layer=-2,
        projection_size=args.projection_dim,
        projection_hidden_size=args.hidden_dim,
        moving_average_decay=args.tau,
    )


def network_groups(learner, method):
    """`{group: module}` of every network whose state the fixture records."""
    import torch.nn as nn

    if method == "simclr":
        return {"online_backbone": learner.net, "online_projector": learner.projector}
    if method == "moco":
        q, k = learner.encoder_q, learner.encoder_k
        return {
            "online_backbone": q[0],
            "online_projector": nn.ModuleDict({"0": q[1], "2": q[3]}),
            "target_backbone": k[0],
            "target_projector": nn.ModuleDict({"0": k[1], "2": k[3]}),
        }
    groups = {
        "online_backbone": learner.online_encoder.net,
        "online_projector": learner.online_encoder.projector,
        "predictor": learner.online_predictor,
    }
    targets = learner.target_encoder
    if method == "tribyol":
        groups.update({
            "target_backbone": targets[0].net, "target_projector": targets[0].projector,
            "target_b_backbone": targets[1].net, "target_b_projector": targets[1].projector,
        })
    else:
        groups.update({"target_backbone": targets.net, "target_projector": targets.projector})
    return groups


def state_arrays(prefix, groups, target_buffers_only=False):
    """Every tensor of every group; with `target_buffers_only`, a target's BN statistics only.

    At construction a target's parameters are copies of the online ones (the
    test copies them over), while its BN statistics already differ: the mock
    forward of the constructor ran both networks in training mode.
    """
    arrays = {}
    for group, module in groups.items():
        parameters = {name for name, _ in module.named_parameters()}
        for key, value in module.state_dict().items():
            if key.endswith("num_batches_tracked"):
                continue
            if target_buffers_only and group.startswith("target") and key in parameters:
                continue
            arrays[f"{prefix}/{group}/{key}"] = value.detach().cpu().numpy().astype(np.float32)
    return arrays


def draws_arrays(method, per_step, batch_size):
    """The recorded draws of each step, as fixed-shape arrays."""
    if method == "myol":  # lam = np.random.beta(alpha, alpha, B); idx = torch.randperm(B)
        lam = [dict(r)["beta"] for r in per_step]
        perm = [dict(r)["randperm"] for r in per_step]
        return {"draws/lam": np.stack(lam).astype(np.float64), "draws/perm": np.stack(perm).astype(np.int32)}
    if method == "imix":  # randind = torch.randperm(B); lam = Beta(1, 1).sample([B]) (before the max)
        lam = [dict(r)["beta_sample"] for r in per_step]
        perm = [dict(r)["randperm"] for r in per_step]
        return {"draws/lam": np.stack(lam).astype(np.float64), "draws/perm": np.stack(perm).astype(np.int32)}
    if method == "unmix":  # r = rand(1); lam = beta(1, 1); [cx = randint(W); cy = randint(H)]
        out = {"draws/r": [], "draws/lam": [], "draws/cx": [], "draws/cy": []}
        for records in per_step:
            names = [name for name, _ in records]
            values = [value for _, value in records]
            out["draws/r"].append(float(np.ravel(values[names.index("rand")])[0]))
            out["draws/lam"].append(float(values[names.index("beta")]))
            ints = [int(v) for n, v in records if n == "randint"]
            out["draws/cx"].append(ints[0] if ints else -1)
            out["draws/cy"].append(ints[1] if ints else -1)
        return {
            "draws/r": np.array(out["draws/r"], np.float64), "draws/lam": np.array(out["draws/lam"], np.float64),
            "draws/cx": np.array(out["draws/cx"], np.int32), "draws/cy": np.array(out["draws/cy"], np.int32),
        }
    for records in per_step:
        if records:
            raise RuntimeError(f"{method} made unexpected random draws: {[n for n, _ in records]}")
    return {}


def run_method(algo, method, args):
    import torch

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    learner = make_learner(algo, method, args)
    num_views = 3 if method == "tribyol" else 2
    shape = (args.steps, args.batch_size, 3, args.image_size, args.image_size)
    views = [torch.randn(shape) for _ in range(num_views)]

    optimizer = torch.optim.SGD(learner.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    groups = network_groups(learner, method)
    arrays = state_arrays("init", groups, target_buffers_only=True)
    for group, module in groups.items():  # the claim the test relies on
        if group.startswith("target"):
            online = dict(groups[group.replace("target_b_", "online_").replace("target_", "online_")].named_parameters())
            for name, param in module.named_parameters():
                if not torch.equal(param, online[name]):
                    raise RuntimeError(f"{group}.{name} differs from the online network at construction")
    if method == "moco":
        arrays["moco/queue"] = learner.queue.detach().numpy().T.copy()  # [K, P], the library's layout

    recorder = DrawRecorder(torch, np, UNMIX_COINS if method == "unmix" else None)
    recorder.install()
    losses, per_step = [], []
    try:
        learner.train()
        for step in range(args.steps):
            loss = learner(*[v[step] for v in views])
            per_step.append(recorder.take())
            losses.append(loss.item())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            learner.update_moving_average()
    finally:
        recorder.uninstall()
    if method == "moco":
        with torch.no_grad():  # the update the official forward of step 4 starts with (see the docstring)
            learner._momentum_update_key_encoder()

    arrays.update(state_arrays("final", groups))
    arrays.update(draws_arrays(method, per_step, args.batch_size))
    for i, view in enumerate(views):
        arrays[f"x{i + 1}"] = view.permute(0, 1, 3, 4, 2).numpy().astype(np.float32)  # NCHW -> NHWC
    arrays["losses"] = np.array(losses, np.float64)
    config = {
        "width": args.width, "image_size": args.image_size, "batch_size": args.batch_size,
        "hidden_dim": args.hidden_dim, "projection_dim": args.projection_dim, "steps": args.steps,
        "lr": args.lr, "momentum": args.momentum, "weight_decay": args.weight_decay, "tau": args.tau,
        "seed": args.seed,
    }
    for key, value in config.items():
        arrays[f"config/{key}"] = np.array(value)
    arrays["config/torch_version"] = np.array(torch.__version__)
    return arrays, losses


def main(argv=None):
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    algo = import_official(args.official)
    os.makedirs(args.output_dir, exist_ok=True)
    for method in [m for m in args.methods.split(",") if m]:
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}. Choose from: {', '.join(METHODS)}.")
        arrays, losses = run_method(algo, method, args)
        path = os.path.join(args.output_dir, f"{method}.npz")
        np.savez_compressed(path, **arrays)
        print(f"{method}: losses {', '.join(f'{x:.6f}' for x in losses)} -> {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
