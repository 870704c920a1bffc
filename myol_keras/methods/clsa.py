"""CLSA: MoCo with a strongly augmented query that reproduces the weak query's similarities (METHODS §2.10).

Its flags (name, default, help, bounds, the constructor argument each feeds):
`clsa_settings.py`, importable without TensorFlow.

**Views.** Single-crop, as the CLSA code's `run_single.sh` (`--nmb_crops 1 1
--size_crops 224 96 --pick_weak 0 --pick_strong 1`): a weak query and a key,
both the weak recipe at the training size with crop scale (0.2, 1), and one
strong view: a crop at scale (0.086, 0.429) through the weak recipe and
RandAugment (`augment.clsa_strong_recipe`), at `strong_crop_size` — the code's
96/224 of the weak size, rounded, and never below the backbone's minimum
(`backbones.minimum_image_size`: 9 px for the CIFAR stem, 17 for the 64-px
one): 32 px -> 14, 64 -> 27, 96 -> 41, 16 -> 9. The crop scales are areas
relative to the image, so they carry over unchanged. Multi-crop (the code's
five sizes) is not offered. The code's Gaussian blur is left out, as in every
small-image recipe of this library (METHODS §1.6).
"""

import keras

from myol_keras import augment
from myol_keras import backbones
from myol_keras import losses
from myol_keras.methods.contrastive import MoCo

#: the CLSA code's single-crop setting: weak 224 px, strong 96 px at scale (0.086, 0.429).
CODE_WEAK_SIZE, CODE_STRONG_SIZE = 224, 96
STRONG_SCALE = (0.086, 0.429)


def auto_stem(image_size):
    """The stem `--stem=auto` picks for `image_size` (`training.plan_run`'s rule)."""
    return "64px" if image_size >= 64 else "cifar"


def strong_crop_size(image_size, stem=None, requested=0):
    """Side of CLSA's strong view for training images of side `image_size`.

    `requested` (> 0) is taken as is; 0 scales the code's 96 px strong crop of a
    224 px weak one to `image_size`: `round(image_size * 96 / 224)`, raised to
    the minimum input of the backbone's stem. Raises `ValueError` for a
    requested size below that minimum.

    Args:
        image_size: the training (weak view) size.
        stem: the ResNet stem, `"cifar"` or `"64px"`; None: the `auto` rule.
        requested: the `--clsa_strong_size` setting (0: scaled).

    Example:
    >>> strong_crop_size(32), strong_crop_size(64), strong_crop_size(16)
    (14, 27, 9)
    """
    stem = stem or auto_stem(image_size)
    minimum = backbones.minimum_image_size(stem)
    if requested:
        if requested < minimum:
            raise ValueError(f"--clsa_strong_size={requested} is below the minimum of {minimum} px for the {stem!r} "
                             f"stem; use --clsa_strong_size={minimum} or more (0: {CODE_STRONG_SIZE}/{CODE_WEAK_SIZE} "
                             "of the training size)")
        return int(requested)
    return max(minimum, int(round(image_size * CODE_STRONG_SIZE / CODE_WEAK_SIZE)))


