"""Paired statistics for BYOL-vs-MYOL claims, and the one wording rule every verdict follows.

The design (issue 26): BYOL and MYOL at the same seed share initial weights, batches and views, so they are
compared **paired by seed**. For a claim "MYOL > BYOL" on a metric:

* d_i = MYOL_i - BYOL_i for each seed i (n pairs);
* the 95 % interval of the mean difference is mean(d) ± t(0.975, n - 1) · sd(d) / √n;
* **the rule**, the same for every row: "holds" if the whole interval is above 0, "does not hold" if the
  whole interval is below 0, otherwise "not resolved" (the interval is reported either way, so a reader sees
  which effect sizes are still possible).

An image-level view of the same comparison is McNemar's exact test on the per-image correctness of the two
probes of one seed (the discordant images only).

>>> round(paired_interval([1.0, 2.0, 3.0])["low"], 3)
-0.484
>>> round(prediction_interval([1.0, 2.0, 3.0])["high"], 3)
6.968
>>> verdict(0.1, 2.0), verdict(-2.0, -0.1), verdict(-1.0, 1.0)
('holds', 'does not hold', 'not resolved')
"""

import math

RULE = ("one rule for every comparison: the paired 95 % t interval of MYOL − BYOL over seeds (n − 1 degrees of "
        "freedom); \"holds\" if it lies entirely above 0, \"does not hold\" if entirely below 0, otherwise "
        "\"not resolved\"")


def t_quantile(p, dof):
    """The p-quantile of Student's t with `dof` degrees of freedom (SciPy)."""
    from scipy import stats

    return float(stats.t.ppf(p, dof))


def paired_interval(differences, level=0.95):
    """`{"n", "mean", "sd", "se", "low", "high", "level"}` of the mean of paired differences (t, n - 1 dof)."""
    d = [float(x) for x in differences]
    n = len(d)
    if n == 0:
        raise ValueError("paired_interval needs at least one difference")
    mean = sum(d) / n
    if n == 1:
        return {"n": 1, "mean": mean, "sd": float("nan"), "se": float("nan"), "low": float("-inf"),
                "high": float("inf"), "level": level}
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    half = t_quantile(0.5 + level / 2, n - 1) * se
    return {"n": n, "mean": mean, "sd": sd, "se": se, "low": mean - half, "high": mean + half, "level": level}


def prediction_interval(values, level=0.95, draws=1):
    """Where the mean of `draws` more runs is expected to fall: `{"n", "mean", "sd", "low", "high", "level"}`.

    mean ± t(0.5 + level / 2, n - 1) · sd · √(1/draws + 1/n): the interval for the mean
    of `draws` new draws from the distribution the `values` came from (seeds of one
    method), with the spread estimated from the values. Runs made elsewhere (the
    official code's) are compared with our seeds through it.
    """
    v = [float(x) for x in values]
    n = len(v)
    if n < 2:
        raise ValueError(f"prediction_interval needs at least 2 values, got {n}")
    mean = sum(v) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd * math.sqrt(1 / draws + 1 / n)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "level": level}


def verdict(low, high):
    """The one wording rule (see `RULE`)."""
    if low > 0:
        return "holds"
    if high < 0:
        return "does not hold"
    return "not resolved"


def mcnemar(correct_a, correct_b):
    """McNemar's exact two-sided test on paired per-image correctness ('0'/'1' strings or bool sequences).

    Returns `{"only_a", "only_b", "p"}`: images right only under A, only under B, and the exact binomial
    p-value of the split of the discordant images (1.0 when there are none).
    """
    from scipy import stats

    a = [c in ("1", 1, True) for c in correct_a]
    b = [c in ("1", 1, True) for c in correct_b]
    if len(a) != len(b):
        raise ValueError(f"mcnemar: {len(a)} and {len(b)} images; the two probes must see the same test images")
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    p = 1.0 if only_a + only_b == 0 else float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p": p}


def detectable_difference(sd, n, level=0.95, power=0.8):
    """The smallest true mean difference a paired t test on n pairs with this sd finds with `power` (approx.)."""
    from scipy import stats

    if n < 2 or not math.isfinite(sd):
        return float("nan")
    return float((stats.t.ppf(0.5 + level / 2, n - 1) + stats.norm.ppf(power)) * sd / math.sqrt(n))
