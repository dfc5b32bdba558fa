"""Seeds statistics of the analyze stage: per arm group (topology x mechanism, over seeds) the mean, std and
bootstrap CI of every metric, the paired tests, their plain sentences and the verdicts on H1, H2 and H3."""
from __future__ import annotations

import numpy as np

from sparsecl.metrics import stats

METRICS = (("forgetting", "forgetting"), ("bwt", "BWT"), ("fwt_vs_untrained", "FWT vs untrained"),
           ("final_avg_loss", "final avg loss"), ("core_forgetting", "core forgetting"))
STRUCTURED = ("brf", "expander")  # H3: the structured topologies, each against random
# What a comparison's sentences say, per metric: (metric, the verb when a < b, when a >= b).
SENTENCES = (("forgetting", "forgets less", "forgets more"),
             ("final_avg_loss", "ends with a lower average loss", "ends with a higher average loss"))


def label(topology: str, mechanism: str, density: float) -> str:
    """"dense", "random@0.05", "random@0.05+ssd": what a reader of the report calls an arm group."""
    name = "dense" if topology == "dense" else f"{topology}@{density:g}"
    return name if mechanism == "none" else f"{name}+{mechanism}"


def groups(arms, summary: dict) -> dict[tuple[str, str], list[dict]]:
    """(topology, mechanism) -> the arms' summaries in seed order (every group has every seed)."""
    out: dict[tuple[str, str], list[dict]] = {}
    for a in sorted(arms, key=lambda a: a.seed):
        out.setdefault((a.topology, a.mechanism), []).append(summary[a.name])
    return out


def pairs(keys) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """(a, b) group pairs to test: sparse vs dense with the same mechanism, each mechanism vs none on the same
    topology, and each structured topology vs random with the same mechanism."""
    keys = list(keys)
    out = []
    for t, m in keys:
        refs = [("dense", m)] * (t != "dense") + [(t, "none")] * (m != "none") + [("random", m)] * (t in STRUCTURED)
        out += [((t, m), ref) for ref in refs if ref in keys]
    return out


def key(group: tuple[str, str]) -> str:
    return "-".join(group)


def compute(arms, summary: dict) -> dict:
    """The metrics file: numbers only (DVC drops lists; sentences go to the report)."""
    g = groups(arms, summary)
    values = {k: {m: [s[m] for s in runs] for m, _ in METRICS} for k, runs in g.items()}
    return {"groups": {key(k): {m: stats.describe(v[m]) for m, _ in METRICS} for k, v in values.items()},
            "tests": {f"{key(a)}_vs_{key(b)}": {m: stats.paired_test(values[a][m], values[b][m]) for m, _ in METRICS}
                      for a, b in pairs(g)}}


def _cell(d: dict) -> str:
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
    """Report lines: the table of every group's metrics with CIs, then every test and its sentences."""
    lines = ["## Across seeds", "",
             f"Per arm group: mean ± sample standard deviation [{stats.LEVEL:.0%} percentile bootstrap CI of the "
             f"mean, {stats.BOOTSTRAP_SAMPLES:,} resamples of the seeds, seeded]; one seed gives the value alone.", "",
             "| arm group | seeds | " + " | ".join(lbl for _, lbl in METRICS) + " |", "|---" * (len(METRICS) + 2) + "|"]
    for name, metrics in result["groups"].items():
        lines.append(f"| {label(*name.split('-', 1), density)} | {metrics['forgetting']['n']} | "
                     + " | ".join(_cell(metrics[m]) for m, _ in METRICS) + " |")
    lines += ["", f"Tests: {stats.TEST_NAME}, pairing the arms of the same seed; significant below "
                  f"p = {stats.ALPHA}. With one seed no test is possible and no p-value is given.", ""]
    said = sentences(result, density)
    if not said:
        lines.append("No pair of arm groups to compare in this run.")
    for name, lines_of_test in said.items():
        lines += [f"- {s}" for s in lines_of_test]
    return lines + [""]