@keras.saving.register_keras_serializable(package="myol_keras")
class CLSA(MoCo):
    """CLSA (Wang & Qi) as in `maple-research-lab/CLSA` `model/CLSA.py` (METHODS §2.10).

    Views `(x_w, x_k, x_s)`: weak query, key, strong query (`make_view_fn`).
    `q_w = n(enc_q(x_w))`, `q_s = n(enc_q(x_s))`, `k = n(sg(enc_k(x_k)))` with
    MoCo's networks: `enc = f + Linear-ReLU-Linear` (no BatchNorm in the head,
    as the code's `mlp=True`), `enc_k` the EMA target (`EMATargetUpdate`; the
    code's m is 0.999, `--ema=0.999`). With `form="code"` the logits are
    `[q k^T, q Q^T] / T`, B x (B+K), row i labelled i, so the batch's other
    keys are extra negatives; `form="paper"`: `[q.k, q Q^T] / T`, label 0.

    `L = CE(logits(q_w)) + alpha * L_DDM`, `L_DDM = -mean_i sum_c p_w log p_s`
    with `p_w = softmax(sg(logits(q_w)) / T2)`, `p_s = softmax(logits(q_s) / T2)`
    (`losses.ddm_loss`). `symmetric=True` is the code's `--sym 1`: `x_k` is a
    weak query too, scored against `k2 = n(sg(enc_k(x_w)))` (both terms again,
    summed as the code sums them) and `k2` is enqueued instead of `k`. The
    code permutes `k2` with the key batch's shuffle-BN permutation without
    having shuffled `x_w` (`_batch_unshuffle_ddp(k2, ...)`), which misaligns
    its positives; here `k2` stays aligned.

    **The key encoder's BatchNorm** is MoCo's here: the keys go through
    `enc_k` in training mode, normalised with the statistics of their own
    batch, with no shuffle. The code's shuffle-BN permutes the keys across
    GPUs so that a GPU's key statistics come from other samples than its
    queries (a leak of the batch through BN that the queries could exploit).
    On one device the code shuffles within the batch, which leaves every BN
    statistic unchanged, so one-device training is the same computation;
    under a `tf.distribute` strategy each replica normalises its keys over
    its own sub-batch (`--sync_batchnorm` over the global batch) instead of a
    random cross-replica subset.

    The queue (`[K, d]`, N(0, 1) rows L2-normalised) and its pointer are
    non-trainable model variables, so the run's checkpoint holds them and a
    resumed run continues with the queue it had.

    Args:
        backbone: `keras.Model` from normalised images to features.
        queue_size: K (the code: 65536 on ImageNet).
        temperature: T of the contrastive term (0.2).
        ddm_temperature: T2 of both DDM distributions (0.2).
        alpha: weight of the DDM term (1).
        form: `"code"` (default) or `"paper"` logits.
        symmetric: the code's symmetric variant.
        strong_size: side of the strong view, 0 for `strong_crop_size`'s
            mapping (read by the data pipeline, recorded here).
        **kwargs: the `BootstrapMethod` arguments.

    Example:
    ```python
    model = CLSA(myol_keras.ResNet(18, width=16), queue_size=4096)
    view_fn = CLSA.make_view_fn(32, mean, std, seed=0)  # (weak query, key, strong query)
    ```
    """

    loss_term_names = ("contrastive_loss", "ddm_loss")
    num_views = 3

    def __init__(self, backbone, queue_size=4096, temperature=0.2, ddm_temperature=0.2, alpha=1.0, form="code",
                 symmetric=False, strong_size=0, **kwargs):
        if not ddm_temperature > 0:
            raise ValueError(f"Expected `ddm_temperature` > 0. Received: ddm_temperature={ddm_temperature}")
        if not alpha >= 0:
            raise ValueError(f"Expected `alpha` >= 0. Received: alpha={alpha}")
        if form not in ("code", "paper"):
            raise ValueError(f"Expected `form` in ('code', 'paper'). Received: form={form!r}")
        if not isinstance(strong_size, int) or strong_size < 0:
            raise ValueError(f"Expected `strong_size` to be an int >= 0. Received: strong_size={strong_size!r}")
        super().__init__(backbone, queue_size=queue_size, temperature=temperature, **kwargs)
        self.ddm_temperature = float(ddm_temperature)
        self.alpha = float(alpha)
        self.form = form
        self.symmetric = bool(symmetric)
        self.strong_size = strong_size

    @classmethod
    def make_view_fn(cls, image_size, mean, std, seed=0, strong_size=0, stem=None):
        """`(batch, seed) -> (weak query, key, strong query)`: two weak views and one strong one.

        Args:
            image_size: size of the weak views.
            mean, std: normalisation statistics.
            seed: the run's seed (view `i` recipes seeded with `seed + 1000 i`).
            strong_size: side of the strong view; 0: `strong_crop_size(image_size, stem)`.
            stem: the backbone's stem (for the minimum size); None: the auto rule.
        """
        size = strong_crop_size(image_size, stem, strong_size)
        weak = [augment.myol_view_recipe(image_size, mean, std, seed=seed + 1000 * i) for i in range(2)]
        strong = augment.clsa_strong_recipe(size, mean, std, scale=STRONG_SCALE, seed=seed + 2000)
        return augment.make_view_fn([*weak, strong])

    @classmethod
    def resolve_inputs(cls, config, plan):
        """The view settings of a run (`methods.inputs`): the strong size, checked against the stem."""
        from myol_keras.methods import inputs

        size = strong_crop_size(plan.image_size, plan.stem, config.clsa_strong_size)
        return inputs.MethodInputs(view_options={"strong_size": size, "stem": plan.stem},
                                   facts={"clsa_strong_size": size})

    def compute_targets(self, views):
        """`[k]` (and `k2`, the keys of the weak-query view, when symmetric): normalised, no gradient."""
        keys = [losses.l2_normalize(self.target_forward(views[1]))]
        if self.symmetric:
            keys.append(losses.l2_normalize(self.target_forward(views[0])))
        return keys

    def _terms(self, q, q_strong, k):
        contrastive = losses.clsa_contrastive_loss(q, k, self.queue, self.temperature, self.form)
        ddm = losses.ddm_loss(q, q_strong, k, self.queue, self.ddm_temperature, self.form)
        return contrastive, ddm

    def compute_loss_terms(self, views, targets, seed):
        x_weak, x_key, x_strong = views
        if self.symmetric:
            (q, _), (q_key, _) = self.online_forward_views([x_weak, x_key])
        else:
            q, _ = self.online_forward(x_weak)
        q_strong, _ = self.online_forward(x_strong)
        contrastive, ddm = self._terms(q, q_strong, targets[0])
        if self.symmetric:
            more_contrastive, more_ddm = self._terms(q_key, q_strong, targets[1])
            contrastive, ddm = contrastive + more_contrastive, ddm + more_ddm
        loss = contrastive + self.alpha * ddm
        return {"loss": loss, "contrastive_loss": contrastive, "ddm_loss": ddm, "z": q}

    def after_step(self, views, targets, terms):
        queue, pointer = losses.enqueue(self.queue, targets[-1], self.queue_pointer)
        self.queue.assign(queue)
        self.queue_pointer.assign(pointer)

    def get_config(self):
        config = super().get_config()
        config.update({"ddm_temperature": self.ddm_temperature, "alpha": self.alpha, "form": self.form,
                       "symmetric": self.symmetric, "strong_size": self.strong_size})
        return config
