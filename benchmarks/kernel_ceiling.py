"""The speed ceiling a framework's convolution kernels set for a BYOL/MYOL train step.

    python benchmarks/kernel_ceiling.py --precision=bf16 --output=benchmarks/results/kernel_ceiling_tf_bf16.json
    /work/torchvenv/bin/python benchmarks/kernel_ceiling.py --framework=torch --precision=bf16 --channels_last \\
        --output=benchmarks/results/kernel_ceiling_torch_bf16_cl.json

Times every convolution of the ResNet (`bench_common.resnet_convolutions`)
alone, in each direction a training step runs it — forward, gradient of the
input (not for the stem: nothing needs the images' gradient) and gradient of
the weights — with the framework's own kernels (TensorFlow: `tf.nn.conv2d`,
`Conv2DBackpropInput`, `Conv2DBackpropFilter` in a `tf.function`, NHWC, which
oneDNN runs on x86; torch: `aten.convolution_backward`, NCHW or channels_last),
median of `--reps` calls after two untimed ones. A training step is then
composed from its passes (an online pass: every direction; a target pass: the
forward): BYOL 2 online + 2 target passes, MYOL 3 online + 2 target. The sum
of those convolution times is a floor under the step's time — everything else
(BatchNorm, ReLU, the heads, the optimizer, the EMA) only adds to it — so
`batch / sum` is the most images/s a step built on these kernels can reach.

Standard library + the framework only, so it runs in the project's
environment (TensorFlow) and in the torch venv alike; with
`--gemm_weight_gradient_side` it times `myol_keras.conv`'s GEMM weight
gradient where the library's bf16 train step uses it (TensorFlow only).
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_common as common  # noqa: E402

DIRECTIONS = ("forward", "input_gradient", "weight_gradient")
PASSES = {"byol": {"online": 2, "target": 2}, "myol": {"online": 3, "target": 2}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--framework", choices=("tensorflow", "torch"), default="tensorflow")
    p.add_argument("--precision", choices=("float32", "bf16"), default="bf16")
    p.add_argument("--channels_last", action="store_true", help="torch: channels_last tensors (TensorFlow is NHWC)")
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--reps", type=int, default=7, help="timed calls per kernel (median)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: the framework's default)")
    p.add_argument("--gemm_weight_gradient_side", type=int, default=0,
                   help="TensorFlow: the weight gradient of stride-1 convolutions with input side <= this as "
                        "myol_keras.conv's GEMM (what the library's train step does in bf16 on a CPU); 0: the "
                        "framework's kernel everywhere")
    p.add_argument("--output", default="", help="write the results as JSON here")
    return p.parse_args(argv)


def median_seconds(call, reps):
    call()
    call()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tensorflow_kernels(conv, args):
    """`{direction: zero-argument call}` for one convolution, with TensorFlow's kernels."""
    import tensorflow as tf

    dtype = tf.bfloat16 if args.precision == "bf16" else tf.float32
    b, k, s = args.batch_size, conv["kernel"], conv["stride"]
    x = tf.cast(tf.random.normal((b, conv["side"], conv["side"], conv["c_in"])), dtype)
    w = tf.cast(tf.random.normal((k, k, conv["c_in"], conv["c_out"])), dtype)
    dy = tf.cast(tf.random.normal((b, conv["side_out"], conv["side_out"], conv["c_out"])), dtype)
    strides, padding = [1, s, s, 1], "SAME"
    forward = tf.function(lambda: tf.nn.conv2d(x, w, strides, padding))
    input_gradient = tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(x), filter=w, out_backprop=dy, strides=strides, padding=padding))
    weight_gradient = tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.shape(w), out_backprop=dy, strides=strides, padding=padding))
    if s == 1 and k % 2 == 1 and conv["side"] <= args.gemm_weight_gradient_side:
        from myol_keras.conv import patches_weight_gradient  # importable: setup_framework put the checkout on the path

        weight_gradient = tf.function(lambda: patches_weight_gradient(x, dy, k))
    return {"forward": forward, "input_gradient": input_gradient, "weight_gradient": weight_gradient}


