"""FGSM and PGD attacks on a linear-probe classifier (METHODS §3.4, the MYOL repo's `adversarial_attack.py`).

    python -m myol_keras.evaluation.attack --classifier=saved_models/byol-cifar10-linear

The classifier export (encoder + linear head, BatchNorm in inference mode) is
attacked through its differentiable `serve_pixels` endpoint, on the test
split, batch 100, with the cross-entropy of the true label:

* FGSM: `x_adv = clip(x + eps * sign(grad), 0, 1)`, eps in {4/255, 8/255}.
* PGD: eps = 4/255, step alpha = eps, {8, 16} iterations, random start
  `x + U[-eps, eps]` (not clipped); each iteration steps by alpha * sign(grad),
  projects onto `[x - eps, x + eps]`, then clips to [0, 1].

`attack_space` says where `x` lives:

* `"pixel"` (default): [0, 1] image pixels; the model normalises inside. eps
  is in pixel units (4/255 = four grey levels).
* `"normalized_clip01"` (faithful): the reference attacks the already
  normalised tensor, so eps is in normalised units (about eps * sigma in pixels)
  and the [0, 1] clip runs in normalised space: every value below the channel
  mean becomes the mean, every value above mean + std is capped there (the
  CIFAR-10 red pixel 0.10 becomes 0.4914 even with eps = 0).

Images are first centre-cropped to a square and resized to the classifier's
image size (`myol_keras.preprocessing.resize_pixels`, the rule of its
endpoint), so the perturbation lives at the resolution the model sees.
Metric: top-1 accuracy on the adversarial test images, next to the clean one.
"""

import time

import numpy as np
from absl import flags

from myol_keras import cli

PROG = "myol_keras.evaluation.attack"
ATTACK_SPACES = ("pixel", "normalized_clip01")
EPSILON_HINT = "write e.g. 8/255 for eight grey levels"

FLAGS = flags.FlagValues()
flags.DEFINE_string("classifier", None, "Classifier export: saved_models/<name>-linear[/<version>].", flag_values=FLAGS)
cli.require(FLAGS, "classifier", "saved_models/<name>-linear, from the linear probe")
flags.DEFINE_string("dataset", "", "Labelled dataset (default: the one the probe was trained on).", flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "Data directory / file of the dataset.", flag_values=FLAGS)
flags.DEFINE_bool("download", True, "Let tfds download a missing dataset.", flag_values=FLAGS)
flags.DEFINE_enum("attack_space", "pixel", list(ATTACK_SPACES),
                  "pixel: attack [0, 1] pixels (default); normalized_clip01: the reference's attack on the "
                  "normalised tensor with a [0, 1] clip there.", flag_values=FLAGS)
cli.DEFINE_list_of("fgsm_eps", ["4/255", "8/255"], "FGSM epsilons (numbers or fractions like 8/255).",
                   cli.FractionParser(0, 1, EPSILON_HINT), FLAGS)
cli.DEFINE_fraction("pgd_eps", "4/255", "PGD epsilon.", FLAGS, lower_bound=0, upper_bound=1, hint=EPSILON_HINT)
cli.DEFINE_fraction("pgd_alpha", None, "PGD step size (default: = --pgd_eps, as in the reference).", FLAGS,
                    lower_bound=0, upper_bound=1, hint=EPSILON_HINT)
