"""Seeds statistics, crossover on constructed curves, repeated domains, and the report of analyze on
synthetic loss matrices (no training: the toy dvc repro of test_pipeline.py covers the stages)."""
import json
import math
import re

import numpy as np
import pytest
from scipy import stats as sps

from sparsecl.io import write_json
from sparsecl.metrics import stats
from sparsecl.metrics.continual import (backward_transfer, crossover, final_summary, first_phases,
                                        forgetting_per_domain, forward_transfer, seen_mean_loss)
from sparsecl.report import statistics
from sparsecl.report.analyze import Arm, analyze

ANALYSIS = {"crossover_persist": 2, "min_start_gap": 0.02, "crossover_margin": 0.02}


def _arm(topology: str, seed: int, L) -> Arm:
    """An analyze.Arm (mechanism none) on a loss matrix whose phase j trains domain j."""
    L = np.asarray(L, dtype=float)
    phases = L.shape[0]
    return Arm(topology, "none", seed, L, np.full(L.shape[1], 5.7), np.arange(phases), np.arange(phases),
               np.zeros(phases - 1))


def _t_test_p(d) -> float:
    """The two-sided one-sample t-test of mean(d) = 0, by hand: what a paired t-test on a - b = d gives."""
    d = np.asarray(d, dtype=float)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    return float(2 * sps.t.sf(abs(t), len(d) - 1))


def _holm_by_hand(p: dict) -> dict:
    """Holm's step-down, written out: the k-th smallest (k from 0) times (m - k), then the running maximum."""
    names = sorted(p, key=p.get)
    out, running = {}, 0.0
    for k, name in enumerate(names):
        running = max(running, min(1.0, (len(p) - k) * p[name]))
        out[name] = running
    return out


def test_t_interval_by_hand_and_against_scipy():
    x = [0.41, 0.52, 0.38, 0.47, 0.60, 0.44]
    half = sps.t.ppf(0.975, 5) * np.std(x, ddof=1) / math.sqrt(6)
    lo, hi = stats.t_interval(x)
    assert (lo, hi) == pytest.approx((np.mean(x) - half, np.mean(x) + half))
    assert (lo, hi) == pytest.approx(sps.t.interval(0.95, 5, loc=np.mean(x), scale=sps.sem(x)))
    # Two seeds: t(1) = 12.7 standard errors each side, where the percentile bootstrap gave [min, max] = [0, 1].
    assert stats.t_interval([0.0, 1.0]) == pytest.approx((0.5 - 12.706 * 0.5, 0.5 + 12.706 * 0.5), abs=1e-3)


@pytest.mark.parametrize("n", [3, 5])
def test_t_interval_covers_95_percent_of_normal_means(n):
    x = np.random.default_rng(n).normal(1.0, 0.3, size=(2000, n))  # 2,000 simulated sets of n seeds
    lo, hi = stats.t_interval(x)
    assert abs(np.mean((lo <= 1.0) & (1.0 <= hi)) - 0.95) < 0.03


def test_describe_of_one_and_of_three_seeds():
    assert stats.describe([0.4]) == {"n": 1, "mean": 0.4}  # no std, no interval: a key absent, not a 0
    d = stats.describe([0.3, 0.5, 0.45])
    assert d["ci_low"] <= d["mean"] <= d["ci_high"] and d["std"] == pytest.approx(np.std([0.3, 0.5, 0.45], ddof=1))
    assert stats.describe([0.3, float("nan"), 0.5]) == {"n": 3, "non_finite": 1}


def test_sign_flip_p_by_hand():
    assert stats.sign_flip_p([0.1, 0.2, 0.3]) == 2 / 8  # only the observed signs and their mirror reach |0.6|
    # [1, -1, 2] sums to 2; of the 8 sign patterns 4, 2, 2, -2, -2, -4 reach |2| (ties count), 0 and 0 do not
    assert stats.sign_flip_p([1.0, -1.0, 2.0]) == 6 / 8
    assert stats.sign_flip_p([0.0, 0.0, 0.0]) == 1.0
    # Five seeds all the same way is the most extreme pattern there is: 2 / 32, still above 0.05.
    assert stats.sign_flip_p([0.1, 0.3, 0.2, 0.5, 0.4]) == 2 / 32 > stats.ALPHA


def test_sign_flip_sampled_above_the_exact_limit(monkeypatch):
    d = np.random.default_rng(1).normal(0.3, 1.0, size=12)
    exact = stats.sign_flip_p(d)
    monkeypatch.setattr(stats, "EXACT_MAX_SEEDS", 10)
    assert stats.sign_flip_p(d) == pytest.approx(exact, abs=0.01)