def torch_kernels(conv, args):
    """`{direction: zero-argument call}` for one convolution, with torch's kernels (as autograd calls them)."""
    import torch

    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    b, k, s = args.batch_size, conv["kernel"], conv["stride"]
    x = torch.randn(b, conv["c_in"], conv["side"], conv["side"], dtype=dtype).contiguous(memory_format=layout)
    w = torch.randn(conv["c_out"], conv["c_in"], k, k, dtype=dtype).contiguous(memory_format=layout)
    dy = torch.randn(b, conv["c_out"], conv["side_out"], conv["side_out"], dtype=dtype).contiguous(memory_format=layout)
    pad = k // 2

    def backward(mask):
        def call():
            with torch.no_grad():
                return torch.ops.aten.convolution_backward(dy, x, w, None, [s, s], [pad, pad], [1, 1], False, [0, 0],
                                                           1, mask)
        return call

    def forward():
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, w, None, s, pad)

    return {"forward": forward, "input_gradient": backward([True, False, False]),
            "weight_gradient": backward([False, True, False])}


def setup_framework(args):
    """Import the framework once, apply `--threads`, and return its versions."""
    if args.framework == "torch":
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        return {"torch": torch.__version__, "threads": torch.get_num_threads()}
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if args.gemm_weight_gradient_side:
        sys.path.insert(0, common.REPO)  # myol_keras.conv, from this checkout
    return {"tensorflow": tf.__version__}


def measure(args):
    convs = common.resnet_convolutions(args.depth, args.width, args.image_size)
    if convs is None:
        raise SystemExit(f"--depth={args.depth}: only ResNet-18 and 34 are described")
    kernels = torch_kernels if args.framework == "torch" else tensorflow_kernels
    rows = []
    for conv in convs:
        calls = kernels(conv, args)
        flops = 2.0 * common.conv_macs(conv) * args.batch_size
        row = dict(conv)
        for direction in DIRECTIONS:
            if direction == "input_gradient" and conv["name"] == "stem":
                continue
            seconds = median_seconds(calls[direction], args.reps)
            row[direction] = {"ms": 1e3 * seconds, "tflops": flops / seconds / 1e12}
        rows.append(row)
        print(f"{conv['name']:<22} " + "  ".join(
            f"{d} {row[d]['ms']:7.2f} ms {row[d]['tflops']:.3f} TFLOP/s" for d in DIRECTIONS if d in row), flush=True)
    return rows


def summarise(rows, args):
    """Per direction: total ms and TFLOP/s; per method: the convolution time of a step and its ceiling."""
    by_direction = {}
    for direction in DIRECTIONS:
        ms = sum(r[direction]["ms"] for r in rows if direction in r)
        flops = sum(2.0 * common.conv_macs(r) * args.batch_size for r in rows if direction in r)
        by_direction[direction] = {"ms": ms, "tflops": flops / (ms / 1e3) / 1e12}
    online_ms = sum(by_direction[d]["ms"] for d in DIRECTIONS)
    target_ms = by_direction["forward"]["ms"]
    by_method = {}
    for method, passes in PASSES.items():
        ms = passes["online"] * online_ms + passes["target"] * target_ms
        flops = common.train_flops_per_image(method, args.depth, args.width, args.image_size)
        ceiling = args.batch_size / (ms / 1e3)
        by_method[method] = {"convolution_ms_per_step": ms, "ceiling_images_per_second": ceiling,
                             "ceiling_tflops_counted": flops * ceiling / 1e12 if flops else None}
    return by_direction, by_method


def main(argv=None):
    args = parse_args(argv)
    versions = setup_framework(args)
    model, flags, cpus = common.cpu_info()
    label = f"{args.framework} {args.precision}" + (" channels_last" if args.channels_last else "")
    if args.gemm_weight_gradient_side:
        label += f" gemm_weight_gradient_side={args.gemm_weight_gradient_side}"
    print(f"{label}; CPU {model}, flags {' '.join(flags)}, {cpus} logical CPUs; {versions}; "
          f"load {common.load_average()[0]:.2f}", flush=True)
    rows = measure(args)
    by_direction, by_method = summarise(rows, args)
    print("\n| direction | ms per pass | TFLOP/s |\n|---|---|---|")
    for direction, d in by_direction.items():
        print(f"| {direction} | {d['ms']:.1f} | {d['tflops']:.3f} |")
    print("\n| method | convolution ms per step | ceiling img/s | ceiling TFLOP/s (as train_flops_per_image counts) |"
          "\n|---|---|---|---|")
    for method, m in by_method.items():
        print(f"| {method} | {m['convolution_ms_per_step']:.0f} | {m['ceiling_images_per_second']:.1f} | "
              f"{m['ceiling_tflops_counted']:.3f} |")
    if args.output:
        result = {"label": label, "args": vars(args), "cpu": {"model": model, "flags": flags, "logical_cpus": cpus},
                  "versions": versions, "load_average_before": common.load_average()[0],
                  "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "convolutions": rows, "by_direction": by_direction, "by_method": by_method}
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
