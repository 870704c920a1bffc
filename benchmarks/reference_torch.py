"""PyTorch reference for the throughput benchmark: BYOL and MYOL as the official code runs.

Runs from its own virtual environment, never from the project's dependencies
(see benchmarks/README.md):

    /work/torchvenv/bin/python benchmarks/reference_torch.py --output=/tmp/ref.json
    /work/torchvenv/bin/python benchmarks/reference_torch.py --smoke

Same command line, timing protocol, table and JSON as `throughput.py`
(`bench_common.py`), so `compare.py` can put the two side by side.

Written from docs/METHODS.md §1-§2.2 the way the official MYOL code
(cneyang/MYOL-MixupYourOwnLatent `algo.py`, lucidrains-derived; `train.py`)
runs, with no artificial slow-downs and no speed-ups it lacks:

* torchvision ResNet-18 with conv1 -> 3x3 s1 p1 (torch default init, created
  after the model), maxpool -> Identity below 64 px, fc -> Identity; the
  representation is taken by a forward hook on the avgpool child (the
  lucidrains `NetWrapper`, hidden_layer=-2), flattened;
* heads Linear-BN1d-ReLU(inplace)-Linear, 2048 -> 128 (projector and predictor);
* one forward per view; target = deepcopy with requires_grad False, run in
  train mode under no_grad; loss `2 - 2 cos`, summed over the two directions;
* MYOL: per-sample `np.random.beta(alpha, alpha, B)` (alpha 2), `torch.randperm`,
  `lam x1 + (1 - lam) x2[idx]`, a separate online forward of the mixture, the
  raw target projections mixed the same way;
* eager float32 by default, torch's default threads; SGD lr 0.05 momentum 0.9
  weight_decay 1e-4 (torch's coupled L2), the per-step warm-up lr assignment;
  `loss.item()` per step (the progress bar), `zero_grad`, `backward`, `step`,
  then the parameter-wise EMA (tau 0.996) of `update_moving_average`;
* data: the reference two-view torchvision pipeline (RandomResizedCrop(S,
  scale=(0.2, 1)), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8,
  RandomGrayscale(0.2), ToTensor, Normalize) on PIL images, DataLoader with 2
  workers, shuffle, drop_last; a new DataLoader iterator each epoch.

The peer's best CPU configuration (issue 17) is what a PyTorch user on a
native-bf16 CPU would write, and nothing the official code lacks beyond it:

* `--torch_precision=bf16`: `torch.autocast("cpu", dtype=torch.bfloat16)`
  around the learner's forward (all four/five network passes and the loss, as
  AMP is used), `backward` and `step` outside it; parameters, gradients,
  optimizer state and the EMA stay float32 (autocast's rule);
* `--channels_last`: the whole learner (online, target, heads) converted with
  `.to(memory_format=torch.channels_last)` once, and every input batch with
  `.contiguous(memory_format=torch.channels_last)` (for the DataLoader's
  batches, inside the step, as a user would).
"""

import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_common as common  # noqa: E402

LIBRARY = "torch_reference"
METHODS = ("byol", "myol")


def versions():
    import torch
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "torch_threads": torch.get_num_threads()}


