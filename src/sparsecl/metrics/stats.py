"""Statistics over seeds, chosen to stay right at 2 to 5 seeds.

Every arm of one seed shares its data order and evaluation windows (and, for a topology, its mask) with the
other arms of that seed, so two arm groups are compared seed by seed, on the per-seed differences a - b:
- interval: the Student-t interval of a mean (a group's, or the mean paired difference). It is exact for
  normal values at any n; the percentile bootstrap it replaces is [min, max] at n = 2 and 3.
- effect size: the mean paired difference and d_z = mean / sd of the differences (absent when sd = 0).
- test: the two-sided paired t-test of the mean difference (scipy.stats.ttest_rel), from MIN_TEST_SEEDS
  seeds on and only when the differences vary (equal differences leave t undefined: no p-value, said so).
  At 2 seeds it would have one degree of freedom, and its p-value rests wholly on normality. Beside it, the
  exact two-sided sign-flip (paired permutation) p-value, free of that assumption, decides nothing: its
  smallest value is 2 / 2^n, so it cannot go below 0.05 before 6 seeds.
- several tests: Holm's step-down adjustment over a family (the caller says which).
Fewer than two seeds, or a non-finite value in any seed, give no interval and no test: the key is absent.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

LEVEL = 0.95
ALPHA = 0.05  # a difference is called significant below this (Holm-adjusted) p-value
POWER = 0.8   # of the minimum detectable difference
EXACT_MAX_SEEDS = 20      # all 2^n sign flips up to here (2^20 sums); above, a seeded random sample of them
FLIP_SAMPLES = 100_000
FLIP_SEED = 0
INTERVAL_NAME = f"{LEVEL:.0%} Student-t interval"
MIN_TEST_SEEDS = 3
TEST_NAME = "two-sided paired t-test over seeds (scipy.stats.ttest_rel), from 3 seeds on"


def t_interval(values, level: float = LEVEL):
    """Student-t interval of the mean over the last axis (n >= 2): mean +- t(n - 1) * sd / sqrt(n)."""
    x = np.asarray(values, dtype=float)
    n = x.shape[-1]
    half = stats.t.ppf(0.5 + level / 2, n - 1) * x.std(axis=-1, ddof=1) / math.sqrt(n)
    mean = x.mean(axis=-1)
    return mean - half, mean + half


def describe(values) -> dict[str, float]:
    """n, mean, sample standard deviation and the t-interval of the mean; one seed gives the mean alone, and
    a non-finite value gives only n and how many seeds have one (a mean with NaN in it means nothing)."""
    x = np.asarray(values, dtype=float)
    out = {"n": len(x)}
    if not np.all(np.isfinite(x)):
        return {**out, "non_finite": int(np.sum(~np.isfinite(x)))}
    out["mean"] = float(x.mean())
    if len(x) > 1:
        lo, hi = t_interval(x)
        out.update(std=float(x.std(ddof=1)), ci_low=float(lo), ci_high=float(hi))
    return out


def sign_flip_p(diffs) -> float:
    """Two-sided p-value of the mean of `diffs` against the 2^n sign patterns of the differences: the share of
    patterns whose |sum| reaches the observed one (ties count, so p >= 2 / 2^n, and all-zero gives 1)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) <= EXACT_MAX_SEEDS:
        sums = np.zeros(1)
        for v in d:
            sums = np.concatenate([sums + v, sums - v])
    else:
        signs = np.random.default_rng(FLIP_SEED).choice([-1.0, 1.0], size=(FLIP_SAMPLES, len(d)))
        sums = np.concatenate([[d.sum()], signs @ d])  # the observed pattern counted: a valid p-value
    reached = np.abs(sums) >= abs(d.sum()) - 1e-9 * np.abs(d).sum()  # equal sums up to rounding are ties
    return float(reached.mean())


def paired_test(a, b) -> dict[str, float]:
    """Group a against group b, value i of each from the same seed: n, the means, the mean difference a - b
    and, with two seeds or more, the sd of the differences, its t-interval, d_z, the sign-flip p-value and
    (from MIN_TEST_SEEDS seeds, differences not all equal) the t-test's p-value, the one verdicts use.
    A non-finite value in any seed gives only n and `non_finite` (how many seeds have one): no evidence."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    bad = ~(np.isfinite(a) & np.isfinite(b))
    out = {"n": len(a)}
    if bad.any():
        return {**out, "non_finite": int(bad.sum())}
    d = a - b
    out.update(mean_a=float(a.mean()), mean_b=float(b.mean()), diff=float(d.mean()))
    if len(d) > 1:
        lo, hi = t_interval(d)
        sd = float(d.std(ddof=1))
        if sd <= 1e-12 * float(np.abs(d).max()):  # equal up to rounding (0.5 - 1.0 vs 0.6 - 1.1): no spread
            sd = 0.0
        out.update(sd=sd, ci_low=float(lo), ci_high=float(hi), p_sign_flip=sign_flip_p(d))
        if sd > 0:
            out["d_z"] = out["diff"] / sd
            if len(d) >= MIN_TEST_SEEDS:
                out["p_value"] = float(stats.ttest_rel(a, b).pvalue)
    return out


def holm(p_values) -> list[float]:
    """Holm's step-down adjustment: the k-th smallest of m p-values times (m - k + 1), then the running
    maximum in that order (an adjusted p never falls below a smaller raw one's), capped at 1."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty(len(p))
    out[order] = adjusted
    return out.tolist()


def detectable(t: dict, alpha: float) -> float | None:
    """The t-based minimum detectable difference of a paired test at two-sided level `alpha` and POWER, from
    the observed sd of the differences: (t(1 - alpha / 2) + t(POWER)) * sd / sqrt(n), n - 1 degrees of
    freedom. None without a test (n < MIN_TEST_SEEDS, or no spread)."""
    n = t["n"]
    if t.get("sd", 0) <= 0 or n < MIN_TEST_SEEDS:
        return None
    return float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(POWER, n - 1)) * t["sd"] / math.sqrt(n))


def sentence(label_a: str, label_b: str, t: dict, less: str, more: str) -> str:
    """"random@0.05 forgets less than dense: 0.410 vs 0.870 nats, difference -0.460 [95% CI -0.52, -0.40],
    d_z -7.7, p=0.25, 3 seeds" from a `paired_test` (with its Holm-adjusted p when it has one); `less` /
    `more` is the verb when a's mean is below / above b's."""
    seeds = f"{t['n']} seed{'s' * (t['n'] != 1)}"
    if "non_finite" in t:
        return (f"{label_a} against {label_b}: no test, a non-finite value (NaN or infinity) in {t['non_finite']} "
                f"of {seeds}, which is no evidence")
    said = (f"{label_a} {less if t['diff'] < 0 else more} than {label_b}" if t["diff"] != 0
            else f"{label_a} is level with {label_b}") + f": {t['mean_a']:.3f} vs {t['mean_b']:.3f} nats"
    if "sd" not in t:
        return f"{said}, no test possible with one seed, {seeds}"
    said += f", difference {t['diff']:+.3f} [{LEVEL:.0%} CI {t['ci_low']:+.3f}, {t['ci_high']:+.3f}]"
    if "d_z" in t:
        said += f", d_z {t['d_z']:+.2f}"
    said += f", p={t['p_value']:.3g}" if "p_value" in t else ", no t-test (needs 3 seeds whose differences vary)"
    said += f", sign-flip p={t['p_sign_flip']:.3g}"
    if "p_holm" in t:
        said += f" (Holm-adjusted {t['p_holm']:.3g})"
    return f"{said}, {seeds}"
