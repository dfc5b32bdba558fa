"""Seeds statistics of the analyze stage: per arm group (topology x mechanism, over seeds) the mean, std and
t-interval of every metric, the paired tests and their plain sentences, and the verdicts on H1, H2 and H3.
The verdicts' tests are one family, every H1-H3 test of the run, and are decided on Holm-adjusted p-values;
the other tests are reported with raw p-values and decide nothing."""
from __future__ import annotations

import numpy as np

from sparsecl.metrics import stats
from sparsecl.metrics.continual import crossover

METRICS = (("forgetting", "forgetting"), ("plasticity", "plasticity"), ("bwt", "BWT"),
           ("fwt_vs_untrained", "FWT vs untrained"), ("final_avg_loss", "final avg loss"),
           ("core_forgetting", "core forgetting"))
STRUCTURED = ("brf", "expander")  # H3: the structured topologies, each against random
DENSE = ("dense", "narrow")  # the full dense model and its capacity control (a narrower dense model)
# What a comparison's sentences say, per metric: (metric, the verb when a < b, when a >= b).
SENTENCES = (("forgetting", "forgets less", "forgets more"),
             ("final_avg_loss", "ends with a lower average loss", "ends with a higher average loss"))


def label(topology: str, mechanism: str, density: float) -> str:
    """"dense", "random@0.05", "random@0.05+ssd", "narrow@0.05" (the dense control with the weights of a 0.05
    sparse arm): what a reader of the report calls an arm group."""
    name = "dense" if topology == "dense" else f"{topology}@{density:g}"
    return name if mechanism == "none" else f"{name}+{mechanism}"


def groups(arms, summary: dict) -> dict[tuple[str, str], list[dict]]:
    """(topology, mechanism) -> the arms' summaries in seed order (every group has every seed)."""
    out: dict[tuple[str, str], list[dict]] = {}
    for a in sorted(arms, key=lambda a: a.seed):
        out.setdefault((a.topology, a.mechanism), []).append(summary[a.name])
    return out


def pairs(keys) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """(a, b) group pairs to test: sparse (and the capacity control) vs dense with the same mechanism, sparse vs
    the capacity control, each mechanism vs none on the same topology, and each structured topology vs random
    with the same mechanism."""
    keys = list(keys)
    out = []
    for t, m in keys:
        refs = ([("dense", m)] * (t != "dense") + [("narrow", m)] * (t not in DENSE) + [(t, "none")] * (m != "none")
                + [("random", m)] * (t in STRUCTURED))
        out += [((t, m), ref) for ref in refs if ref in keys]
    return out


def key(group: tuple[str, str]) -> str:
    return "-".join(group)


def compute(arms, summary: dict, analysis: dict) -> dict:
    """The metrics file: numbers only (DVC drops lists; sentences go to the report)."""
    g = groups(arms, summary)
    values = {k: {m: [s[m] for s in runs] for m, _ in METRICS} for k, runs in g.items()}
    tests = {f"{key(a)}_vs_{key(b)}": {m: stats.paired_test(values[a][m], values[b][m]) for m, _ in METRICS}
             for a, b in pairs(g)}
    return {"groups": {key(k): {m: stats.describe(v[m]) for m, _ in METRICS} for k, v in values.items()},
            "tests": tests, **family(arms, tests, analysis)}


def family(arms, tests: dict, analysis: dict) -> dict:
    """The verdicts' tests, mechanism `none` throughout: H1, each sparse topology's forgetting against dense
    and against the capacity control (`narrow`, when it ran); H2, its final average loss against dense, with the per-seed start gap and crossing; H3, brf's and
    expander's forgetting against random. Each gets its Holm-adjusted p over all of them and the minimum
    detectable difference at alpha / size (where Holm's first step tests). A member without a p-value (a
    non-finite value) still counts in the size: the family is fixed by the arms that ran, not by the data."""
    keys = {(a.topology, a.mechanism) for a in arms}
    sparse = sorted(t for t, m in keys if t not in DENSE and m == "none")
    members = {}
    for t in sparse if ("dense", "none") in keys else []:
        vs_dense = tests[f"{t}-none_vs_dense-none"]
        members[f"H1_{t}"] = dict(vs_dense["forgetting"])
        if ("narrow", "none") in keys:
            members[f"H1n_{t}"] = dict(tests[f"{t}-none_vs_narrow-none"]["forgetting"])
        members[f"H2_{t}"] = {**vs_dense["final_avg_loss"], **overtaking(arms, t, analysis)}
    for t in sparse:
        if t in STRUCTURED and ("random", "none") in keys:
            members[f"H3_{t}"] = dict(tests[f"{t}-none_vs_random-none"]["forgetting"])
    size = len(members)
    tested = [name for name, t in members.items() if "p_value" in t]
    adjusted = stats.holm([members[name]["p_value"] for name in tested] + [1.0] * (size - len(tested)))
    for name, p in zip(tested, adjusted):
        members[name]["p_holm"] = p
        if (mdd := stats.detectable(members[name], alpha=stats.ALPHA / size)) is not None:
            members[name]["mdd"] = mdd
    about = {"size": size, "alpha": stats.ALPHA, "min_seeds": stats.MIN_TEST_SEEDS}
    return {"verdicts": members, "family": about}