cli.DEFINE_list_of("pgd_steps", ["8", "16"], "PGD iteration counts.", flags.IntegerParser(lower_bound=1), FLAGS)
flags.DEFINE_integer("batch_size", 100, "Test batch size (100 in the reference).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("max_images", 0, "Attack only the first N test images (0: all).", lower_bound=0,
                     flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the PGD random start.", flag_values=FLAGS)


def check_epsilon(eps, name="eps"):
    """`eps` as a float; raises `ValueError` unless 0 <= eps <= 1."""
    if not 0.0 <= float(eps) <= 1.0 or not np.isfinite(eps):
        raise ValueError(f"{name}={eps:g} is outside [0, 1] ({EPSILON_HINT})")
    return float(eps)


def space_transforms(attack_space, mean=None, std=None):
    """(to_space, from_space): pixels <-> the space the attack perturbs and clips in."""
    import tensorflow as tf

    if attack_space == "pixel":
        return (lambda p: p), (lambda z: z)
    if attack_space == "normalized_clip01":
        if mean is None or std is None:
            raise ValueError("attack_space='normalized_clip01' needs the mean and std")
        m = tf.constant(mean, tf.float32)
        s = tf.constant(std, tf.float32)
        return (lambda p: (p - m) / s), (lambda z: z * s + m)
    raise ValueError(f"attack_space must be one of {ATTACK_SPACES}. Received: attack_space={attack_space!r}")


def _loss_gradient(model_fn, from_space, z, labels):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(z)
        logits = model_fn(from_space(z))
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    return tape.gradient(loss, z)


def fgsm(model_fn, pixels, labels, eps, *, attack_space="pixel", mean=None, std=None):
    """One FGSM step; returns the adversarial *pixels* (what the model is fed).

    Args:
        model_fn: differentiable map from float32 pixels [N, H, W, 3] to logits.
        pixels: clean [0, 1] pixels.
        labels: int labels [N].
        eps: step size in the units of `attack_space`.
        attack_space: "pixel" or "normalized_clip01" (see the module docstring).
        mean, std: normalisation statistics (needed for "normalized_clip01").
    """
    import tensorflow as tf

    to_space, from_space = space_transforms(attack_space, mean, std)
    z = to_space(tf.convert_to_tensor(pixels, tf.float32))
    labels = tf.convert_to_tensor(labels, tf.int64)
    grad = _loss_gradient(model_fn, from_space, z, labels)
    return from_space(tf.clip_by_value(z + eps * tf.sign(grad), 0.0, 1.0))


def pgd(model_fn, pixels, labels, eps, steps, *, alpha=None, random_start=True, seed=0,
        attack_space="pixel", mean=None, std=None, return_unclipped=False):
    """L-inf PGD as in the reference; returns the adversarial pixels.

    With `return_unclipped`, also returns the per-iteration maximum of
    |x_adv - x| (in attack-space units) measured after the projection and
    before the [0, 1] clip.
    """
    import tensorflow as tf

    alpha = eps if alpha is None else alpha
    to_space, from_space = space_transforms(attack_space, mean, std)
    z = to_space(tf.convert_to_tensor(pixels, tf.float32))
    labels = tf.convert_to_tensor(labels, tf.int64)
    z_adv = z
    if random_start:
        z_adv = z + tf.random.stateless_uniform(tf.shape(z), seed=tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)]), minval=-eps, maxval=eps)
    projected = []
    for _ in range(int(steps)):
        grad = _loss_gradient(model_fn, from_space, z_adv, labels)
        z_adv = z_adv + alpha * tf.sign(grad)
        z_adv = tf.clip_by_value(z_adv, z - eps, z + eps)
        if return_unclipped:
            projected.append(float(tf.reduce_max(tf.abs(z_adv - z))))
        z_adv = tf.clip_by_value(z_adv, 0.0, 1.0)
    out = from_space(z_adv)
    return (out, projected) if return_unclipped else out


def default_attacks(fgsm_eps=(4 / 255, 8 / 255), pgd_eps=4 / 255, pgd_steps=(8, 16), pgd_alpha=None):
    """The reference's attack list: [{"name", "kind", "eps", "steps", "alpha"}]."""
    attacks = [{"name": f"fgsm({_fraction(e)})", "kind": "fgsm", "eps": float(e)} for e in fgsm_eps]
    attacks += [{"name": f"pgd({int(s)})", "kind": "pgd", "eps": float(pgd_eps), "steps": int(s),
                 "alpha": float(pgd_eps if pgd_alpha is None else pgd_alpha)} for s in pgd_steps]
    return attacks


def _fraction(eps):
    n = eps * 255
    return f"{round(n)}/255" if abs(n - round(n)) < 1e-6 else f"{eps:g}"


