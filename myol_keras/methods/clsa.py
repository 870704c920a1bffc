"""CLSA: MoCo with a strongly augmented query that reproduces the weak query's similarities (METHODS §2.10).

Its flags (name, default, help, bounds, the constructor argument each feeds):
`clsa_settings.py`, importable without TensorFlow. Its views and their
sizes: `clsa_views.py`.

**Views** (`--clsa_crops`). `single` (the default), as the CLSA code's
`run_single.sh` (`--nmb_crops 1 1 --size_crops 224 96 --pick_weak 0
--pick_strong 1`): a weak query and a key, both the weak recipe at the
training size with crop scale (0.2, 1), and one strong view: a crop at scale
(0.086, 0.429) through the weak recipe and RandAugment
(`augment.clsa_strong_recipe`), at `strong_crop_size` — the code's 96/224 of
the weak size, rounded, and never below the backbone's minimum
(`backbones.minimum_image_size`: 9 px for the CIFAR stem, 17 for the 64-px
one): 32 px -> 14, 64 -> 27, 96 -> 41, 16 -> 9.

`multi`, as the code's `run_multi.sh` (`--size_crops 224 192 160 128 96
--min_scale_crops 0.2 0.172 0.143 0.114 0.086 --max_scale_crops 1.0 0.86
0.715 0.571 0.429 --pick_weak 0 1 2 3 4 --pick_strong 0 1 2 3 4`): the key
and, at each of the five sides scaled the same way (`multi_crop_sizes`:
32 px -> 32, 27, 23, 18, 14; 16 px -> 16, 14, 11, 9, 9, sides that collide
at the floor kept), a weak and a strong query with that crop's scale range:
11 views, each of its own side a tensor of its own.

The crop scales are areas relative to the image, so they carry over
unchanged. The code's Gaussian blur is left out, as in every small-image
recipe of this library (METHODS §1.6).

**Loss.** Every weak query has a contrastive term and every (weak, strong)
pair a DDM term, and the terms are **summed**, as the code's `train.py`
does (`loss = sum L_c + alpha * sum L_DDM`), not averaged: multi-crop's
loss has 5 + 25 terms where single-crop's has 1 + 1 (each near log(B + K)
at the start, so the loss and its gradient are about 15 times larger), and
the code trains both with the same lr 0.03. The logged `contrastive_loss`
and `ddm_loss` are those sums.
"""

import keras

from myol_keras import losses
from myol_keras.methods import clsa_views
from myol_keras.methods.clsa_views import (  # noqa: F401  (public here since single-crop CLSA)
    CODE_STRONG_SIZE,
    CODE_WEAK_SIZE,
    STRONG_SCALE,
    auto_stem,
    multi_crop_sizes,
    strong_crop_size,
)
from myol_keras.methods.contrastive import MoCo