# --- the official model code, as METHODS.md and algo.py describe it ------------------
def build_learner(method, width, image_size, alpha=2.0, gamma=1.0, tau=0.996,
                  projection_size=128, hidden_size=2048):
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision
    from torchvision.models.resnet import BasicBlock

    def resnet18_backbone():
        net = torchvision.models.resnet18()
        if width != 64:  # torchvision's own construction with other stage widths
            net.inplanes = width
            net.bn1 = nn.BatchNorm2d(width)
            net.layer1 = net._make_layer(BasicBlock, width, 2)
            net.layer2 = net._make_layer(BasicBlock, 2 * width, 2, stride=2)
            net.layer3 = net._make_layer(BasicBlock, 4 * width, 2, stride=2)
            net.layer4 = net._make_layer(BasicBlock, 8 * width, 2, stride=2)
            for m in net.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
        net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        if image_size < 64:
            net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        return net

    def loss_fn(x, y):
        x = F.normalize(x, dim=-1, p=2)
        y = F.normalize(y, dim=-1, p=2)
        return 2 - 2 * (x * y).sum(dim=-1)

    class MLP(nn.Module):
        def __init__(self, input_dim, out, hidden):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(input_dim, hidden), nn.BatchNorm1d(hidden),
                                     nn.ReLU(inplace=True), nn.Linear(hidden, out))

        def forward(self, x):
            return self.net(x)

    class NetWrapper(nn.Module):
        def __init__(self, net, feature_dim):
            super().__init__()
            self.net = net
            self.hidden = {}
            [*net.children()][-2].register_forward_hook(self._hook)  # avgpool
            self.projector = MLP(feature_dim, projection_size, hidden_size)

        def _hook(self, _, inputs, output):
            self.hidden[inputs[0].device] = output.reshape(output.shape[0], -1)

        def forward(self, x):
            self.hidden.clear()
            self.net(x)
            representation = self.hidden[x.device]
            self.hidden.clear()
            return self.projector(representation), representation

    class Learner(nn.Module):
        def __init__(self):
            super().__init__()
            self.online_encoder = NetWrapper(resnet18_backbone(), 8 * width)
            self.online_predictor = MLP(projection_size, projection_size, hidden_size)
            self.target_encoder = copy.deepcopy(self.online_encoder)
            for p in self.target_encoder.parameters():
                p.requires_grad = False

        def update_moving_average(self):
            for current, ma in zip(self.online_encoder.parameters(), self.target_encoder.parameters()):
                ma.data = ma.data * tau + (1 - tau) * current.data

        def forward(self, x1, x2):
            online_proj_one, _ = self.online_encoder(x1)
            online_proj_two, _ = self.online_encoder(x2)
            online_pred_one = self.online_predictor(online_proj_one)
            online_pred_two = self.online_predictor(online_proj_two)
            with torch.no_grad():
                target_proj_one, _ = self.target_encoder(x1)
                target_proj_two, _ = self.target_encoder(x2)
            loss = (loss_fn(online_pred_one, target_proj_two) + loss_fn(online_pred_two, target_proj_one)).mean()
            if method == "myol":
                lam = np.random.beta(alpha, alpha, size=x1.size(0))
                lam = torch.FloatTensor(lam).reshape(-1, 1, 1, 1)
                idx = torch.randperm(x1.size(0))
                mixed_x = lam * x1 + (1 - lam) * x2[idx]
                lam = lam.reshape(-1, 1)
                mixed_proj, _ = self.online_encoder(mixed_x)
                mixed_pred = self.online_predictor(mixed_proj)
                with torch.no_grad():
                    target_proj = lam * target_proj_one + (1 - lam) * target_proj_two[idx]
                loss = loss + gamma * loss_fn(mixed_pred, target_proj).mean()
            return loss

    return Learner()


def build_loader(images, image_size, views, batch_size, workers, seed):
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(0.2, 1.0)),
        transforms.RandomHorizontalFlip(p=0.5),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.ToTensor(),
        transforms.Normalize(common.CIFAR10_MEAN, common.CIFAR10_STD),
    ])

    class MultiView(Dataset):  # dataset.py's CIFAR10 pair/triplet: the transform once per view
        def __len__(self):
            return len(images)

        def __getitem__(self, index):
            img = Image.fromarray(images[index])
            return tuple(transform(img) for _ in range(views)), 0

    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(MultiView(), batch_size=batch_size, shuffle=True, num_workers=workers,
                      drop_last=True, generator=generator)


TORCH_PRECISIONS = ("float32", "bf16")


def config_name(torch_precision, channels_last):
    """`float32`, `bf16_autocast`, `bf16_autocast+channels_last`, ...: how the tables name a configuration."""
    name = "float32" if torch_precision == "float32" else "bf16_autocast"
    return name + ("+channels_last" if channels_last else "")