def robust_accuracy(model_fn, pixels, labels, attacks, *, attack_space="pixel", mean=None, std=None,
                    batch_size=100, seed=0, verbose=True):
    """Clean and adversarial top-1 accuracy over `pixels` (already at the model's size), batched."""
    import tensorflow as tf

    from myol_keras.evaluation.features import ProgressLine

    correct = {"clean": 0, **{a["name"]: 0 for a in attacks}}
    progress = ProgressLine(f"attacks ({attack_space})", len(pixels), enabled=verbose)
    for b, start in enumerate(range(0, len(pixels), batch_size)):
        x = tf.convert_to_tensor(pixels[start:start + batch_size], tf.float32)
        y = np.asarray(labels[start:start + batch_size], np.int64)
        correct["clean"] += int(np.sum(np.argmax(model_fn(x).numpy(), 1) == y))
        for a in attacks:
            if a["kind"] == "fgsm":
                x_adv = fgsm(model_fn, x, y, a["eps"], attack_space=attack_space, mean=mean, std=std)
            else:
                x_adv = pgd(model_fn, x, y, a["eps"], a["steps"], alpha=a["alpha"], seed=tf.constant(seed + b, tf.int64),
                            attack_space=attack_space, mean=mean, std=std)
            correct[a["name"]] += int(np.sum(np.argmax(model_fn(x_adv).numpy(), 1) == y))
        progress.update(len(y))
    seconds = progress.close()
    n = max(len(pixels), 1)
    return {name: c / n for name, c in correct.items()}, seconds


def attack_evaluate(classifier, dataset="", data_dir=None, *, attack_space="pixel", fgsm_eps=(4 / 255, 8 / 255),
                    pgd_eps=4 / 255, pgd_steps=(8, 16), pgd_alpha=None, batch_size=100, max_images=0,
                    seed=0, download=True, verbose=True):
    """Clean and robust accuracy of a classifier export; appends the record to the run's results.json.

    Raises:
        ValueError: an unknown attack space, an epsilon outside [0, 1], a step count or
            batch size below 1 (checked before anything is loaded), or an encoder export.

    Example:
    ```python
    attack_evaluate("saved_models/byol-cifar10-linear")["accuracy"]["pgd(16)"]
    ```
    """
    from myol_keras.evaluation import common, features
    from myol_keras.preprocessing import resize_pixels

    if attack_space not in ATTACK_SPACES:
        raise ValueError(f"Expected `attack_space` to be one of {', '.join(ATTACK_SPACES)}. "
                         f"Received: attack_space={attack_space!r}")
    for e in list(fgsm_eps) + [pgd_eps] + ([] if pgd_alpha is None else [pgd_alpha]):
        check_epsilon(e, "epsilon")
    common.check_positive_ints(batch_size=batch_size, **{f"pgd_steps[{i}]": s for i, s in enumerate(pgd_steps)})
    start = time.perf_counter()
    model = features.load_export(classifier, expect="classifier")
    dataset, data_dir = common.resolve_dataset(model.metadata, dataset, data_dir)
    images, labels, _ = features.load_labelled_arrays(dataset, "test", data_dir, download, max_images or None)
    pixels = resize_pixels(images, model.image_size).numpy()

    def model_fn(p):
        return model.serve_pixels(p)["logits"]

    attacks = default_attacks(fgsm_eps, pgd_eps, pgd_steps, pgd_alpha)
    accuracy, attack_seconds = robust_accuracy(model_fn, pixels, labels, attacks, attack_space=attack_space,
                                               mean=model.mean, std=model.std, batch_size=batch_size,
                                               seed=seed, verbose=verbose)
    result = {
        "evaluation": "attack",
        "classifier": model.path,
        "dataset": dataset,
        "attack_space": attack_space,
        "num_test": int(len(labels)),
        "accuracy": accuracy,
        "attacks": attacks,
        "curve": [{"attack": "fgsm", "eps": 0.0, "accuracy": accuracy["clean"]}]
        + [{"attack": a["kind"], "eps": a["eps"], "steps": a.get("steps"), "accuracy": accuracy[a["name"]]}
           for a in attacks],
        "attack_seconds": attack_seconds,
        "seconds": time.perf_counter() - start,
    }
    result["results_file"] = features.append_result(model.run_dir, result)
    return result


def _run():
    result = cli.call_with_flags(attack_evaluate, FLAGS)
    table = "  ".join(f"{k} {v:.4f}" for k, v in result["accuracy"].items())
    print(f"{PROG}: {result['attack_space']} space, {result['num_test']} images: {table} ({result['seconds']:.1f} s)")


main = cli.entry_point(PROG, FLAGS, _run, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
