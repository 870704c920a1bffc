"""Choosing the compute precision from the hardware (docs/DECISIONS.md §4.9).

Importable without TensorFlow (`PRECISIONS` is the `--precision` choice
list of `PretrainConfig`); the functions import it when called.
"""

from myol_keras.native_logs import quiet_native_stderr

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_description(cpuinfo_path="/proc/cpuinfo"):
    """`(model name, set of flags)` of this CPU, from /proc/cpuinfo (Linux)."""
    model, flags = "unknown", set()
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def resolve_precision(precision="auto", cpuinfo_path="/proc/cpuinfo"):
    """The dtype policy name to use, and why.

    `auto`: `mixed_float16` on a GPU; `mixed_bfloat16` on a CPU with native
    bf16 (`avx512_bf16` or `amx_bf16`); `float32` otherwise (on an AVX2-only
    CPU bf16 ran more than 7x slower).

    Returns:
        `(policy_name, reason)`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}. Choose one of: {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision, "set by the precision setting"
    import tensorflow as tf

    with quiet_native_stderr():  # listing devices logs CUDA probing on machines without a GPU
        gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return "mixed_float16", "auto: a GPU is visible"
    model, flags = cpu_description(cpuinfo_path)
    native = sorted(flags.intersection(NATIVE_BF16_FLAGS))
    if native:
        return "mixed_bfloat16", f"auto: CPU '{model}' has native bf16 ({', '.join(native)})"
    return "float32", f"auto: CPU '{model}' has no native bf16 (no avx512_bf16/amx_bf16)"


def set_precision(policy_name):
    """Set the global Keras dtype policy."""
    import keras

    keras.mixed_precision.set_global_policy(policy_name)