def _forgetting_verdict(result: dict, density: float, a: tuple[str, str], b: tuple[str, str],
                        claim_is_less: bool) -> str:
    """The verdict on group a against b by forgetting: the claim is "a forgets less than b" (H1) or, with
    `claim_is_less` false, "a differs from b" (H3)."""
    t = result["tests"][f"{key(a)}_vs_{key(b)}"]["forgetting"]
    said = stats.sentence(label(*a, density), label(*b, density), t, "forgets less", "forgets more")
    if "p_value" not in t:
        return f"undecided (one seed, no test possible): {said}"
    if claim_is_less and t["diff"] >= 0:
        return f"not supported (the difference goes the other way): {said}"
    if not stats.significant(t):
        return f"not supported (the difference is not significant): {said}"
    return f"supported: {said}"


def verdicts(result: dict, cross: dict, arms, density: float) -> list[str]:
    """H1, H2 and H3 in plain words, each with the numbers it rests on (SPEC section 1)."""
    keys = {(a.topology, a.mechanism) for a in arms}
    sparse = sorted(t for t, m in keys if t != "dense" and m == "none")
    with_dense = sparse if ("dense", "none") in keys else []
    lines = ["## Verdicts", ""]

    h1 = [_forgetting_verdict(result, density, (t, "none"), ("dense", "none"), claim_is_less=True) for t in with_dense]
    lines += ["**H1 (a fixed sparse topology alone forgets less than dense, no mechanism)**: "
              + ("; ".join(h1) if h1 else "not tested in this run (needs `dense` and a sparse topology with "
                                          "mechanism `none`)."), ""]

    h2 = [_crossover_verdict(t, arms, cross, density) for t in with_dense]
    lines += [f"**H2 (a sparse model that starts worse overtakes dense after enough domain switches)**, at density "
              f"{density:g} (other densities: experiment 1's sweep): "
              + ("; ".join(h2) if h2 else "not tested in this run."), ""]

    h3 = [_forgetting_verdict(result, density, (t, "none"), ("random", "none"), claim_is_less=False)
          for t in sparse if t in STRUCTURED and ("random", "none") in keys]
    lines += ["**H3 (at equal density, structured topologies differ from random)**: "
              + ("; ".join(h3) if h3 else "not tested in this run (needs `random` and `brf` or `expander`: "
                                          "`presets/topologies.yaml`)."), ""]
    return lines


def _crossover_verdict(topology: str, arms, cross: dict, density: float) -> str:
    """Whether the sparse arm starts worse than dense (after pretraining) and crosses for good, over seeds."""
    runs = [a for a in arms if a.topology == topology and a.mechanism == "none"]
    dense = {a.seed: a for a in arms if a.topology == "dense" and a.mechanism == "none"}
    start, start_dense = np.mean([a.L[0, 0] for a in runs]), np.mean([dense[a.seed].L[0, 0] for a in runs])
    found, crossed = {}, {}
    for curve in ("seen_mean", "core"):
        phases = [c[f"{curve}_phase"] for a in runs if (c := cross[f"{a.name}_vs_dense"])[f"{curve}_crossed"]]
        crossed[curve] = len(phases)
        found[curve] = (f"phase {np.mean(phases):.2f} (mean) in {len(phases)} of {len(runs)} seeds" if phases
                        else "none")
    said = (f"{label(topology, 'none', density)} after pretraining: {start:.3f} vs {start_dense:.3f} nats for dense; "
            f"crossover of the mean seen-domain loss: {found['seen_mean']}; of the core-domain loss: {found['core']}")
    if start <= start_dense:
        return f"does not apply (it does not start worse): {said}"
    if crossed["seen_mean"] == len(runs):
        return f"supported: {said}"
    if crossed["seen_mean"] == crossed["core"] == 0:
        return f"not supported (never overtakes dense for good): {said}"
    if crossed["seen_mean"] == 0:
        return f"mixed (only the core-domain loss overtakes dense): {said}"
    return f"mixed (not in every seed): {said}"