def overtaking(arms, topology: str, analysis: dict) -> dict[str, float]:
    """H2 seed by seed, against dense of the same seed (mechanism `none`): the start gap after pretraining, the
    seeds that start worse by more than `min_start_gap` nats, and of those the seeds whose mean seen-domain
    loss then stays more than `crossover_margin` nats below dense to the end (for `crossover_persist`
    evaluations at least), with the mean crossing phase; the core-domain loss alongside. A seed that does not
    start worse never counts as crossed."""
    runs = [a for a in arms if a.topology == topology and a.mechanism == "none"]
    dense = {a.seed: a for a in arms if a.topology == "dense" and a.mechanism == "none"}
    gap = stats.describe([a.curves["seen_mean"][0] - dense[a.seed].curves["seen_mean"][0] for a in runs])
    worse = [a for a in runs if a.curves["seen_mean"][0] - dense[a.seed].curves["seen_mean"][0]
             > analysis["min_start_gap"]]
    out = {"seeds_start_worse": len(worse)}
    out |= {"start_gap": gap["mean"]} if "mean" in gap else {}
    out |= {"start_gap_sd": gap["std"]} if "std" in gap else {}
    for curve, prefix in (("seen_mean", ""), ("core", "core_")):
        phases = [x for a in worse if (x := crossover(a.curves[curve], dense[a.seed].curves[curve],
                                                      persist=analysis["crossover_persist"],
                                                      margin=analysis["crossover_margin"])) is not None]
        out[f"{prefix}seeds_overtake"] = len(phases)
        out |= {f"{prefix}crossing_phase": float(np.mean(phases))} if phases else {}
    return out


def _cell(d: dict) -> str:
    if "non_finite" in d:
        return f"non-finite in {d['non_finite']} of {d['n']} seeds"
    if d["n"] == 1:
        return f"{d['mean']:.3f}"
    return f"{d['mean']:.3f} ± {d['std']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"


def sentences(result: dict, density: float) -> dict[str, list[str]]:
    """Comparison key -> its plain sentences."""
    out = {}
    for name, tests in result["tests"].items():
        a, b = (label(*k.split("-", 1), density) for k in name.split("_vs_"))
        out[name] = [stats.sentence(a, b, tests[m], less, more) for m, less, more in SENTENCES]
    return out


def section(result: dict, density: float) -> list[str]:
    """Report lines: the table of every group's metrics with intervals, then every test and its sentences."""
    lines = ["## Across seeds", "",
             f"Per arm group: mean ± sample standard deviation [{stats.INTERVAL_NAME} of the mean]; one seed gives "
             f"the value alone.", "",
             "| arm group | seeds | " + " | ".join(lbl for _, lbl in METRICS) + " |", "|---" * (len(METRICS) + 2) + "|"]
    for name, metrics in result["groups"].items():
        lines.append(f"| {label(*name.split('-', 1), density)} | {metrics['forgetting']['n']} | "
                     + " | ".join(_cell(metrics[m]) for m, _ in METRICS) + " |")
    lines += ["", f"Tests: {stats.TEST_NAME}, pairing the arms of the same seed, with the mean difference, its "
                  f"{stats.INTERVAL_NAME} and d_z (mean / sd of the differences). The p-values here are raw, one "
                  f"per comparison and metric, and decide nothing: the verdicts rest on their own Holm-adjusted "
                  f"family. Below 3 seeds, with differences equal in every seed, or with a non-finite value there "
                  f"is no t-test; the exact sign-flip p beside it needs no normality but cannot go below 2 / 2^n.",
              ""]
    said = sentences(result, density)
    if not said:
        lines.append("No pair of arm groups to compare in this run.")
    for name, lines_of_test in said.items():
        lines += [f"- {s}" for s in lines_of_test]
    return lines + [""]