@keras.saving.register_keras_serializable(package="myol_keras")
class CLSA(MoCo):
    """CLSA (Wang & Qi) as in `maple-research-lab/CLSA` `model/CLSA.py` (METHODS §2.10).

    Views (`make_view_fn`, `clsa_views`): single-crop `(x_w, x_k, x_s)`,
    weak query, key, strong query; multi-crop `(x_w0, x_k, x_w1, ..., x_w4,
    x_s0, ..., x_s4)`. `q = n(enc_q(x))` for every weak and strong query,
    `k = n(sg(enc_k(x_k)))` with MoCo's networks: `enc = f + Linear-ReLU-Linear`
    (no BatchNorm in the head, as the code's `mlp=True`), `enc_k` the EMA
    target (`EMATargetUpdate`; the code's m is 0.999, `--ema=0.999`). With
    `form="code"` the logits are `[q k^T, q Q^T] / T`, B x (B+K), row i
    labelled i, so the batch's other keys are extra negatives — for every
    weak and strong query, as the code builds them in both its loops;
    `form="paper"`: `[q.k, q Q^T] / T`, label 0.

    `L = sum_i CE(logits(q_wi)) + alpha * sum_{i,j} L_DDM(q_wi, q_sj)`,
    `L_DDM = -mean_b sum_c p_w log p_s` with `p_w = softmax(sg(logits(q_w)) / T2)`,
    `p_s = softmax(logits(q_s) / T2)` (`losses.ddm_loss`): one weak and one
    strong query single-crop, five of each multi-crop (5 + 25 terms), summed
    as the code's `train.py` sums them. `symmetric=True` is the code's
    `--sym 1`: the code appends `q_k = n(enc_q(x_k))` to the weak queries and
    scores all of them but that last one against `k` (first loop) and all
    but the first — `x_w1..x_w4` and `x_k` — against `k2 = n(sg(enc_k(x_w0)))`
    (second loop), each with every strong query, and enqueues `k2` instead
    of `k`: single-crop 2 + 2 terms, multi-crop 10 + 50. The code permutes
    `k2` with the key batch's shuffle-BN permutation without having shuffled
    `x_w0` (`_batch_unshuffle_ddp(k2, ...)`), which misaligns its positives;
    here `k2` stays aligned.

    **The key encoder's BatchNorm** is MoCo's here: the keys go through
    `enc_k` in training mode, normalised with the statistics of their own
    batch, with no shuffle. The code's shuffle-BN permutes the keys across
    GPUs so that a GPU's key statistics come from other samples than its
    queries (a leak of the batch through BN that the queries could exploit).
    On one device the code shuffles within the batch, which leaves every BN
    statistic unchanged, so one-device training is the same computation;
    under a `tf.distribute` strategy each replica normalises its keys over
    its own sub-batch (`--sync_batchnorm` over the global batch) instead of a
    random cross-replica subset. Every query batch is normalised with its
    own statistics, as the code's one encoder call per crop.

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
        strong_size: single-crop: side of the strong view, 0 for
            `strong_crop_size`'s mapping (read by the data pipeline, recorded
            here); must be 0 multi-crop.
        crops: `"single"` (3 views) or `"multi"` (11 views).
        **kwargs: the `BootstrapMethod` arguments.

    Example:
    ```python
    model = CLSA(myol_keras.ResNet(18, width=16), queue_size=4096, crops="multi")
    view_fn = CLSA.make_view_fn(32, mean, std, seed=0, crops="multi")  # 11 views, sides 32 27 23 18 14
    ```
    """

    loss_term_names = ("contrastive_loss", "ddm_loss")
    #: single-crop's; an instance's is `clsa_views.num_views(crops)`.
    num_views = 3

    def __init__(self, backbone, queue_size=4096, temperature=0.2, ddm_temperature=0.2, alpha=1.0, form="code",
                 symmetric=False, strong_size=0, crops="single", **kwargs):
        if not ddm_temperature > 0:
            raise ValueError(f"Expected `ddm_temperature` > 0. Received: ddm_temperature={ddm_temperature}")
        if not alpha >= 0:
            raise ValueError(f"Expected `alpha` >= 0. Received: alpha={alpha}")
        if form not in ("code", "paper"):
            raise ValueError(f"Expected `form` in ('code', 'paper'). Received: form={form!r}")
        if not isinstance(strong_size, int) or strong_size < 0:
            raise ValueError(f"Expected `strong_size` to be an int >= 0. Received: strong_size={strong_size!r}")
        clsa_views.check_crops(crops)
        if crops == "multi" and strong_size:
            raise ValueError("Expected `strong_size` 0 with crops='multi' (its sides are `multi_crop_sizes`). "
                             f"Received: strong_size={strong_size!r}")
        super().__init__(backbone, queue_size=queue_size, temperature=temperature, **kwargs)
        self.ddm_temperature = float(ddm_temperature)
        self.alpha = float(alpha)
        self.form = form
        self.symmetric = bool(symmetric)
        self.strong_size = strong_size
        self.crops = crops
        self.num_views = clsa_views.num_views(crops)

    @classmethod
    def make_view_fn(cls, image_size, mean, std, seed=0, strong_size=0, stem=None, crops="single"):
        """`(batch, seed) -> views`: single-crop (weak query, key, strong query), multi-crop 11 views.

        Args:
            image_size: size of the key and the first weak query.
            mean, std: normalisation statistics.
            seed: the run's seed (view `i` recipes seeded with `seed + 1000 i`).
            strong_size: single-crop side of the strong view; 0: `strong_crop_size(image_size, stem)`.
            stem: the backbone's stem (for the minimum size); None: the auto rule.
            crops: `"single"` or `"multi"` (sides `multi_crop_sizes(image_size, stem)`).
        """
        return clsa_views.make_view_fn(image_size, mean, std, seed, crops, strong_size, stem)

    @classmethod
    def resolve_inputs(cls, config, plan):
        """The view settings of a run (`methods.inputs`): the crop sides, checked against the stem."""
        from myol_keras.methods import inputs

        crops = config.clsa_crops
        options = {"crops": crops, "stem": plan.stem}
        if crops == "multi":
            return inputs.MethodInputs(view_options=options,
                                       facts={"clsa_crop_sizes": multi_crop_sizes(plan.image_size, plan.stem)})
        size = strong_crop_size(plan.image_size, plan.stem, config.clsa_strong_size)
        return inputs.MethodInputs(view_options={**options, "strong_size": size}, facts={"clsa_strong_size": size})

    def split_views(self, views):
        """`(weak queries, key view, strong queries)` of a batch's views (see the class docstring)."""
        if self.crops == "single":
            return [views[0]], views[1], [views[2]]
        n = len(clsa_views.MULTI_CODE_SIZES)
        return [views[0], *views[2:n + 1]], views[1], list(views[n + 1:])

    def compute_targets(self, views):
        """`[k]` (and `k2`, the keys of the first weak query's view, when symmetric): normalised, no gradient."""
        weak, key_view, _ = self.split_views(views)
        keys = [losses.l2_normalize(self.target_forward(key_view))]
        if self.symmetric:
            keys.append(losses.l2_normalize(self.target_forward(weak[0])))
        return keys

    def _queries(self, images):
        """The online projections of `images`, runs of equal-sized batches through `online_forward_views`."""
        out, start = [], 0
        while start < len(images):
            end = start + 1
            shape = tuple(images[start].shape[1:])
            while end < len(images) and None not in shape and tuple(images[end].shape[1:]) == shape:
                end += 1
            out.extend(z for z, _ in self.online_forward_views(images[start:end]))
            start = end
        return out

    def _summed_terms(self, weak_queries, strong_queries, k):
        """`(sum_i L_c(q_wi), sum_ij L_DDM(q_wi, q_sj))` against the keys `k`: each weak query with each strong one."""
        def ddm_logits(q):
            return losses.clsa_logits(q, k, self.queue, self.ddm_temperature, self.form)[0]

        strong_logits = [ddm_logits(q) for q in strong_queries]
        contrastive = ddm = 0.0
        for q in weak_queries:
            contrastive += losses.clsa_contrastive_loss(q, k, self.queue, self.temperature, self.form)
            weak_logits = ddm_logits(q)
            for logits in strong_logits:
                ddm += losses.distribution_divergence(weak_logits, logits)
        return contrastive, ddm

    def compute_loss_terms(self, views, targets, seed):
        weak, key_view, strong = self.split_views(views)
        queries = self._queries([*weak, key_view] if self.symmetric else weak)
        strong_queries = self._queries(strong)
        contrastive, ddm = self._summed_terms(queries[:len(weak)], strong_queries, targets[0])
        if self.symmetric:  # the code's second loop: every weak query but the first, and the key view's
            more_contrastive, more_ddm = self._summed_terms(queries[1:], strong_queries, targets[1])
            contrastive, ddm = contrastive + more_contrastive, ddm + more_ddm
        loss = contrastive + self.alpha * ddm
        return {"loss": loss, "contrastive_loss": contrastive, "ddm_loss": ddm, "z": queries[0]}

    def after_step(self, views, targets, terms):
        queue, pointer = losses.enqueue(self.queue, targets[-1], self.queue_pointer)
        self.queue.assign(queue)
        self.queue_pointer.assign(pointer)

    def get_config(self):
        config = super().get_config()
        config.update({"ddm_temperature": self.ddm_temperature, "alpha": self.alpha, "form": self.form,
                       "symmetric": self.symmetric, "strong_size": self.strong_size, "crops": self.crops})
        return config