def test_paired_test_by_hand():
    a, b = [0.41, 0.45, 0.37], [0.87, 0.80, 0.91]
    d = np.subtract(a, b)  # -0.46, -0.35, -0.54
    t = stats.paired_test(a, b)
    assert t["n"] == 3 and t["diff"] == pytest.approx(d.mean()) and t["mean_b"] == pytest.approx(np.mean(b))
    assert t["sd"] == pytest.approx(d.std(ddof=1)) and t["d_z"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert (t["ci_low"], t["ci_high"]) == pytest.approx(sps.t.interval(0.95, 2, loc=d.mean(), scale=sps.sem(d)))
    # t = mean / (sd / sqrt 3) with 2 degrees of freedom; the sign-flip p is 2 / 2^3 whatever the size
    assert t["p_value"] == pytest.approx(_t_test_p(d)) and 0.01 < t["p_value"] < 0.02
    assert t["p_sign_flip"] == 0.25
    # The same differences, one of them the other way: the t-test sees it, the sign-flip p moves to 6 / 8 or 4 / 8.
    assert stats.paired_test([0.41, 0.45, 0.37], [0.87, 0.80, 0.20])["p_value"] == pytest.approx(
        _t_test_p([-0.46, -0.35, 0.17]))
    # Two seeds: an interval and the sign-flip p, but no t-test (one degree of freedom), however they differ.
    two = stats.paired_test([0.41, 0.45], [0.87, 0.70])
    assert "p_value" not in two and two["p_sign_flip"] == 0.5 and two["d_z"] == pytest.approx(
        np.mean([-0.46, -0.25]) / np.std([-0.46, -0.25], ddof=1))
    # No difference at all: nothing to test, and the sign flips all tie.
    same = stats.paired_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert "p_value" not in same and same["p_sign_flip"] == 1.0 and same["sd"] == 0


def test_nan_in_a_paired_test_is_no_evidence():
    # Before: p = 0 and H1 "supported: random@0.05 forgets more than dense: nan vs 0.850 nats, p=0".
    for bad in (float("nan"), float("inf")):
        t = stats.paired_test([0.4, 0.5, bad], [0.9, 1.0, 1.1])
        assert t == {"n": 3, "non_finite": 1}
        said = stats.sentence("random@0.05", "dense", t, "forgets less", "forgets more")
        assert said == ("random@0.05 against dense: no test, a non-finite value (NaN or infinity) in 1 of 3 seeds, "
                        "which is no evidence")
        assert statistics.outcome(t, claim=-1, about={"size": 2}).startswith("undecided (a non-finite value")


def test_two_equal_differences_are_not_significant():
    # Before: p = 0 (or about 1e-17) and "supported ... 2 seeds".
    t = stats.paired_test([0.4, 0.5], [0.9, 1.0])
    assert "p_value" not in t and t["p_sign_flip"] == 0.5
    assert t["sd"] == pytest.approx(0, abs=1e-12) and "d_z" not in t
    about = {"size": 1, "alpha": stats.ALPHA, "min_seeds": stats.MIN_TEST_SEEDS}
    assert statistics.outcome(t, claim=-1, about=about) == (
        "no evidence either way at this n (2 seeds are too few for a test: the paired t-test needs 3, and the "
        "exact sign-flip test cannot go below p = 0.5)")
    said = stats.sentence("random@0.05", "dense", t, "forgets less", "forgets more")
    assert "no t-test (needs 3 seeds whose differences vary), sign-flip p=0.5, 2 seeds" in said and ", p=" not in said
    # Three seeds with the very same difference (exact in binary): no spread, so no t-test, and the verdict says so.
    t = stats.paired_test([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])
    assert t["sd"] == 0 and "p_value" not in t and "d_z" not in t and t["p_sign_flip"] == 0.25
    assert statistics.outcome(t, claim=-1, about=about) == (
        "no evidence either way at this n (the difference is the same -0.5 nats in every seed: no spread, so no "
        "t-test)")


def test_differences_equal_up_to_rounding_are_not_a_test():
    # Before: sd 8e-17, d_z ~ -6e15 and p ~ 1e-32 from float rounding alone.
    t = stats.paired_test([0.4, 0.5, 0.6], [0.9, 1.0, 1.1])  # -0.5, -0.5, -0.5000000000000001
    assert "p_value" not in t and "d_z" not in t and t["sd"] == 0.0


def test_holm_against_a_hand_worked_example():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([]) == []
    # The helper the family tests below use agrees with it.
    assert list(_holm_by_hand({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}).values()) == pytest.approx(
        [0.02, 0.03, 0.06, 0.06])


def _matrix(start: float, forget: float, size: int = 4) -> np.ndarray:
    """A domain's loss is `start` after its phase and grows by `forget` per later phase; 4.0 before it is
    trained. On four domains: forgetting 2 x forget, plasticity `start`, final average loss start + 1.5 x forget."""
    return np.array([[start + forget * (j - i) if i <= j else 4.0 for i in range(size)] for j in range(size)])


def _arms(seeds, sparse_start=2.3, sparse_forget=0.05, dense_forget=0.4, noise=0.01):
    """Dense and random arms (mechanism none) on four domains: a domain's loss grows by `forget` per phase
    after it is trained. Seen-domain means: dense 2.0 + 0.2 j, sparse by default 2.3 + 0.025 j, so sparse
    starts 0.3 nats worse and is below from phase 2 on; forgetting 0.8 vs 0.1 by default."""
    rng = np.random.default_rng(0)
    arms = []
    for seed in seeds:
        for topology, start, forget in (("dense", 2.0, dense_forget), ("random", sparse_start, sparse_forget)):
            L = _matrix(start, forget)
            arms.append(_arm(topology, seed, L + rng.normal(0, noise, L.shape)))
    return arms


def _exact_arms(sparse_forgets, sparse_start=2.0, dense_forget=0.4, dense_start=2.0, narrow=None):
    """Noise-free arms, one seed per entry of `sparse_forgets` (the random arm's forget rate in that seed);
    `narrow`: (start, forget rate per seed) of a capacity control arm."""
    arms = []
    for seed, f in enumerate(sparse_forgets):
        arms += [_arm("dense", seed, _matrix(dense_start, dense_forget)), _arm("random", seed, _matrix(sparse_start, f))]
        if narrow is not None:
            arms.append(_arm("narrow", seed, _matrix(narrow[0], narrow[1][seed])))
    return arms


def _verdicts(arms, analysis=ANALYSIS):
    summary = {a.name: final_summary(a.L, a.untrained, a.first, a.trained) for a in arms}
    result = statistics.compute(arms, summary, analysis=analysis)
    lines = statistics.verdicts(result, 0.05, analysis=analysis)
    h1, h2 = (next(x for x in lines if x.startswith(f"**{h} (")) for h in ("H1", "H2"))
    return result, h1, h2


def test_verdict_flips_from_supported_to_no_evidence_when_holm_pushes_p_over_alpha():
    # Same start (so the same plasticity), sparse forgets less by 0.10, 0.15, 0.20 per phase: the forgetting
    # differences are 2 x that, the final-average-loss differences 1.5 x that, so H1's and H2's t-tests have the
    # same p, and Holm over the two doubles it.
    deltas = np.array([-0.10, -0.15, -0.20])
    result, h1, h2 = _verdicts(_exact_arms(0.4 + deltas))
    assert result["family"] == {"size": 2, "alpha": 0.05, "min_seeds": 3}  # H1 and H2 on random
    t = result["verdicts"]["H1_random"]
    p = _t_test_p(2 * deltas)
    assert t["p_value"] == pytest.approx(p) and result["verdicts"]["H2_random"]["p_value"] == pytest.approx(p)
    assert t["p_value"] < stats.ALPHA <= t["p_holm"] == pytest.approx(2 * p)  # the raw p would say yes
    assert t["p_sign_flip"] == 0.25
    assert (f"**H1 (a fixed sparse topology alone forgets less than dense, no mechanism)** (no capacity control in "
            f"this run: add `narrow` to `topologies` to tell sparsity from fewer weights): against dense: no "
            f"evidence either way at this n (the smallest difference these seeds could have detected is "
            f"{t['mdd']:.3f} nats") in h1
    assert f"p={p:.3g}, sign-flip p=0.25 (Holm-adjusted {2 * p:.3g}), 3 seeds" in h1
    assert "supported" not in h1 and "not attributable" not in h1  # it learned as well: no reason to append
    assert "sweep): does not apply (it does not start worse" in h2  # same start: H2's claim does not apply
    # A stronger effect at the same spread: Holm-adjusted p below 0.05.
    deltas = np.array([-0.30, -0.35, -0.40])
    result, h1, _ = _verdicts(_exact_arms(0.4 + deltas))
    p = _t_test_p(2 * deltas)
    assert result["verdicts"]["H1_random"]["p_holm"] == pytest.approx(2 * p) and 2 * p < stats.ALPHA
    assert "against dense: supported: random@0.05 forgets less than dense: 0.100 vs 0.800 nats" in h1
    assert "learned less" not in h1


def test_h2_supported_but_h1_not_attributable_when_sparse_learns_each_domain_worse():
    # _arms' default: sparse starts 0.3 worse, forgets much less and ends lower, in 3 seeds.
    result, h1, h2 = _verdicts(_arms(range(3)))
    assert all(result["verdicts"][m]["p_holm"] < stats.ALPHA for m in ("H1_random", "H2_random"))
    assert re.search(r"\): supported: random@0\.05 after pretraining: 3 of 3 seeds start worse .* stays more "
                     r"than 0\.02 nats below dense for good \(2 evaluations at least\) in 3 of 3 seeds \(mean phase "
                     r"1\.8", h2)
    # Its plasticity is 0.3 worse (its final average loss lower): the lower forgetting is not credited to sparsity.
    assert "against dense: not attributable to sparsity: random@0.05 forgets less than dense" in h1
    assert "supported: " not in h1
    p = result["tests"]["random-none_vs_dense-none"]["plasticity"]
    assert p["mean_a"] - p["mean_b"] == pytest.approx(0.3, abs=0.03)
    assert f"(random@0.05 learned less than dense (plasticity {p['mean_a']:.3f} vs {p['mean_b']:.3f} nats" in h1


def test_sparse_that_forgets_less_but_learned_less_is_not_supported():
    # Random starts every domain 0.6 worse (plasticity 2.6 vs 2.0) and forgets 0.3..0.4 per phase less: final
    # average loss 2.6 + 1.5 f against 2.6, higher by 0.15, 0.075 and 0 nats.
    deltas = np.array([-0.30, -0.35, -0.40])
    result, h1, _ = _verdicts(_exact_arms(0.4 + deltas, sparse_start=2.6))
    v = result["verdicts"]["H1_random"]
    p_h1, p_h2 = _t_test_p(2 * deltas), _t_test_p(0.6 + 1.5 * deltas)
    assert v["p_value"] == pytest.approx(p_h1) and result["verdicts"]["H2_random"]["p_value"] == pytest.approx(p_h2)
    holm = _holm_by_hand({"H1": p_h1, "H2": p_h2})["H1"]
    assert v["p_holm"] == pytest.approx(holm) and holm < stats.ALPHA  # significant after Holm
    assert "supported: " not in h1
    assert ("against dense: not attributable to sparsity: random@0.05 forgets less than dense: 0.100 vs 0.800 "
            "nats") in h1
    final = np.mean(2.6 + 1.5 * (0.4 + deltas))
    assert (f"(random@0.05 learned less than dense (plasticity 2.600 vs 2.000 nats, final average loss "
            f"{final:.3f} vs 2.600): it forgets less because it learned less, not because it kept more)") in h1


def test_learned_less_reads_plasticity_and_final_loss():
    def result(plasticity_diff, final_diff):
        p = {"diff": plasticity_diff, "mean_a": 2.0 + plasticity_diff, "mean_b": 2.0}
        f = {"diff": final_diff, "mean_a": 2.5 + final_diff, "mean_b": 2.5}
        return {"tests": {"random-none_vs_dense-none": {"plasticity": p, "final_avg_loss": f}}}
    a, b = ("random", "none"), ("dense", "none")
    assert statistics.learned_less(result(-0.1, -0.2), 0.05, a, b) is None
    assert statistics.learned_less(result(0.0, 0.0), 0.05, a, b) is None
    assert "plasticity 2.100 vs 2.000 nats" in statistics.learned_less(result(0.1, -0.2), 0.05, a, b)
    assert "final average loss 2.600 vs 2.500" in statistics.learned_less(result(-0.1, 0.1), 0.05, a, b)


def test_h1_against_the_capacity_control():
    # Narrow starts 0.1 worse and forgets more than dense; random forgets least and learns as well as both.
    random_forget, narrow_forget = np.array([0.10, 0.15, 0.20]), np.array([0.50, 0.60, 0.55])
    result, h1, _ = _verdicts(_exact_arms(random_forget, narrow=(2.1, narrow_forget)))
    members = result["verdicts"]
    assert sorted(members) == ["H1_random", "H1n_random", "H2_random"] and result["family"]["size"] == 3
    assert "narrow-none_vs_dense-none" in result["tests"]  # the control itself against dense, outside the family
    p = {"H1_random": _t_test_p(2 * (random_forget - 0.4)), "H1n_random": _t_test_p(2 * (random_forget - narrow_forget)),
         "H2_random": _t_test_p(1.5 * (random_forget - 0.4))}
    holm = _holm_by_hand(p)
    for name in p:
        assert members[name]["p_value"] == pytest.approx(p[name]) and members[name]["p_holm"] == pytest.approx(holm[name])
    assert members["H1n_random"]["diff"] == pytest.approx(np.mean(2 * (random_forget - narrow_forget)))
    assert "no capacity control in this run" not in h1
    assert "against dense: supported: random@0.05 forgets less than dense" in h1
    assert "; against narrow@0.05: supported: random@0.05 forgets less than narrow@0.05: 0.300 vs 1.100 nats" in h1
    assert f"(Holm-adjusted {holm['H1n_random']:.3g}), 3 seeds" in h1


def test_a_member_without_a_p_value_still_counts_in_the_family():
    deltas = np.array([-0.30, -0.35, -0.40])
    arms = _exact_arms(0.4 + deltas)
    arms[1].L[3, 3] = float("nan")  # random, seed 0: the last domain after the last phase (final loss, plasticity)
    result, h1, h2 = _verdicts(arms)
    v = result["verdicts"]
    assert result["family"]["size"] == 2 and v["H2_random"] == {**v["H2_random"], "n": 3, "non_finite": 1}
    assert "p_value" not in v["H2_random"] and "p_holm" not in v["H2_random"]
    assert v["H1_random"]["p_holm"] == pytest.approx(2 * _t_test_p(2 * deltas))  # Holm over 2, not over 1
    assert "sweep): undecided (a non-finite value in 1 of 3 seeds: no test)" in h2


def test_evidence_against_and_the_detectable_difference():
    _, h1, _ = _verdicts(_arms(range(7), sparse_forget=0.6))  # sparse forgets more in every seed
    assert ": evidence against (significant the other way): random@0.05 forgets more than dense" in h1
    # Differences of either sign at 8 seeds: not significant, and the report says what could have been seen.
    arms = _arms(range(8), sparse_forget=0.4, noise=0.05)
    result, h1, _ = _verdicts(arms)
    t = result["verdicts"]["H1_random"]
    forgetting = {(a.topology, a.seed): forgetting_per_domain(a.L).mean() for a in arms}
    d = [forgetting["random", s] - forgetting["dense", s] for s in range(8)]
    assert t["p_value"] == pytest.approx(_t_test_p(d))
    mdd = (sps.t.ppf(1 - 0.05 / 2 / 2, 7) + sps.t.ppf(0.8, 7)) * np.std(d, ddof=1) / math.sqrt(8)
    assert t["p_holm"] >= stats.ALPHA and t["mdd"] == pytest.approx(mdd)
    assert (f"no evidence either way at this n (the smallest difference these seeds could have detected is "
            f"{mdd:.3f} nats: t-based, 80% power at p < 0.025") in h1


def test_h2_needs_two_seeds_a_start_gap_and_a_margin():
    _, h1, h2 = _verdicts(_arms([0], sparse_start=1.9))
    assert ": against dense: undecided (one seed" in h1 and "sweep): undecided (one seed" in h2  # even where it would not apply
    # Before: a seed that starts better counted as crossed. It starts 0.1 better and stays below throughout.
    result, h1, h2 = _verdicts(_arms([0, 1], sparse_start=1.9))
    v = result["verdicts"]["H2_random"]
    assert v["seeds_start_worse"] == 0 == v["seeds_overtake"]
    assert "sweep): does not apply (it does not start worse by more than 0.02 nats in every seed)" in h2
    assert ": against dense: no evidence either way at this n (2 seeds are too few for a test: the paired t-test " \
           "needs 3" in h1
    # Starts worse, ends below by less than the margin in the mean seen-domain loss: not crossed.
    result, _, _ = _verdicts(_arms([0, 1], sparse_start=2.29, sparse_forget=0.1, noise=0.0),
                             analysis={**ANALYSIS, "crossover_margin": 0.2})
    assert result["verdicts"]["H2_random"]["seeds_overtake"] == 0
    assert result["verdicts"]["H2_random"]["start_gap"] == pytest.approx(0.29)


def test_h2_when_only_the_core_domain_crosses():
    # Sparse forgets the core domain less but the other domains more: the seen-domain mean stays above dense.
    arms = []
    for s in (0, 1):
        arms += [_arm("dense", s, np.array([[4.0, 9, 9], [4.5, 3.0, 9], [5.0, 3.5, 3.0]]) + 0.01 * s),
                 _arm("random", s, np.array([[4.2, 9, 9], [4.3, 3.5, 9], [4.4, 4.5, 3.5]]) + 0.02 * s)]
    result, _, h2 = _verdicts(arms, analysis={**ANALYSIS, "crossover_persist": 1})
    v = result["verdicts"]["H2_random"]
    # core: dense 4.0, 4.5, 5.0 against sparse 4.2, 4.3, 4.4, +0.01 and +0.02 in seed 1: 0.22 / 0.4 and 0.23 / 0.4
    assert v["seeds_overtake"] == 0 and v["core_seeds_overtake"] == 2
    assert v["core_crossing_phase"] == pytest.approx(0.5625)
    assert "the core-domain loss in 2 of 2 seeds (mean phase 0.56)" in h2 and "sweep): no evidence either way" in h2


def test_crossover_never_returns_nan():
    # Before: NaN, counted as crossed and written to metrics/crossover.json as a bare NaN.
    assert crossover([5, float("nan"), 3, 3], [4, 4, 4, 4], persist=2) == 2.0  # placed at the first point below
    assert crossover([5, 3, 3, float("nan")], [4, 4, 4, 4], persist=1) is None  # NaN at the end: not below
    assert crossover([5, 3, 3, 3], [4, 4, float("-inf"), 4], persist=1) == 3.0  # -inf on dense is not "below"
    # A margin: 1e-9 nats below is no crossing once 0.02 is asked for.
    assert crossover([5, 3.999999999, 3.999999999], [4, 4, 4], persist=2) is not None
    assert crossover([5, 3.999999999, 3.999999999], [4, 4, 4], persist=2, margin=0.02) is None
    assert crossover([5, 4, 3, 3], [4, 4, 4, 4], persist=2, margin=0.5) == pytest.approx(1.5)


def test_write_json_refuses_non_finite_numbers_naming_the_key(tmp_path):
    path = tmp_path / "metrics" / "summary.json"
    with pytest.raises(ValueError, match=r"summary\.json: dense-none-s0\.forgetting is NaN; not written"):
        write_json(path, {"dense-none-s0": {"bwt": -0.1, "forgetting": float("nan")}})
    assert not path.exists()
    write_json(path, {"a": 1.0})
    with pytest.raises(ValueError, match=r"a\.b\[1\] is -Infinity"):
        write_json(path, {"a": {"b": [1.0, np.float64("-inf")]}})
    assert json.loads(path.read_text()) == {"a": 1.0}  # the old file stays


@pytest.mark.parametrize("sparse, dense, persist, expected", [
    ([5, 4, 2, 1], [4, 3, 3, 3], 2, 1.5),          # clean crossing, interpolated
    ([5, 2, 4, 4], [4, 3, 3, 3], 1, None),         # crosses, then reverts: not counted
    ([5, 2, 4, 2], [4, 3, 3, 3], 2, None),         # reverts, crosses again only at the last evaluation
    ([5, 2, 4, 2, 2], [4, 3, 3, 3, 3], 2, 2.5),    # ... and stays below for two: counted
    ([5, 5, 5], [4, 4, 4], 1, None),               # never crosses
    ([3, 3, 3], [4, 4, 4], 2, 0.0),                # below from the first evaluation (before phase 1)
])
def test_crossover_on_constructed_curves(sparse, dense, persist, expected):
    x = crossover(sparse, dense, persist=persist)
    assert x == (None if expected is None else pytest.approx(expected))


def test_repeated_domains_are_measured_from_their_first_training():
    order = ["a", "b", "c", "a", "b"]
    domains, first = first_phases(order)
    assert domains == ["a", "b", "c"] and first.tolist() == [0, 1, 2]
    L = np.array([[1.0, 5.0, 6.0],
                  [2.0, 2.0, 5.0],
                  [3.0, 2.5, 2.0],
                  [1.5, 3.0, 2.6],
                  [2.5, 1.8, 2.9]])
    # a: final 2.5 - best of phases 0..3 (1.0); b: 1.8 - 2.0; c: 2.9 - 2.0
    assert forgetting_per_domain(L, first).tolist() == pytest.approx([1.5, -0.2, 0.9])
    assert backward_transfer(L, first) == pytest.approx(((1.0 - 2.5) + (2.0 - 1.8) + (2.0 - 2.9)) / 3)
    assert forward_transfer(L, [7.0, 7.0, 7.0], first) == pytest.approx(((7 - 5.0) + (7 - 5.0)) / 2)
    assert seen_mean_loss(L, first).tolist() == pytest.approx([1.0, 2.0, 2.5, L[3].mean(), L[4].mean()])


# Per topology of the fake run: (forget per phase since last trained, loss right after training, joint model's
# loss, loss after the first steps of a new domain, lr search's loss at factor 1). Sparse forgets less and crosses;
# the capacity control forgets most.
FAKE = {"dense": (0.8, 2.0, 1.9, 3.0, 2.4), "narrow": (0.9, 2.2, 2.1, 3.2, 2.6), "random": (0.3, 2.3, 2.2, 3.3, 2.7)}


def _step_log(folder, phase):
    """A DVCLive loss log of two logged windows."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "loss.tsv").write_text(f"step\tloss\n0\t{6.0 - phase / 10}\n1\t{5.0 - phase / 10}\n")


def _fake_run(tmp_path, toy_params, seeds, rng_seed=0, references=("dense", "narrow", "random")):
    """Eval (with the early losses), topology, mechanism, reference and lr-search files of a run with made-up
    losses for toy_params' topologies (dense, narrow, random), then analyze on them."""
    # The order comes back to alpha and beta: five phases over three domains, as experiment 3 cycles them.
    order = ["alpha", "beta", "gamma", "alpha", "beta"]
    params = {**toy_params, "seeds": seeds, "data": {**toy_params["data"], "order": order},
              "references": list(references)}
    assert set(params["topologies"]) == set(FAKE)
    domains = order[:3]
    rng = np.random.default_rng(rng_seed)
    for sub in ("eval", "topology", "mechanism"):
        (tmp_path / "metrics" / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("references", "lr_search/points"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    factors = params["lr_search"]["factors"]
    for topology in params["topologies"]:
        at_one = FAKE[topology][4]
        points = [{"factor": f, "lr": params["train"]["lr"] * f, "diverged": 0, "tokens": params["lr_search"]["tokens"],
                   "val_loss": at_one + 0.1 * abs(math.log2(f))} for f in factors]  # best at factor 1
        for point in points:
            folder = tmp_path / "lr_search" / "points" / f"{topology}-x{point['factor']}"
            folder.mkdir()
            (folder / "point.json").write_text(json.dumps(point))
        best = min(points, key=lambda q: q["val_loss"])
        (tmp_path / "lr_search" / topology).mkdir()
        (tmp_path / "lr_search" / topology / "chosen.json").write_text(json.dumps(
            {"lr": best["lr"], "factor": best["factor"], "val_loss": best["val_loss"], "grid_points": len(points),
             "at_grid_edge": int(best["factor"] in (factors[0], factors[-1]))}))
    for seed in seeds:
        for topology, (forget, start, joint, early, _) in FAKE.items():
            _step_log(tmp_path / "dvclive" / "pretrain" / f"{topology}-s{seed}" / "plots" / "metrics", 0)
            (tmp_path / "metrics" / "topology" / f"{topology}-s{seed}.json").write_text(
                json.dumps({"summary": {"model_active_non_embedding": 30000 if topology == "dense" else 8000}}))
            if topology in references:
                (tmp_path / "references" / f"{topology}-s{seed}.json").write_text(json.dumps(
                    {"joint": {d: joint + rng.normal(0, 0.02) for d in domains},
                     "scratch": {d: 3.6 + rng.normal(0, 0.02) for d in domains[1:]},
                     "tokens": {"joint": params["pretrain"]["tokens"] + 2 * params["phase"]["tokens"],
                                "scratch": params["phase"]["tokens"]}}))
            for mechanism in params["mechanisms"]:
                loss = {"untrained": {d: 5.7 for d in domains}}
                for j, d in enumerate(order):
                    # a domain's loss grows by `forget` per phase since it was last trained; 4.0 before that
                    since = {e: j - max(k for k in range(j + 1) if order[k] == e) for e in order[:j + 1]}
                    loss[f"phase{j}_{d}"] = {e: (start + forget * since[e] if e in since else 4.0)
                                             + rng.normal(0, 0.02) for e in domains}
                # A few steps into each phase; a revisited domain is relearned faster (not the learning speed).
                first_visit = [order.index(d) == k for k, d in enumerate(order)]
                early_loss = {f"early{k}_{order[k]}": {order[k]: (early if first_visit[k] else start + 0.3)
                                                       + rng.normal(0, 0.02)} for k in range(1, len(order))}
                arm = f"{topology}-{mechanism}-s{seed}"
                for k, d in enumerate(order[1:], start=1):  # step logs: two logged windows per phase
                    _step_log(tmp_path / "dvclive" / "sequential" / arm / "plots" / "metrics" / f"phase{k}_{d}", k)
                (tmp_path / "metrics" / "eval" / f"{arm}.json").write_text(json.dumps({"loss": loss,
                                                                                       "early": early_loss}))
                (tmp_path / "metrics" / "mechanism" / f"{arm}.json").write_text(json.dumps(
                    {"train_flops": 1e12, "pretrain_flops": 5e12,
                     "pretrain_flops_per_token": 6e5 if topology == "dense" else 2e5, "extra_memory_bytes": 0,
                     "inference_flops_per_token": 1e5, "params_active": 1e4}))
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "manifest.json").write_text(json.dumps(
        {"vocab_size": 300, "domains": {d: {"train": {"tokens": 1000}, "eval_tokens": 256} for d in domains}}))
    d = str(tmp_path)
    analyze(params, f"{d}/metrics/eval", f"{d}/metrics", f"{d}/plots", f"{d}/report.md", f"{d}/tokens",
            references_dir=f"{d}/references", lr_dir=f"{d}/lr_search", live_dir=f"{d}/dvclive")
    metrics = {k: json.loads((tmp_path / "metrics" / f"{k}.json").read_text()) for k in ("summary", "crossover", "stats")}
    return metrics, (tmp_path / "report.md").read_text()


def test_report_of_one_seed_prints_no_p_value(tmp_path, toy_params):
    metrics, report = _fake_run(tmp_path, toy_params, [0])
    assert "no test possible with one seed" in report and "p=" not in report
    assert "H1 (" in report and "against dense: undecided (one seed" in report
    assert "against narrow@0.25: undecided (one seed" in report
    forgetting = metrics["stats"]["tests"]["random-none_vs_dense-none"]["forgetting"]
    assert "p_value" not in forgetting and "p_sign_flip" not in forgetting and forgetting["n"] == 1
    assert (tmp_path / "report.html").read_text().count("<table>") >= 3


def _numbers(obj, where=""):
    """Every leaf of a metrics file, with its key path: DVC reads numbers and drops the rest."""
    if isinstance(obj, dict):
        return [x for k, v in obj.items() for x in _numbers(v, f"{where}.{k}")]
    return [(where, obj)]


def _by_hand(tmp_path, arm: str) -> dict[str, float]:
    """The summary figures that need the early losses, the references or the repeated order, recomputed from
    the fake run's files: order alpha, beta, gamma, alpha, beta (first trained at phases 0, 1, 2)."""
    ev = json.loads((tmp_path / "metrics" / "eval" / f"{arm}.json").read_text())
    ref = json.loads((tmp_path / "references" / f"{arm.split('-')[0]}-s{arm.rsplit('s', 1)[1]}.json").read_text())
    loss, order = ev["loss"], ["alpha", "beta", "gamma", "alpha", "beta"]
    L = {(j, e): loss[f"phase{j}_{d}"][e] for j, d in enumerate(order) for e in order[:3]}
    plasticity = {d: L[k, d] for k, d in enumerate(order[:3])}
    final = np.mean([L[4, d] for d in order[:3]])
    # Visits: alpha 0..2, beta 1..3, gamma 2..4, alpha 3..4 (beta at 4 has nothing after it).
    visits = [("alpha", 0, 2), ("beta", 1, 3), ("gamma", 2, 4), ("alpha", 3, 4)]
    per_visit = [L[e, d] - min(L[j, d] for j in range(p, e)) for d, p, e in visits]
    return {"plasticity": np.mean(list(plasticity.values())),
            "learning_speed": np.mean([ev["early"]["early1_beta"]["beta"], ev["early"]["early2_gamma"]["gamma"]]),
            "intransigence": np.mean([plasticity[d] - ref["joint"][d] for d in order[:3]]),
            "joint_gap": final - np.mean(list(ref["joint"].values())),
            "fwt_vs_scratch": np.mean([ref["scratch"][d] - plasticity[d] for d in ("beta", "gamma")]),
            "forgetting_per_visit": np.mean(per_visit),
            "core_forgetting_per_visit": np.mean([per_visit[0], per_visit[3]])}


def test_report_numbers_equal_the_metrics_files(tmp_path, toy_params):
    metrics, report = _fake_run(tmp_path, toy_params, [0, 1, 2])
    for name, m in metrics.items():
        for where, v in _numbers(m):
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), (name, where, v)
    groups, tests = metrics["stats"]["groups"], metrics["stats"]["tests"]
    assert set(groups) == {"dense-none", "narrow-none", "random-none"}
    for g in groups.values():
        assert set(g) == {m for m, _ in statistics.METRICS}
        for d in g.values():
            assert d["n"] == 3 and d["ci_low"] <= d["mean"] <= d["ci_high"]
    forget = groups["random-none"]["forgetting"]
    assert (f"{forget['mean']:.3f} ± {forget['std']:.3f} [{forget['ci_low']:.3f}, {forget['ci_high']:.3f}]"
            in report)
    # The per-seed differences of the summary's forgetting, tested by hand.
    summary = metrics["summary"]
    d = [summary[f"random-none-s{s}"]["forgetting"] - summary[f"dense-none-s{s}"]["forgetting"] for s in range(3)]
    t = tests["random-none_vs_dense-none"]["forgetting"]
    assert t["p_value"] == pytest.approx(_t_test_p(d)) and t["p_sign_flip"] == 0.25
    # The declared metrics: each arm's headline and each H test's difference and adjusted p, copied exactly.
    for arm, s in summary.items():
        head = json.loads((tmp_path / "metrics" / "headline" / f"{arm}.json").read_text())
        assert head == {**{k: s[k] for k in ("final_avg_loss", "forgetting", "bwt", "core_forgetting", "plasticity")},
                        "total_tflops": 6.0}
    assert json.loads((tmp_path / "metrics" / "verdicts" / "family.json").read_text()) == {"tests": 3}
    for name, v in metrics["stats"]["verdicts"].items():
        assert json.loads((tmp_path / "metrics" / "verdicts" / f"{name}.json").read_text()) == {
            "diff": v["diff"], "p_holm": v["p_holm"]}
    # The step logs grouped: a long table, the later phases of an arm end to end (2 windows per phase).
    steps = (tmp_path / "plots" / "data" / "phase_steps.csv").read_text().splitlines()
    assert steps[0] == "step,arm,loss" and "3.0,random-none-s2,4.8" in steps and len(steps) == 1 + 9 * 8
    assert (tmp_path / "plots" / "training_curves.png").stat().st_size > 1000
    assert (f"random@0.25 forgets less than dense: {t['mean_a']:.3f} vs {t['mean_b']:.3f} nats, difference "
            f"{t['diff']:+.3f} [95% CI {t['ci_low']:+.3f}, {t['ci_high']:+.3f}], d_z {t['d_z']:+.2f}, "
            f"p={t['p_value']:.3g}, sign-flip p=0.25, 3 seeds") in report
    # The family: H1 against dense and against the capacity control, H2; Holm over the three.
    v, about = metrics["stats"]["verdicts"], metrics["stats"]["family"]
    assert sorted(v) == ["H1_random", "H1n_random", "H2_random"] and about == {"size": 3, "alpha": 0.05, "min_seeds": 3}
    holm = _holm_by_hand({k: m["p_value"] for k, m in v.items()})
    for k, m in v.items():
        assert m["p_holm"] == pytest.approx(holm[k]) and holm[k] < stats.ALPHA
    # Sparse forgets far less, but its plasticity is 0.3 worse than dense's and 0.1 worse than narrow's.
    h1 = next(line for line in report.splitlines() if line.startswith("**H1 ("))
    assert "supported: " not in h1 and "no capacity control" not in h1
    assert "**: against dense: not attributable to sparsity: random@0.25 forgets less than dense: " in h1
    assert "; against narrow@0.25: not attributable to sparsity: random@0.25 forgets less than narrow@0.25: " in h1
    assert "(random@0.25 learned less than dense (plasticity" in h1 and "(random@0.25 learned less than narrow@0.25" in h1
    assert f"(Holm-adjusted {v['H1n_random']['p_holm']:.3g}), 3 seeds" in h1
    assert "How to read a verdict" in report and "the masks and the batch order" in report
    assert re.search(r"H2 .*: supported: random@0\.25 after pretraining: 3 of 3 seeds start worse than dense by more "
                     r"than 0\.02 nats", report)
    assert v["H2_random"]["seeds_overtake"] == 3
    # Every arm's row, and the figures from the early losses, the references and the repeated order by hand.
    assert len(summary) == 9
    for arm, s in summary.items():
        for name, value in _by_hand(tmp_path, arm).items():
            assert s[name] == pytest.approx(value), (arm, name)
        assert (f"| {arm} | {s['final_avg_loss']:.3f} | {s['forgetting']:.3f} | {s['bwt']:.3f} | {s['plasticity']:.3f} "
                f"| {s['learning_speed']:.3f} | {s['intransigence']:.3f} | {s['joint_gap']:.3f} | "
                f"{s['fwt_vs_scratch']:.3f} |") in report
        assert (f"| {arm} | {s['forgetting_per_visit']:.3f} | {s['bwt_per_visit']:.3f} | "
                f"{s['core_forgetting_per_visit']:.3f} |") in report
    # The lr grid: the loss at factor 0.5 and, in bold, at the chosen factor 1.
    for topology, (*_, at_one) in FAKE.items():
        assert f"| {topology} | {at_one + 0.1:.3f} | **{at_one:.3f}** | 0.003 (grid edge: widen lr_search.factors) |" in report
    assert {k.split("-")[0] for k in metrics["crossover"]} == {"random"}
    for key, c in metrics["crossover"].items():
        assert c["seen_mean_crossed"] == 1  # sparse starts worse, forgets less: it crosses
        assert f"- {key}, mean seen-domain loss: phase {c['seen_mean_phase']:.2f} ({c['seen_mean_tokens']:,.0f} tokens" in report
        assert c["seen_mean_flops"] < c["seen_mean_dense_flops"]
    assert "H3 (" in report and "not tested in this run" in report


def test_topologies_without_references_get_no_reference_metrics_and_a_dash(tmp_path, toy_params):
    """`references` lists the topologies whose joint and from-scratch runs exist (the default: none): the others'
    summaries leave the reference metrics out (never NaN) and the report marks their cells."""
    metrics, report = _fake_run(tmp_path, toy_params, [0, 1, 2], references=["dense"])
    for arm, s in metrics["summary"].items():
        has = {"intransigence", "joint_avg_loss", "joint_gap", "fwt_vs_scratch"} <= set(s)
        assert has == arm.startswith("dense-") and "learning_speed" in s and "plasticity" in s
        if not has:
            assert f"| {s['learning_speed']:.3f} | - | - | - | " in report
    assert "params `references` only (dense); - marks the others" in report