def outcome(t: dict, claim: int, about: dict) -> str:
    """The first words of a verdict on a family member: the claim is a < b (`claim` -1), a > b (+1) or a != b
    (0). "supported" and "evidence against" need the Holm-adjusted p below alpha, with the difference in and
    against the claim's direction; otherwise "no evidence either way at this n", with what these seeds could
    have detected; without a test, "undecided". A claim of a difference (0) cannot meet evidence against: that
    would take an equivalence test."""
    if "non_finite" in t:
        return f"undecided (a non-finite value in {t['non_finite']} of {t['n']} seeds: no test)"
    if t["n"] < 2:
        return "undecided (one seed, no test possible)"
    if "p_holm" not in t:
        return f"no evidence either way at this n ({_detectable(t, about)})"
    if t["p_holm"] < stats.ALPHA:
        agrees = claim == 0 or np.sign(t["diff"]) == claim
        return "supported" if agrees else "evidence against (significant the other way)"
    return f"no evidence either way at this n ({_detectable(t, about)})"


def _detectable(t: dict, about: dict) -> str:
    """The smallest difference these seeds could have detected, or why none could be."""
    n, size = t["n"], about["size"]
    if n < about["min_seeds"]:
        return (f"{n} seeds are too few for a test: the paired t-test needs {about['min_seeds']}, and the exact "
                f"sign-flip test cannot go below p = {2 / 2 ** n:.3g}")
    if "mdd" in t:
        return (f"the smallest difference these seeds could have detected is {t['mdd']:.3f} nats: t-based, "
                f"{stats.POWER:.0%} power at p < {stats.ALPHA / size:.3g}, from the sd of the differences")
    if t.get("sd", 1) == 0:
        return f"the difference is the same {t['diff']:+.3g} nats in every seed: no spread, so no t-test"
    return "no test"


def _forgetting_verdict(result: dict, density: float, name: str, a: tuple[str, str], b: tuple[str, str],
                        claim: int, learned_less_reason: str | None = None) -> str:
    """The verdict on family member `name`, group a against b by forgetting: the claim is "a forgets less than
    b" (H1, `claim` -1) or "a differs from b" (H3, 0). With a `learned_less_reason` (a forgets less but
    learned less) support becomes "not attributable to sparsity", and the reason is given."""
    t = result["verdicts"][name]
    said = stats.sentence(label(*a, density), label(*b, density), t, "forgets less", "forgets more")
    first = outcome(t, claim, result["family"])
    if learned_less_reason is None:
        return f"{first}: {said}"
    first = "not attributable to sparsity" if first == "supported" else first
    return f"{first}: {said} ({learned_less_reason})"


READING = ("How to read a verdict: \"supported\" and \"evidence against\" mean that the paired t-test over "
           "the seeds, Holm-adjusted over the {size} tests of this section, gives p < {alpha:g} with the "
           "difference in and against the claimed direction, and \"no evidence either way at this n\" means it "
           "does not, and then says the smallest difference these seeds could have detected (or how many seeds "
           "any verdict needs: {min_seeds} here). The seeds vary the model init, the masks and the batch order; "
           "the data order, the tokens and the evaluation windows are the same in every seed, so no verdict says "
           "how much those matter.")


def verdicts(result: dict, density: float, analysis: dict) -> list[str]:
    """H1, H2 and H3 in plain words, each with the numbers it rests on (the project's three hypotheses)."""
    members, about = result["verdicts"], result["family"]
    h1 = sorted(n.split("_", 1)[1] for n in members if n.startswith("H1_"))
    h3 = sorted(n.split("_", 1)[1] for n in members if n.startswith("H3_"))
    lines = ["## Verdicts", ""]
    if members:
        lines += [READING.format(size=about["size"], alpha=about["alpha"], min_seeds=about["min_seeds"]), ""]

    said = [_h1_verdict(result, density, t, ref) for t in h1
            for ref in ("dense", "narrow") if f"H1{'n' * (ref == 'narrow')}_{t}" in members]
    control = "" if any(n.startswith("H1n_") for n in members) else (
        " (no capacity control in this run: add `narrow` to `topologies` to tell sparsity from fewer weights)")
    lines += ["**H1 (a fixed sparse topology alone forgets less than dense, no mechanism)**" + control + ": "
              + ("; ".join(said) if said else "not tested in this run (needs `dense` and a sparse topology with "
                                              "mechanism `none`)."), ""]

    said = [_crossover_verdict(result, density, t, analysis) for t in h1]
    lines += [f"**H2 (a sparse model that starts worse overtakes dense after enough domain switches)**, at density "
              f"{density:g} (other densities: experiment 1's sweep): "
              + ("; ".join(said) if said else "not tested in this run."), ""]

    said = [_forgetting_verdict(result, density, f"H3_{t}", (t, "none"), ("random", "none"), claim=0) for t in h3]
    lines += ["**H3 (at equal density, structured topologies differ from random)**: "
              + ("; ".join(said) if said else "not tested in this run (needs `random` and `brf` or `expander`: "
                                              "`presets/topologies.yaml`)."), ""]
    return lines


