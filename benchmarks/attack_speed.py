"""Eager vs compiled `attack.robust_accuracy` (issue 18): images/s of each, alternating repetitions.

    python benchmarks/attack_speed.py --images=200 --repetitions=3

The model is protocol Q1's encoder shape, randomly initialised (speed does not
depend on the weights): pixels in [0, 1] -> CIFAR-10 normalisation -> ResNet-18
(CIFAR stem, width 16, inference-mode BatchNorm) -> Dense(10), at 32 px. Each
repetition evaluates the default attack list (FGSM 4/255 and 8/255, PGD 8 and 16
steps; 26 gradient passes and 5 forward passes per batch) on `--images` random
images in batches of 100, once eagerly (`compiled=False`) and once compiled, in
alternating order; one untimed call of each comes first (tracing, allocator
warm-up) and is reported separately. `--reference=PATH` also times another
attack.py's eager `robust_accuracy` (e.g. the one before the compiled path:
`git show bf646aa:myol_keras/evaluation/attack.py > /tmp/attack_eager.py`).
The adversarial accuracies of all variants are checked to be equal.

Caveat (TensorFlow 2.21, oneDNN CPU build): the eager path can die with SIGSEGV
or SIGABRT inside the eager Conv2DBackpropFilter kernel, which eager autodiff
runs for every convolution even though only the input gradient is used (seen
at batch 5, 32 px, width 4 and once at batch 100, width 16; not reproducible
on demand). The compiled path prunes the unused weight gradients and has not
crashed; `TF_ENABLE_ONEDNN_OPTS=0` avoids the crash for the eager one.
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure the checkout this script is in


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--attack_space", default="pixel")
    parser.add_argument("--reference", default=None, help="another attack.py whose robust_accuracy is timed too (eager)")
    parser.add_argument("--output", default=None, help="also write the measurements here (JSON)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from bench_common import cpu_info, load_average  # noqa: E402  (benchmarks/ is on the path as the script's dir)
    from myol_keras.backbones import ResNet
    from myol_keras.data import NORMALIZATIONS
    from myol_keras.evaluation import attack

    load_before = load_average()
    keras.utils.set_random_seed(0)
    backbone = ResNet(depth=18, stem="cifar", width=args.width)
    head = keras.layers.Dense(10)
    mean, std = NORMALIZATIONS["cifar10"]
    m, s = tf.constant(mean), tf.constant(std)

    def model_fn(pixels):
        return head(backbone((pixels - m) / s, training=False))

    rng = np.random.default_rng(0)
    pixels = rng.uniform(size=(args.images, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, size=args.images)
    attacks = attack.default_attacks()
    variants = {"eager": lambda: attack.robust_accuracy(model_fn, pixels, labels, attacks, attack_space=args.attack_space,
                                                        mean=mean, std=std, batch_size=args.batch_size, verbose=False,
                                                        compiled=False),
                "compiled": lambda: attack.robust_accuracy(model_fn, pixels, labels, attacks, attack_space=args.attack_space,
                                                           mean=mean, std=std, batch_size=args.batch_size, verbose=False)}
    if args.reference:
        spec = importlib.util.spec_from_file_location("_reference_attack", args.reference)
        reference = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(reference)
        variants["reference_eager"] = lambda: reference.robust_accuracy(
            model_fn, pixels, labels, attacks, attack_space=args.attack_space, mean=mean, std=std,
            batch_size=args.batch_size, verbose=False)

    def timed(fn):
        start = time.perf_counter()
        accuracy, _ = fn()
        return time.perf_counter() - start, accuracy

    first, accuracies, seconds = {}, {}, {name: [] for name in variants}
    for name, fn in variants.items():
        first[name], accuracies[name] = timed(fn)
    for rep in range(args.repetitions):
        order = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name in order:
            t, accuracy = timed(variants[name])
            seconds[name].append(t)
            if accuracy != accuracies[name]:
                raise SystemExit(f"{name}: accuracies changed between repetitions: {accuracy} vs {accuracies[name]}")
    if any(a != accuracies["eager"] for a in accuracies.values()):
        raise SystemExit(f"the variants disagree: {accuracies}")
    cpu, flags, cpus = cpu_info()
    result = {
        "cpu_model": cpu, "cpu_flags": flags, "logical_cpus": cpus,
        "load_average_before": load_before, "load_average_after": load_average(),
        "settings": vars(args), "accuracy": accuracies["eager"],
        "variants": {name: {"first_call_seconds": round(first[name], 2), "seconds": [round(t, 2) for t in seconds[name]],
                            "images_per_second": round(args.images / statistics.median(seconds[name]), 2)}
                     for name in variants},
    }
    result["speedup_compiled_over_eager"] = round(statistics.median(seconds["eager"]) / statistics.median(seconds["compiled"]), 2)
    if args.reference:
        result["speedup_compiled_over_reference_eager"] = round(
            statistics.median(seconds["reference_eager"]) / statistics.median(seconds["compiled"]), 2)
    print(f"CPU: {cpu} ({cpus} logical, flags {', '.join(flags)}); load average before {load_before}, "
          f"after {result['load_average_after']}")
    print(f"ResNet-18 width {args.width} + Dense(10), 32 px, {args.images} images, batch {args.batch_size}, "
          f"{args.attack_space} space, attacks {', '.join(a['name'] for a in attacks)}\n")
    print("| variant | first call (s) | repetitions (s) | median images/s |\n|---|---|---|---|")
    for name, v in result["variants"].items():
        print(f"| {name} | {v['first_call_seconds']:.1f} | {', '.join(f'{t:.1f}' for t in v['seconds'])} | "
              f"{v['images_per_second']:.1f} |")
    print(f"\ncompiled / eager: {result['speedup_compiled_over_eager']:.2f}x"
          + (f"; compiled / reference eager: {result['speedup_compiled_over_reference_eager']:.2f}x" if args.reference else ""))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
