"""Seeds statistics, crossover on constructed curves, repeated domains, and the report of analyze on
synthetic loss matrices (no training: the toy dvc repro of test_pipeline.py covers the stages)."""
import json
import math
import re

import numpy as np
import pytest
from scipy import stats as sps

from sparsecl.metrics import stats
from sparsecl.metrics.continual import (backward_transfer, crossover, first_phases, forgetting_per_domain,
                                        forward_transfer, seen_mean_loss)
from sparsecl.report.analyze import Arm, analyze
from sparsecl.report.statistics import _crossover_verdict


def test_bootstrap_ci_by_hand_and_against_scipy():
    # Two values: a resampled mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4: the 95% interval is [0, 1].
    assert stats.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert stats.bootstrap_ci([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7))
    x = [0.41, 0.52, 0.38, 0.47, 0.60, 0.44]
    ours = stats.bootstrap_ci(x)
    ref = sps.bootstrap((x,), np.mean, n_resamples=20_000, method="percentile", random_state=1).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=0.01)
    assert ours == stats.bootstrap_ci(x)  # seeded: the same values give the same interval


def test_paired_t_test_by_hand():
    a, b = [0.41, 0.45, 0.37], [0.87, 0.80, 0.91]
    d = np.subtract(a, b)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    t_res = stats.paired_test(a, b)
    assert t_res["p_value"] == pytest.approx(2 * sps.t.sf(abs(t), df=2))
    assert t_res["diff"] == pytest.approx(d.mean()) and t_res["mean_b"] == pytest.approx(np.mean(b))
    assert stats.paired_test([1.0, 2.0], [1.0, 2.0])["p_value"] == 1.0


def test_one_seed_has_no_p_value_and_says_so():
    t = stats.paired_test([0.4], [0.9])
    assert "p_value" not in t
    said = stats.sentence("random@0.05", "dense", t, "forgets less", "forgets more")
    assert said == "random@0.05 forgets less than dense: 0.400 vs 0.900 nats, no test possible with one seed, 1 seed"
    assert "ci_low" not in stats.describe([0.4])


def test_three_seeds_ci_is_ordered():
    d = stats.describe([0.3, 0.5, 0.45])
    assert d["ci_low"] <= d["mean"] <= d["ci_high"] and d["std"] == pytest.approx(np.std([0.3, 0.5, 0.45], ddof=1))


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


def _fake_run(tmp_path, toy_params, seeds, rng_seed=0):
    """Eval, topology and mechanism files of a run with made-up losses: sparse forgets less and crosses."""
    # The order comes back to alpha and beta: five phases over three domains, as experiment 3 cycles them.
    order = ["alpha", "beta", "gamma", "alpha", "beta"]
    params = {**toy_params, "seeds": seeds, "data": {**toy_params["data"], "order": order}}
    domains = order[:3]
    rng = np.random.default_rng(rng_seed)
    for sub in ("eval", "topology", "mechanism"):
        (tmp_path / "metrics" / sub).mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for topology, forget, start in (("dense", 0.8, 2.0), ("random", 0.3, 2.3)):
            (tmp_path / "metrics" / "topology" / f"{topology}-s{seed}.json").write_text(
                json.dumps({"summary": {"model_active_non_embedding": 30000 if topology == "dense" else 8000}}))
            for mechanism in params["mechanisms"]:
                loss = {"untrained": {d: 5.7 for d in domains}}
                for j, d in enumerate(order):
                    # a domain's loss grows by `forget` per phase since it was last trained; 4.0 before that
                    since = {e: j - max(k for k in range(j + 1) if order[k] == e) for e in order[:j + 1]}
                    loss[f"phase{j}_{d}"] = {e: (start + forget * since[e] if e in since else 4.0)
                                             + rng.normal(0, 0.02) for e in domains}
                arm = f"{topology}-{mechanism}-s{seed}"
                (tmp_path / "metrics" / "eval" / f"{arm}.json").write_text(json.dumps({"loss": loss}))
                (tmp_path / "metrics" / "mechanism" / f"{arm}.json").write_text(json.dumps(
                    {"train_flops": 1e12, "extra_memory_bytes": 0, "inference_flops_per_token": 1e5,
                     "params_active": 1e4}))
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "manifest.json").write_text(json.dumps(
        {"vocab_size": 300, "domains": {d: {"train": {"tokens": 1000}, "eval_tokens": 256} for d in domains}}))
    d = str(tmp_path)
    analyze(params, f"{d}/metrics/eval", f"{d}/metrics", f"{d}/plots", f"{d}/report.md", f"{d}/tokens")
    metrics = {k: json.loads((tmp_path / "metrics" / f"{k}.json").read_text()) for k in ("summary", "crossover", "stats")}
    return metrics, (tmp_path / "report.md").read_text()


def test_report_of_one_seed_prints_no_p_value(tmp_path, toy_params):
    metrics, report = _fake_run(tmp_path, toy_params, [0])
    assert "no test possible with one seed" in report and "p=" not in report
    assert "H1 (" in report and "undecided (one seed" in report
    assert "p_value" not in metrics["stats"]["tests"]["random-none_vs_dense-none"]["forgetting"]
    assert (tmp_path / "report.html").read_text().count("<table>") >= 3


def test_report_numbers_equal_the_metrics_files(tmp_path, toy_params):
    metrics, report = _fake_run(tmp_path, toy_params, [0, 1, 2])
    groups, tests = metrics["stats"]["groups"], metrics["stats"]["tests"]
    for g in groups.values():
        for d in g.values():
            assert d["n"] == 3 and d["ci_low"] <= d["mean"] <= d["ci_high"]
    forget = groups["random-none"]["forgetting"]
    assert (f"{forget['mean']:.3f} ± {forget['std']:.3f} [{forget['ci_low']:.3f}, {forget['ci_high']:.3f}]"
            in report)
    t = tests["random-none_vs_dense-none"]["forgetting"]
    assert (f"random@0.25 forgets less than dense: {t['mean_a']:.3f} vs {t['mean_b']:.3f} nats, "
            f"p={t['p_value']:.3g}, 3 seeds") in report
    assert "**H1 (" in report and "supported: random@0.25 forgets less" in report
    for arm, s in metrics["summary"].items():
        assert f"| {arm} | {s['final_avg_loss']:.3f} | {s['final_ppl_geomean']:.1f} | {s['forgetting']:.3f} |" in report
    for key, c in metrics["crossover"].items():
        assert c["seen_mean_crossed"] == 1  # sparse starts worse, forgets less: it crosses
        assert f"- {key}, mean seen-domain loss: phase {c['seen_mean_phase']:.2f} ({c['seen_mean_tokens']:,.0f} tokens" in report
        assert c["seen_mean_flops"] < c["seen_mean_dense_flops"]
    assert re.search(r"H2 .*: supported: random@0\.25 after pretraining", report)
    assert "H3 (" in report and "not tested in this run" in report


def test_h2_verdict_when_only_the_core_domain_crosses():
    first = np.arange(3)
    arms = [Arm(t, "none", s, np.full((3, 3), 4.0 if t == "dense" else 5.0), np.full(3, 8.0), first)
            for t in ("dense", "random") for s in (0, 1)]
    cross = {f"random-none-s{s}_vs_dense": {"seen_mean_crossed": 0, "core_crossed": 1, "core_phase": 2.0}
             for s in (0, 1)}
    verdict = _crossover_verdict("random", arms, cross, 0.05)
    assert verdict.startswith("mixed (only the core-domain loss overtakes dense)")
    assert "phase 2.00 (mean) in 2 of 2 seeds" in verdict