def _bf16_supported():
    """Whether torch's oneDNN sees native bf16 on this CPU (None if torch cannot tell)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


class TorchBench:
    def __init__(self, task, args):
        import numpy as np
        import torch

        if args.depth != 18:
            raise SystemExit("the reference is torchvision ResNet-18 only (--depth=18)")
        self.task, self.args = task, args
        self.precision = config_name(args.torch_precision, args.channels_last)
        self.autocast = args.torch_precision == "bf16"
        self.memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        self.images = common.load_images(args)
        self.learner = None
        if task["part"] == "augment":
            self.loader = build_loader(self.images, args.image_size, task["views"], args.batch_size,
                                       args.workers, args.seed)
            return
        if task["method"] not in METHODS:
            raise SystemExit(f"the reference implements {', '.join(METHODS)}, not {task['method']!r}")
        task["views"] = 2
        self.learner = build_learner(task["method"], args.width, args.image_size)
        self.learner.train()
        if args.channels_last:
            self.learner = self.learner.to(memory_format=torch.channels_last)
        self.lr0, self.step_count, self.steps_per_epoch = 0.05, 0, max(len(self.images) // args.batch_size, 1)
        self.optimizer = torch.optim.SGD(
            [p for p in self.learner.parameters() if p.requires_grad],
            lr=self.lr0, momentum=0.9, weight_decay=1e-4,
        )
        if task["part"] == "train_step":
            g = torch.Generator().manual_seed(args.seed)
            shape = (args.batch_size, 3, args.image_size, args.image_size)
            self.views = tuple(torch.randn(shape, generator=g).contiguous(memory_format=self.memory_format)
                               for _ in range(2))
        else:
            self.loader = build_loader(self.images, args.image_size, 2, args.batch_size, args.workers, args.seed)

    def describe(self):
        import torch

        return {"torch_threads": torch.get_num_threads(), "workers": self.args.workers,
                "num_images": len(self.images), "torch_precision": self.args.torch_precision,
                "channels_last": self.args.channels_last, "torch_bf16_supported": _bf16_supported()}

    def _step(self, x1, x2):
        import torch

        # per-step warm-up lr (train.py sets the param-group lr every iteration)
        k, warm = self.step_count, 10 * self.steps_per_epoch
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr0 * min(1.0, (k + 1) / warm)
        if self.args.channels_last:  # a no-op for the train_step part's fixed tensors
            x1 = x1.contiguous(memory_format=torch.channels_last)
            x2 = x2.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.learner(x1, x2)
        loss.item()  # the progress bar's running loss
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.learner.update_moving_average()
        self.step_count += 1

    def _batches(self):
        """The loader's batches, a new iterator (workers) at every epoch boundary."""
        while True:
            for (views, _labels) in self.loader:
                yield views

    def _run(self, steps):
        part = self.task["part"]
        if part == "train_step":
            self._step(*self.views)  # untimed, like ours
            t0, cpu0 = time.perf_counter(), common.cpu_seconds()
            for _ in range(steps):
                self._step(*self.views)
            return {"seconds": time.perf_counter() - t0, "images": steps * self.args.batch_size, "steps": steps,
                    "cpu_seconds": common.cpu_seconds() - cpu0}
        batches = self._batches()  # a fresh epoch: workers start at the first next()
        if part == "end_to_end":
            self._step(*next(batches))  # untimed, like ours
        t0, cpu0 = time.perf_counter(), common.cpu_seconds()
        for _ in range(steps):
            views = next(batches)
            if part == "end_to_end":
                self._step(*views)
        seconds, cpu = time.perf_counter() - t0, common.cpu_seconds() - cpu0
        batches.close()
        return {"seconds": seconds, "images": steps * self.args.batch_size, "steps": steps, "cpu_seconds": cpu}

    def warmup(self):
        if self.args.warmup_steps > 0:
            self._run(self.args.warmup_steps)

    def rep(self):
        return self._run(common.steps_for(self.task, self.args))

    def close(self):
        self.learner = self.loader = None


def make_bench(task, args):
    return TorchBench(dict(task), args)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (2 in the issue's protocol)")
    parser.add_argument("--torch_precision", choices=TORCH_PRECISIONS, default="float32",
                        help="float32 (the official code) or bf16 (torch.autocast('cpu', torch.bfloat16) around the "
                             "forward passes)")
    parser.add_argument("--channels_last", action="store_true",
                        help="learner and inputs in torch.channels_last memory format")
    # accepted (and ignored) so compare.py can pass one command line to both
    parser.add_argument("--jit_compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps_per_execution", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--ema", default="callback", help=argparse.SUPPRESS)
    parser.add_argument("--stack_views", default="on", help=argparse.SUPPRESS)
    parser.add_argument("--inter_op_threads", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    args = common.apply_smoke(build_parser().parse_args(argv))
    if args.precision != "float32":
        print(f"note: --precision={args.precision} is ours; the reference's is --torch_precision "
              f"({args.torch_precision})", file=sys.stderr)
    if args.serve:
        common.serve(LIBRARY, versions(), args, make_bench)
        return None
    return common.run_standalone(LIBRARY, versions(), args, make_bench)


if __name__ == "__main__":
    main()
