"""The analyze stage: loss matrices of all arms -> metrics JSON, DVC plot data, PNG plots, report.md."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparsecl.io import read_json, write_json, write_text
from sparsecl.metrics.continual import crossover, final_summary, seen_mean_loss
from sparsecl.report import mechanism_compare, plots, topology_compare


@dataclass
class Arm:
    topology: str
    mechanism: str
    seed: int
    L: np.ndarray          # (phases, domains)
    untrained: np.ndarray  # (domains,)

    @property
    def name(self) -> str:
        return arm_name(self.topology, self.mechanism, self.seed)


def arm_name(topology: str, mechanism: str, seed: int) -> str:
    return f"{topology}-{mechanism}-s{seed}"


def load_arms(params: dict, eval_dir: str | Path) -> list[Arm]:
    order = params["data"]["order"]
    arms = []
    for topology in params["topologies"]:
        for mechanism in params["mechanisms"]:
            for seed in params["seeds"]:
                losses = read_json(Path(eval_dir) / f"{arm_name(topology, mechanism, seed)}.json")["loss"]
                L = np.array([[losses[f"phase{j}_{order[j]}"][d] for d in order] for j in range(len(order))])
                arms.append(Arm(topology, mechanism, seed, L, np.array([losses["untrained"][d] for d in order])))
    return arms


def crossovers(arms: list[Arm], params: dict) -> dict[str, dict]:
    """Every sparse arm against the dense arm with the same mechanism and seed, on the phase and token axes."""
    by_key = {(a.topology, a.mechanism, a.seed): a for a in arms}
    pre, per = params["pretrain"]["tokens"], params["phase"]["tokens"]
    out = {}
    for a in arms:
        dense = by_key.get(("dense", a.mechanism, a.seed))
        if a.topology == "dense" or dense is None:
            continue
        entry = {}
        for curve, fn in (("seen_mean", seen_mean_loss), ("core", lambda L: L[:, 0])):
            x = crossover(fn(a.L), fn(dense.L))
            entry[f"{curve}_crossed"] = int(x is not None)
            if x is not None:  # absent (not a fake number) when it never crosses
                entry[f"{curve}_phase"] = x
                entry[f"{curve}_tokens"] = pre + x * per
        out[f"{a.name}_vs_dense"] = entry
    return out


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def analyze(params: dict, eval_dir: str, metrics_dir: str, plots_dir: str, report_path: str) -> dict:
    order = params["data"]["order"]
    arms = load_arms(params, eval_dir)
    summary = {a.name: final_summary(a.L, a.untrained) for a in arms}
    cross = crossovers(arms, params)
    write_json(Path(metrics_dir) / "summary.json", summary)
    write_json(Path(metrics_dir) / "crossover.json", cross)

    plots_dir = Path(plots_dir)
    # DVC-native plot data: one row per phase, one column per arm.
    for name, fn in (("seen_mean_loss", seen_mean_loss), ("core_loss", lambda L: L[:, 0])):
        rows = [{"phase": j, **{a.name: round(float(fn(a.L)[j]), 6) for a in arms}} for j in range(len(order))]
        write_text(plots_dir / "data" / f"{name}.csv", _csv(rows))
    plots.domain_curves(arms, order, plots_dir / "domain_loss.png")
    plots.loss_heatmaps(arms, order, plots_dir / "loss_matrix.png")
    plots.dense_vs_sparse(arms, order, cross, plots_dir / "dense_vs_sparse.png")
    topology_section = topology_compare.compare(arms, summary, plots_dir / "topologies.png")
    mechanism_section = mechanism_compare.section(arms, summary, metrics_dir, plots_dir)
    write_text(report_path, "\n".join([render_report(params, arms, summary, cross), *topology_section,
                                       mechanism_section]))
    for a in arms:
        s = summary[a.name]
        print(f"[analyze] {a.name}: final avg loss {s['final_avg_loss']:.3f} forgetting {s['forgetting']:.3f} "
              f"BWT {s['bwt']:.3f} core {a.L[0, 0]:.3f} -> {s['core_final_loss']:.3f}", flush=True)
    return summary


def render_report(params: dict, arms: list[Arm], summary: dict, cross: dict) -> str:
    order = params["data"]["order"]
    m = params["model"]
    lines = ["# sparsecl report", "",
             f"Model: {m['n_layer']} layers, {m['n_embd']} wide, {m['n_head']} heads, context {m['block_size']}; "
             f"density {params['density']}; pretrain {params['pretrain']['tokens']:,} tokens on {order[0]}, "
             f"then {params['phase']['tokens']:,} tokens per phase on {', '.join(order[1:])}; "
             f"seeds {params['seeds']}.", "",
             "Losses are mean next-token NLL in nats on fixed validation windows. Forgetting > 0 and BWT < 0 mean "
             "the model forgot.", "",
             "## Summary", "",
             "| arm | final avg loss | geo-mean ppl | forgetting | BWT | FWT vs untrained | code: after pretrain -> final |",
             "|---|---|---|---|---|---|---|"]
    for a in arms:
        s = summary[a.name]
        lines.append(f"| {a.name} | {s['final_avg_loss']:.3f} | {s['final_ppl_geomean']:.1f} | {s['forgetting']:.3f} | "
                     f"{s['bwt']:.3f} | {s['fwt_vs_untrained']:.3f} | {a.L[0, 0]:.3f} -> {s['core_final_loss']:.3f} |")
    lines += ["", "## Dense vs sparse crossover", ""]
    if not cross:
        lines.append("No sparse arm with a dense counterpart in this run.")
    for key, c in cross.items():
        for curve, label in (("seen_mean", "mean seen-domain loss"), ("core", f"{order[0]} loss")):
            where = (f"phase {c[f'{curve}_phase']:.2f} ({c[f'{curve}_tokens']:,.0f} tokens)"
                     if c[f"{curve}_crossed"] else "none (never crosses for good)")
            lines.append(f"- {key}, {label}: {where}")
    lines += ["", "## Loss matrices", ""]
    for a in arms:
        lines += [f"### {a.name}", "", "| after | " + " | ".join(order) + " |", "|---" * (len(order) + 1) + "|",
                  "| untrained | " + " | ".join(f"{v:.3f}" for v in a.untrained) + " |"]
        lines += [f"| phase {j} ({order[j]}) | " + " | ".join(f"{v:.3f}" for v in a.L[j]) + " |"
                  for j in range(len(order))]
        lines.append("")
    lines += ["## Plots", "", "![per-domain loss](plots/domain_loss.png)", "",
              "![dense vs sparse](plots/dense_vs_sparse.png)", "", "![loss matrices](plots/loss_matrix.png)", ""]
    return "\n".join(lines)
