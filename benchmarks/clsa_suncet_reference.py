"""Writes the loss-parity fixtures of CLSA and SuNCEt from the official PyTorch code.

Runs in the PyTorch reference venv, never with the project's dependencies
(benchmarks/README.md):

    /work/torchvenv/bin/python benchmarks/clsa_suncet_reference.py \
        --suncet_dir=/work/official/facebookresearch+suncet \
        --output_dir=tests/fixtures/clsa_suncet

`--suncet_dir` is a checkout of `facebookresearch/suncet` kept OUTSIDE this
repository: its `src/losses.py` is imported as is (`init_suncet_loss`,
`make_labels_matrix`; on one process its `AllGather` is the identity and
passes gradients through). CLSA's loss cannot be imported (it lives inside
`CLSA.forward`, which needs DistributedDataParallel and CUDA), so
`clsa_code_losses` below transcribes, for one weak and one strong query, the
logits of `maple-research-lab/CLSA` `model/CLSA.py` (non-symmetric branch,
one process) and the loss of `training/train.py`; that transcription lives in
this script only. `tests/test_losses_clsa_suncet.py` loads the `.npz` files
and checks `myol_keras.losses` against them without torch.

Each fixture holds fixed random float32 inputs, the losses, and the gradients
with respect to the raw (un-normalised) embeddings.
"""

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


def clsa_code_losses(q_raw, q_strong_raw, k_raw, queue, T=0.2, T2=0.2):
    """CLSA's L_c and L_DDM for one weak and one strong query, transcribed from the official code.

    `queue` is `[dim, K]` (unit columns) as the code stores it; `k` is the
    gathered, detached key batch.
    """
    q = F.normalize(q_raw, dim=1)
    q_strong = F.normalize(q_strong_raw, dim=1)
    k = F.normalize(k_raw, dim=1).detach()
    # -- model/CLSA.py, forward (sym=0)
    l_pos = torch.einsum("nc,ck->nk", [q, k.T])
    l_neg = torch.einsum("nc,ck->nk", [q, queue.clone().detach()])
    logits = torch.cat([l_pos, l_neg], dim=1)
    logits /= T
    labels = torch.arange(0, logits.shape[0], dtype=torch.long)
    labels0 = logits.clone().detach()
    labels0 = labels0 * T / T2
    labels0 = torch.softmax(labels0, dim=1)
    labels0 = labels0.detach()
    l_pos = torch.einsum("nc,ck->nk", [q_strong, k.T])
    l_neg = torch.einsum("nc,ck->nk", [q_strong, queue.clone().detach()])
    logits0 = torch.cat([l_pos, l_neg], dim=1)
    logits0 /= T2
    logits0 = torch.softmax(logits0, dim=1)
    # -- training/train.py
    loss_contrastive = torch.nn.CrossEntropyLoss()(logits, labels)
    loss_ddm = -torch.mean(torch.sum(torch.log(logits0) * labels0, dim=1))
    return loss_contrastive, loss_ddm


def write_clsa(output_dir, rng, batch=8, dim=16, queue_size=32):
    q_w, q_s, k = (rng.standard_normal((batch, dim)).astype(np.float32) for _ in range(3))
    queue = rng.standard_normal((dim, queue_size)).astype(np.float32)
    queue /= np.linalg.norm(queue, axis=0, keepdims=True)
    q_w_t = torch.tensor(q_w, requires_grad=True)
    q_s_t = torch.tensor(q_s, requires_grad=True)
    loss_c, loss_ddm = clsa_code_losses(q_w_t, q_s_t, torch.tensor(k), torch.tensor(queue))
    total = loss_c + 1.0 * loss_ddm  # alpha = 1
    grad_w, grad_s = torch.autograd.grad(total, [q_w_t, q_s_t])
    grad_ddm_w, grad_ddm_s = torch.autograd.grad(
        clsa_code_losses(q_w_t, q_s_t, torch.tensor(k), torch.tensor(queue))[1], [q_w_t, q_s_t],
        allow_unused=True,
    )
    grad_ddm_w = torch.zeros_like(q_w_t) if grad_ddm_w is None else grad_ddm_w  # p_w is detached
    path = os.path.join(output_dir, "clsa_code_form.npz")
    np.savez(
        path, q_weak=q_w, q_strong=q_s, k=k, queue_dim_by_k=queue,
        loss_contrastive=loss_c.detach().numpy(), loss_ddm=loss_ddm.detach().numpy(),
        grad_total_q_weak=grad_w.numpy(), grad_total_q_strong=grad_s.numpy(),
        grad_ddm_q_weak=grad_ddm_w.numpy(), grad_ddm_q_strong=grad_ddm_s.numpy(),
    )
    print(f"{path}: L_c={loss_c.item():.6f} L_DDM={loss_ddm.item():.6f}")


def write_suncet(output_dir, rng, losses, classes=5, per_class=3, dim=16):
    for views, smoothing in ((1, 0.0), (2, 0.0), (1, 0.1)):
        n = classes * per_class * views
        z = rng.standard_normal((n, dim)).astype(np.float32)
        suncet = losses.init_suncet_loss(
            num_classes=classes, batch_size=per_class * views, world_size=1, rank=0,
            temperature=0.1, device="cpu",
        )
        labels = losses.make_labels_matrix(
            num_classes=classes, s_batch_size=per_class, world_size=1, device="cpu",
            smoothing=smoothing,
        )
        # As paws_train.py does for several supervised views (suncet_train.py does not tile).
        labels = torch.cat([labels for _ in range(views)])
        z_t = torch.tensor(z, requires_grad=True)
        loss = suncet(z_t, labels)
        (grad,) = torch.autograd.grad(loss, [z_t])
        path = os.path.join(output_dir, f"suncet_views{views}_smoothing{smoothing}.npz")
        np.savez(
            path, z=z, labels=labels.numpy(), loss=loss.detach().numpy(), grad_z=grad.numpy(),
            classes=classes, per_class=per_class, views=views,
        )
        print(f"{path}: L={loss.item():.6f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suncet_dir", default="/work/official/facebookresearch+suncet")
    parser.add_argument("--output_dir", default="tests/fixtures/clsa_suncet")
    parser.add_argument("--seed", type=int, default=2027)
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.suncet_dir, "src", "losses.py")):
        print(f"error: no src/losses.py under --suncet_dir={args.suncet_dir}", file=sys.stderr)
        return 2
    sys.path.insert(0, args.suncet_dir)
    from src import losses  # the official module, imported as is

    os.makedirs(args.output_dir, exist_ok=True)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    write_clsa(args.output_dir, rng)
    write_suncet(args.output_dir, rng, losses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
