"""Statistics over seeds (SPEC section 8): mean, standard deviation, a 95% bootstrap CI, paired tests.

Every arm of one seed shares its data order, evaluation windows and (for a topology) its mask with the
other arms of that seed, so two arm groups are compared seed by seed: a paired t-test on the per-seed
differences. With fewer than two seeds there is no test, and the functions say so (`None`, key absent)
rather than produce a p-value. The bootstrap is seeded, so the same values always give the same interval.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

LEVEL = 0.95
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0
ALPHA = 0.05  # a difference is called significant below this p-value
TEST_NAME = "two-sided paired t-test over seeds (scipy.stats.ttest_rel)"


def bootstrap_ci(values, level: float = LEVEL, samples: int = BOOTSTRAP_SAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample the seeds with replacement `samples` times."""
    x = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(samples, len(x)))
    lo, hi = np.percentile(x[idx].mean(axis=1), [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def describe(values) -> dict[str, float]:
    """n, mean, sample standard deviation and the bootstrap CI; with one value, std 0 and no interval."""
    x = np.asarray(values, dtype=float)
    out = {"n": len(x), "mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0}
    if len(x) > 1:
        out["ci_low"], out["ci_high"] = bootstrap_ci(x)
    return out


def paired_test(a, b) -> dict[str, float]:
    """Group a against group b, value i of each from the same seed: the means, the mean difference a - b
    and, with two seeds or more, the paired t-test's p-value (differences all equal give p = 1 when 0 and
    p = 0 otherwise, scipy's limits)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = {"n": len(a), "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": float((a - b).mean())}
    if len(a) > 1:
        d = a - b
        out["p_value"] = (float(stats.ttest_rel(a, b).pvalue) if np.ptp(d) > 0
                          else float(np.all(d == 0)))
    return out


def sentence(label_a: str, label_b: str, t: dict, less: str, more: str) -> str:
    """"random@0.05 forgets less than dense: 0.410 vs 0.870 nats, p=0.003, 3 seeds" from a `paired_test`;
    `less` / `more` is the verb when a's mean is below / not below b's."""
    verb = less if t["diff"] < 0 else more
    seeds = f"{t['n']} seed{'s' * (t['n'] != 1)}"
    p = f"p={t['p_value']:.3g}" if "p_value" in t else "no test possible with one seed"
    return f"{label_a} {verb} than {label_b}: {t['mean_a']:.3f} vs {t['mean_b']:.3f} nats, {p}, {seeds}"


def significant(t: dict) -> bool:
    return t.get("p_value", 1.0) < ALPHA