def learned_less(result: dict, density: float, a: tuple[str, str], b: tuple[str, str]) -> str | None:
    """Why a's lower forgetting may be only a's weaker learning: a's plasticity (loss right after training each
    domain) or final average loss is higher than b's (means over seeds). None when a learned as well."""
    tests = result["tests"][f"{key(a)}_vs_{key(b)}"]
    p, f = tests["plasticity"], tests["final_avg_loss"]
    if "diff" not in p or "diff" not in f or (p["diff"] <= 0 and f["diff"] <= 0):
        return None
    return (f"{label(*a, density)} learned less than {label(*b, density)} (plasticity {p['mean_a']:.3f} vs "
            f"{p['mean_b']:.3f} nats, final average loss {f['mean_a']:.3f} vs {f['mean_b']:.3f}): it forgets less "
            f"because it learned less, not because it kept more")


def _h1_verdict(result: dict, density: float, topology: str, ref: str) -> str:
    """H1 on one sparse topology against `dense` or the capacity control `narrow`. A significant lower
    forgetting counts as support only if the sparse arm also learned as well (`learned_less`)."""
    a, b = (topology, "none"), (ref, "none")
    name = f"H1{'n' * (ref == 'narrow')}_{topology}"
    forgets_less = result["verdicts"][name].get("diff", 0) < 0
    why = learned_less(result, density, a, b) if forgets_less else None
    return f"against {label(*b, density)}: {_forgetting_verdict(result, density, name, a, b, -1, why)}"


def _crossover_verdict(result: dict, density: float, topology: str, analysis: dict) -> str:
    """H2 on one sparse topology: it must start worse than dense by more than `min_start_gap` in every seed
    (else the claim does not apply), cross for good by more than `crossover_margin` in every seed, and end
    with a lower final average loss by the family's test; two seeds at least before anything but undecided."""
    t = result["verdicts"][f"H2_{topology}"]
    n, gap, margin = t["n"], analysis["min_start_gap"], analysis["crossover_margin"]
    name = label(topology, "none", density)
    spread = f", sd {t['start_gap_sd']:.3f} over seeds" if "start_gap_sd" in t else ""
    start = f"{t['start_gap']:+.3f} nats{spread}" if "start_gap" in t else "not finite"
    found = {c: (f"in {t[f'{c}seeds_overtake']} of {n} seeds (mean phase {t[f'{c}crossing_phase']:.2f})"
                 if t[f"{c}seeds_overtake"] else "in no seed") for c in ("", "core_")}
    said = (f"{name} after pretraining: {t['seeds_start_worse']} of {n} seeds start worse than dense by more than "
            f"{gap:g} nats (gap {start}); the mean seen-domain loss then stays more than {margin:g} nats below "
            f"dense for good ({analysis['crossover_persist']} evaluations at least) {found['']}, the core-domain "
            f"loss {found['core_']}; "
            + stats.sentence(name, "dense", t, "ends with a lower average loss", "ends with a higher average loss"))
    first = outcome(t, claim=-1, about=result["family"])
    if first.startswith("undecided"):
        return f"{first}: {said}"
    if "start_gap" not in t:
        return f"undecided (a non-finite loss after pretraining: no test): {said}"
    if t["seeds_start_worse"] < n:
        return f"does not apply (it does not start worse by more than {gap:g} nats in every seed): {said}"
    if first == "supported" and t["seeds_overtake"] < n:
        return (f"no evidence either way at this n (it ends lower, but crosses for good by more than {margin:g} "
                f"nats in only {t['seeds_overtake']} of {n} seeds): {said}")
    return f"{first}: {said}"
