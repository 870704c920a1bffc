"""FGSM and PGD attacks on a linear-probe classifier (docs/METHODS.md §3.4, the MYOL repo's `adversarial_attack.py`).

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

`fgsm`, `pgd` and `robust_accuracy` run as `tf.function`s by default (the PGD
loop is a `tf.while_loop` in the graph; epsilon, step size, step count and
seed are tensor arguments, so each attack traces once per batch shape);
`compiled=False` runs the same maths eagerly, op by op. Both give the same
adversarial images (tests/test_attack.py).
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

    # Only the input is watched: no weight gradients (Conv2DBackpropFilter) are computed.
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(z)
        logits = model_fn(from_space(z))
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    return tape.gradient(loss, z)


def _fgsm_step(model_fn, to_space, from_space, pixels, labels, eps):
    import tensorflow as tf

    z = to_space(pixels)
    grad = _loss_gradient(model_fn, from_space, z, labels)
    return from_space(tf.clip_by_value(z + eps * tf.sign(grad), 0.0, 1.0))


def _random_start(z, eps, seed):
    """`z + U[-eps, eps]`, the uniform keyed on `seed`.

    Written as `z + eps * (2u - 1)` with u ~ U[0, 1): `z + uniform(minval=-eps, maxval=eps)`
    is an add chain (`rnd * range + minval + z`) that Grappler regroups inside a
    tf.function, so the compiled start would differ from the eager one by an ulp,
    enough to flip a gradient sign a few PGD steps later.
    """
    import tensorflow as tf

    key = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    return z + eps * (2.0 * tf.random.stateless_uniform(tf.shape(z), seed=key) - 1.0)


def _pgd_graph(model_fn, to_space, from_space, pixels, labels, seed, eps, steps, alpha, random_start):
    """PGD with its iterations in one `tf.while_loop`.

    Returns (adversarial pixels, [steps] max |z_adv - z| after the projection, before the clip).
    """
    import tensorflow as tf

    z = to_space(pixels)
    z_adv = _random_start(z, eps, seed) if random_start else z

    def body(i, z_adv, projected):
        grad = _loss_gradient(model_fn, from_space, z_adv, labels)
        z_adv = tf.clip_by_value(z_adv + alpha * tf.sign(grad), z - eps, z + eps)
        projected = projected.write(i, tf.reduce_max(tf.abs(z_adv - z)))
        return i + 1, tf.clip_by_value(z_adv, 0.0, 1.0), projected

    _, z_adv, projected = tf.while_loop(
        lambda i, *_: i < steps, body,
        (tf.constant(0), z_adv, tf.TensorArray(tf.float32, size=steps)))
    return from_space(z_adv), projected.stack()


# Compiled attacks: one tf.function per (model_fn, attack kind, attack space).
# Epsilon, step size, step count and seed are tensor arguments, so each traces
# once per batch shape. Bounded, so a long session does not pin every model.
_COMPILED = {}
_MAX_COMPILED = 32


def _as_key(values):
    return None if values is None else tuple(float(v) for v in np.ravel(values))


def _compiled(model_fn, kind, attack_space="pixel", mean=None, std=None, random_start=True):
    """The (cached) tf.function of `kind` ("fgsm", "pgd" or "correct") on `model_fn`."""
    import tensorflow as tf

    key = (kind, attack_space, _as_key(mean), _as_key(std), bool(random_start))
    try:
        key = (model_fn,) + key
        fn = _COMPILED.get(key)
    except TypeError:  # an unhashable callable: compile it, uncached
        key, fn = None, None
    if fn is not None:
        return fn
    to_space, from_space = space_transforms(attack_space, mean, std)
    if kind == "fgsm":
        def attack_fn(pixels, labels, eps):
            return _fgsm_step(model_fn, to_space, from_space, pixels, labels, eps)
    elif kind == "pgd":
        def attack_fn(pixels, labels, seed, eps, alpha, steps):
            return _pgd_graph(model_fn, to_space, from_space, pixels, labels, seed, eps, steps, alpha, random_start)
    elif kind == "correct":
        def attack_fn(pixels, labels):
            predicted = tf.argmax(model_fn(pixels), 1, output_type=tf.int64)
            return tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.int64))
    else:
        raise ValueError(f"kind must be 'fgsm', 'pgd' or 'correct'. Received: kind={kind!r}")
    fn = tf.function(attack_fn)
    if key is not None:
        if len(_COMPILED) >= _MAX_COMPILED:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = fn
    return fn


def fgsm(model_fn, pixels, labels, eps, *, attack_space="pixel", mean=None, std=None, compiled=True):
    """One FGSM step; returns the adversarial *pixels* (what the model is fed).

    Args:
        model_fn: differentiable map from float32 pixels [N, H, W, 3] to logits
            (a Keras model or callable, or a SavedModel endpoint).
        pixels: clean [0, 1] pixels.
        labels: int labels [N].
        eps: step size in the units of `attack_space`.
        attack_space: "pixel" or "normalized_clip01" (see the module docstring).
        mean, std: normalisation statistics (needed for "normalized_clip01").
        compiled: run as a `tf.function` (traced once per model, attack space
            and batch shape; eps is a tensor argument); False runs eagerly, op
            by op (same result).
    """
    import tensorflow as tf

    pixels = tf.convert_to_tensor(pixels, tf.float32)
    labels = tf.convert_to_tensor(labels, tf.int64)
    if compiled:
        return _compiled(model_fn, "fgsm", attack_space, mean, std)(pixels, labels, tf.cast(eps, tf.float32))
    to_space, from_space = space_transforms(attack_space, mean, std)
    return _fgsm_step(model_fn, to_space, from_space, pixels, labels, eps)


def pgd(model_fn, pixels, labels, eps, steps, *, alpha=None, random_start=True, seed=0,
        attack_space="pixel", mean=None, std=None, return_unclipped=False, compiled=True):
    """L-inf PGD as in the reference; returns the adversarial pixels.

    With `return_unclipped`, also returns the per-iteration maximum of
    |x_adv - x| (in attack-space units) measured after the projection and
    before the [0, 1] clip. `compiled` (default) runs the whole attack, the
    loop included, as one `tf.function`; False runs it eagerly. Both draw the
    same random start (`tf.random.stateless_uniform` keyed on `seed`).
    """
    import tensorflow as tf

    alpha = eps if alpha is None else alpha
    pixels = tf.convert_to_tensor(pixels, tf.float32)
    labels = tf.convert_to_tensor(labels, tf.int64)
    if compiled:
        fn = _compiled(model_fn, "pgd", attack_space, mean, std, random_start)
        out, projected = fn(pixels, labels, tf.cast(seed, tf.int64), tf.cast(eps, tf.float32),
                            tf.cast(alpha, tf.float32), tf.constant(int(steps), tf.int32))
        return (out, [float(p) for p in projected.numpy()]) if return_unclipped else out
    to_space, from_space = space_transforms(attack_space, mean, std)
    z = to_space(pixels)
    z_adv = _random_start(z, eps, seed) if random_start else z
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
                    batch_size=100, seed=0, verbose=True, compiled=True):
    """Clean and adversarial top-1 accuracy over `pixels` (already at the model's size), batched.

    Batch b's PGD random start is keyed on `seed + b`. `compiled` (default)
    runs each attack and the accuracy count as `tf.function`s, traced once per
    attack and batch shape; False runs everything eagerly (same accuracies).
    """
    import tensorflow as tf

    from myol_keras.evaluation.features import ProgressLine

    def count_correct(x, y):
        if compiled:
            return int(_compiled(model_fn, "correct")(x, tf.convert_to_tensor(y)))
        return int(np.sum(np.argmax(model_fn(x).numpy(), 1) == y))

    correct = {"clean": 0, **{a["name"]: 0 for a in attacks}}
    progress = ProgressLine(f"attacks ({attack_space})", len(pixels), enabled=verbose)
    for b, start in enumerate(range(0, len(pixels), batch_size)):
        x = tf.convert_to_tensor(pixels[start:start + batch_size], tf.float32)
        y = np.asarray(labels[start:start + batch_size], np.int64)
        correct["clean"] += count_correct(x, y)
        for a in attacks:
            if a["kind"] == "fgsm":
                x_adv = fgsm(model_fn, x, y, a["eps"], attack_space=attack_space, mean=mean, std=std, compiled=compiled)
            else:
                x_adv = pgd(model_fn, x, y, a["eps"], a["steps"], alpha=a["alpha"], seed=tf.constant(seed + b, tf.int64),
                            attack_space=attack_space, mean=mean, std=std, compiled=compiled)
            correct[a["name"]] += count_correct(x_adv, y)
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
