"""The analyze stage: loss matrices of all arms -> metrics JSON, DVC plot data, PNG plots, report.md."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path

import numpy as np
from markdown_it import MarkdownIt  # installed with DVC (rich): the HTML rendering costs no dependency

from sparsecl.io import read_json, write_json, write_text
from sparsecl.metrics.continual import (crossover, final_summary, first_phases, forward_transfer_vs_scratch,
                                        intransigence, seen_mean_loss, trained_columns)
from sparsecl.names import arm_name, base_name, early_label, phase_label
from sparsecl.report import mechanism_compare, plots, statistics, topology_compare

VERSIONS = ("torch", "numpy", "scipy", "tokenizers", "dvc")  # the packages the numbers depend on


@dataclass
class Arm:
    topology: str
    mechanism: str
    seed: int
    L: np.ndarray          # (phases, distinct domains)
    untrained: np.ndarray  # (distinct domains,)
    first: np.ndarray      # the phase that first trains each domain
    trained: np.ndarray    # the column each phase trains
    speed: np.ndarray      # loss on each later domain after phase.speed_steps steps of its first phase
    damage: dict | None = None  # what changing the pretrained model before phase 1 cost (postprune's pruning)

    @property
    def name(self) -> str:
        return arm_name(self.topology, self.mechanism, self.seed)

    @cached_property
    def curves(self) -> dict[str, np.ndarray]:
        """The two curves the crossover is read on, one value per phase."""
        return {"seen_mean": seen_mean_loss(self.L, self.first), "core": self.L[:, 0]}


def load_arms(params: dict, eval_dir: str | Path) -> list[Arm]:
    order = params["data"]["order"]
    domains, first = first_phases(order)
    arms = []
    for topology in params["topologies"]:
        for mechanism in params["mechanisms"]:
            for seed in params["seeds"]:
                ev = read_json(Path(eval_dir) / f"{arm_name(topology, mechanism, seed)}.json")
                losses = ev["loss"]
                L = np.array([[losses[phase_label(j, order[j])][d] for d in domains] for j in range(len(order))])
                untrained = np.array([losses["untrained"][d] for d in domains])
                speed = np.array([ev["early"][early_label(k, order[k])][order[k]] for k in first[1:]])
                arms.append(Arm(topology, mechanism, seed, L, untrained, first, trained_columns(order), speed,
                                mechanism_compare.pruning_damage(losses, order[0])))
    return arms


def arm_summary(a: Arm, refs: dict | None, domains: list[str]) -> dict[str, float]:
    """The arm's metrics: those of its loss matrix and its learning speed, then, when its topology has
    references (the joint model and each later domain from scratch, same topology and seed), those against
    them (absent, not NaN, without)."""
    s = {**final_summary(a.L, a.untrained, a.first, a.trained), "learning_speed": float(a.speed.mean())}
    if refs is None:
        return s
    joint = np.array([refs["joint"][d] for d in domains])
    return {**s, "intransigence": intransigence(a.L, joint, a.first),
            "joint_avg_loss": float(joint.mean()), "joint_gap": s["final_avg_loss"] - float(joint.mean()),
            "fwt_vs_scratch": forward_transfer_vs_scratch(a.L, [refs["scratch"][d] for d in domains[1:]], a.first)}


# What `dvc metrics show`, `dvc metrics diff` and `dvc exp show` print, per arm: how much it forgot, how well it
# learned, where it ended and what its training cost in all (pretraining included: the mechanisms of a topology
# share it, so their differences are those of the later phases). The rest of its summary is metrics/summary.json.
HEADLINE = ("final_avg_loss", "forgetting", "bwt", "core_forgetting", "plasticity", "total_tflops")
VERDICT_FIGURES = ("diff", "p_holm")  # per H1-H3 test: the mean paired difference and its adjusted p


def headline(summary: dict, costs: dict) -> dict:
    """The declared metrics of each arm (metrics/headline/<arm>.json): HEADLINE, from its summary and, for
    its training TFLOPs, its costs (metrics/mechanism/<arm>.json)."""
    return {arm: {k: mechanism_compare.total_flops(costs[arm]) / 1e12 if k == "total_tflops" else s[k]
                  for k in HEADLINE} for arm, s in summary.items()}


def verdict_figures(seed_stats: dict) -> dict:
    """Per H1-H3 test, VERDICT_FIGURES where computed (no p with fewer than 3 seeds): metrics/verdicts/<test>.json;
    and `family`, the number of tests, so the folder exists in a run without any (a dense-only one)."""
    return {"family": {"tests": len(seed_stats["verdicts"])},
            **{name: {k: t[k] for k in VERDICT_FIGURES if k in t} for name, t in seed_stats["verdicts"].items()}}


def active_params(params: dict, metrics_dir: str | Path, topology: str, seed: int, vocab_size: int) -> float:
    """The active parameters of the topology's model (sparsecl.cost's count), the tied token embedding / LM
    head once: the topology summary leaves that out, as it depends on the trained tokenizer."""
    counts = read_json(Path(metrics_dir) / "topology" / f"{base_name(topology, seed)}.json")["summary"]
    return counts["model_active_non_embedding"] + vocab_size * params["model"]["n_embd"]


def train_flops_per_token(params: dict, costs: dict) -> dict[tuple[str, int], float]:
    """Per (topology, seed): the training FLOPs per token of its pretraining (sparsecl.cost, attention
    included, as the mechanisms' FLOPs are), which the pretrain stage wrote and every arm carries."""
    return {(t, seed): costs[arm_name(t, params["mechanisms"][0], seed)]["pretrain_flops_per_token"]
            for t in params["topologies"] for seed in params["seeds"]}


def crossovers(arms: list[Arm], params: dict, flops_per_token: dict[tuple[str, int], float]) -> dict[str, dict]:
    """Every sparse arm against the dense arm with the same mechanism and seed. The crossing point is found on
    the phase axis and given on the token axis and as the training FLOPs each arm had spent by then."""
    by_key = {(a.topology, a.mechanism, a.seed): a for a in arms}
    pre, per = params["pretrain"]["tokens"], params["phase"]["tokens"]
    out = {}
    for a in arms:
        dense = by_key.get(("dense", a.mechanism, a.seed))
        if a.topology in statistics.DENSE or dense is None:
            continue
        entry = {}
        for curve, values in a.curves.items():
            x = crossover(values, dense.curves[curve], persist=params["analysis"]["crossover_persist"],
                          margin=params["analysis"]["crossover_margin"])
            entry[f"{curve}_crossed"] = int(x is not None)
            if x is not None:  # absent (not a fake number) when it never crosses
                tokens = pre + x * per
                entry[f"{curve}_phase"] = x
                entry[f"{curve}_tokens"] = tokens
                entry[f"{curve}_flops"] = tokens * flops_per_token[a.topology, a.seed]
                entry[f"{curve}_dense_flops"] = tokens * flops_per_token["dense", a.seed]
        out[f"{a.name}_vs_dense"] = entry
    return out


def lr_grid(params: dict, lr_dir: str | Path) -> dict[str, dict]:
    """Per topology: its grid points (in factor order) and the chosen point."""
    return {t: {"points": [read_json(Path(lr_dir) / "points" / f"{t}-x{f}" / "point.json")
                           for f in params["lr_search"]["factors"]],
                "chosen": read_json(Path(lr_dir) / t / "chosen.json")} for t in params["topologies"]}


def render_lr_grid(grid: dict, params: dict) -> list[str]:
    """The lr grid's table: domain A's validation loss at every lr, per topology, the chosen one in bold."""
    search, domain = params["lr_search"], params["data"]["order"][0]
    factors = search["factors"]
    lines = ["## Learning rates", "",
             f"Each topology trains at the lr of its grid (train.lr {params['train']['lr']:g} x "
             f"{', '.join(f'{f:g}' for f in factors)}) with the lowest loss on {domain}'s validation split after "
             f"{search['tokens']:,} tokens of pretraining (seed {search['seed']}; windows beside the ones scored "
             f"below; no later domain is read). Masked matrices take train.matrix_lr_ratio "
             f"{params['train']['matrix_lr_ratio']:g} x their init gain times that lr. "
             f"![lr grid](plots/lr_search.png)", "",
             "| topology | " + " | ".join(f"lr {params['train']['lr'] * f:.3g}" for f in factors) + " | chosen |",
             "|---" * (len(factors) + 2) + "|"]
    for t, g in grid.items():
        cells = ["diverged" if p["diverged"] else
                 (f"**{p['val_loss']:.3f}**" if p["factor"] == g["chosen"]["factor"] else f"{p['val_loss']:.3f}")
                 for p in g["points"]]
        edge = " (grid edge: widen lr_search.factors)" if g["chosen"]["at_grid_edge"] else ""
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {g['chosen']['lr']:.3g}{edge} |")
    return lines + [""]


def _tsv_curve(path: Path) -> tuple[list[float], list[float]]:
    """(step, value) columns of a DVCLive step log."""
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    return [float(r[0]) for r in rows], [float(r[-1]) for r in rows]


def step_curves(arms: list[Arm], order: list[str], live_dir: str | Path) -> dict:
    """Every training stage's loss from its DVCLive folder: `pretrain` per topology and seed, `phases` per arm
    with its later phases laid end to end, and the `boundaries` between those phases (on the first arm's axis)."""
    live = Path(live_dir)
    curves: dict = {"pretrain": {}, "phases": {}, "boundaries": []}
    for a in arms:
        base = base_name(a.topology, a.seed)
        if base not in curves["pretrain"]:  # shared by the arms of every mechanism
            curves["pretrain"][base] = _tsv_curve(live / "pretrain" / base / "plots" / "metrics" / "loss.tsv")
        offset, xs, ys = 0.0, [], []
        for k in range(1, len(order)):
            if a is arms[0] and k > 1:
                curves["boundaries"].append(offset)
            steps, loss = _tsv_curve(live / "sequential" / a.name / "plots" / "metrics" / phase_label(k, order[k])
                                     / "loss.tsv")
            xs, ys = xs + [offset + x for x in steps], ys + loss
            offset += (steps[-1] + 1) if steps else 0.0
        curves["phases"][a.name] = (xs, ys)
    return curves


def long_rows(x: str, series: dict[str, tuple]) -> list[dict]:
    """Rows (x, arm, loss) of curves by arm: the long table that DVC's by-arm template draws one line per arm of."""
    return [{x: round(float(u), 6), "arm": name, "loss": round(float(v), 6)}
            for name, (xs, ys) in series.items() for u, v in zip(xs, ys)]


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def analyze(params: dict, eval_dir: str, metrics_dir: str, plots_dir: str, report_path: str,
            tokens_dir: str = "data/tokens", references_dir: str = "references", lr_dir: str = "lr_search",
            live_dir: str = "dvclive") -> dict:
    order = params["data"]["order"]
    domains, _ = first_phases(order)
    arms = load_arms(params, eval_dir)
    manifest = read_json(Path(tokens_dir) / "manifest.json")
    refs = {(t, seed): read_json(Path(references_dir) / f"{base_name(t, seed)}.json")
            for t in params["references"] for seed in params["seeds"]}
    summary = {a.name: arm_summary(a, refs.get((a.topology, a.seed)), domains) for a in arms}
    grid = lr_grid(params, lr_dir)
    costs = {a.name: read_json(Path(metrics_dir) / "mechanism" / f"{a.name}.json") for a in arms}
    flops = train_flops_per_token(params, costs)
    cross = crossovers(arms, params, flops)
    seed_stats = statistics.compute(arms, summary, analysis=params["analysis"])
    # One file per arm and per test, all with the same few keys, so that `dvc metrics show` is a table with
    # a row per arm (docs/METRICS.md "DVC's views").
    for folder, files in (("headline", headline(summary, costs)), ("verdicts", verdict_figures(seed_stats))):
        for name, figures in files.items():
            write_json(Path(metrics_dir) / folder / f"{name}.json", figures)
    write_json(Path(metrics_dir) / "summary.json", summary)
    write_json(Path(metrics_dir) / "crossover.json", cross)
    write_json(Path(metrics_dir) / "stats.json", seed_stats)

    plots_dir = Path(plots_dir)
    # DVC-native plot data in long form (x, arm, loss): dvc.yaml draws each with one line per arm.
    phases = list(range(len(order)))
    steps = step_curves(arms, order, live_dir)
    for name, rows in (("seen_mean_loss", long_rows("phase", {a.name: (phases, a.curves["seen_mean"]) for a in arms})),
                       ("core_loss", long_rows("phase", {a.name: (phases, a.curves["core"]) for a in arms})),
                       ("pretrain_steps", long_rows("step", steps["pretrain"])),
                       ("phase_steps", long_rows("step", steps["phases"]))):
        write_text(plots_dir / "data" / f"{name}.csv", csv_text(rows))
    plots.domain_curves(arms, order, plots_dir / "domain_loss.png")
    plots.lr_grid(grid, plots_dir / "lr_search.png")
    plots.training_curves(steps, order, plots_dir / "training_curves.png")
    plots.loss_heatmaps(arms, order, plots_dir / "loss_matrix.png")
    plots.dense_vs_sparse(arms, order, cross, plots_dir / "dense_vs_sparse.png")
    topology_section = topology_compare.compare(arms, summary, plots_dir / "topologies.png")
    mechanism_section = mechanism_compare.section(arms, summary, costs, plots_dir)
    first_seed = params["seeds"][0]
    scale = {t: (active_params(params, metrics_dir, t, first_seed, manifest["vocab_size"]), flops[t, first_seed])
             for t in params["topologies"]}
    report = "\n".join([render_report(params, arms, summary, cross, seed_stats, manifest, scale),
                        *render_lr_grid(grid, params), *topology_section,
                        mechanism_section, *render_matrices(arms, order)])
    write_text(report_path, report)
    # HTML next to it, for a reader without a Markdown viewer.
    write_text(Path(report_path).with_suffix(".html"), render_html(report))
    for a in arms:
        s = summary[a.name]
        print(f"[analyze] {a.name}: final avg loss {s['final_avg_loss']:.3f} forgetting {s['forgetting']:.3f} "
              f"BWT {s['bwt']:.3f} core {a.L[0, 0]:.3f} -> {s['core_final_loss']:.3f}", flush=True)
    return summary


def render_html(markdown: str) -> str:
    body = MarkdownIt("commonmark").enable("table").render(markdown)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sparsecl report</title>"
            "<style>body{font-family:sans-serif;max-width:75em;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head>\n<body>\n"
            f"{body}</body></html>\n")


def setup_table(params: dict, manifest: dict, scale: dict) -> list[str]:
    """What was run: model, data sizes, densities, budgets, seeds, package versions. `scale`: per topology,
    the first seed's active parameters and training FLOPs per token."""
    order, m = params["data"]["order"], params["model"]
    domains, _ = first_phases(order)
    active = ", ".join(f"{t} {n / 1e6:.2f}M ({f / 1e6:.2f} MFLOP per training token)" for t, (n, f) in scale.items())
    sizes = "; ".join(f"{d} {manifest['domains'][d]['train']['tokens']:,} train / "
                      f"{manifest['domains'][d]['eval_tokens']:,} evaluated tokens" for d in domains)
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in VERSIONS)
    rows = [("model", f"{m['n_layer']} layers, {m['n_embd']} wide, {m['n_head']} heads, context {m['block_size']}, "
                      f"vocabulary {manifest['vocab_size']:,}; active parameters (seed {params['seeds'][0]}): {active}"),
            ("data", sizes),
            ("order", f"{' -> '.join(order)} ({len(order) - 1} domain switches)"),
            ("arms", f"topologies {', '.join(params['topologies'])} at density {params['density']:g}; mechanisms "
                     f"{', '.join(params['mechanisms'])}"),
            ("budget", f"pretrain {params['pretrain']['tokens']:,} tokens, then {params['phase']['tokens']:,} per "
                       f"phase; training FLOPs per token counted as 3 forward passes of 2 per active matmul weight plus "
                       f"attention over the context (sparsecl.cost)"),
            ("seeds", f"{', '.join(map(str, params['seeds']))} ({len(params['seeds'])})"),
            ("crossover", f"must stay below dense for at least {params['analysis']['crossover_persist']} evaluations"),
            ("versions", versions)]
    return ["| setting | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def render_report(params: dict, arms: list[Arm], summary: dict, cross: dict, seed_stats: dict, manifest: dict,
                  scale: dict) -> str:
    order = params["data"]["order"]
    density = params["density"]
    lines = ["# sparsecl report", "", *setup_table(params, manifest, scale), "",
             "Losses are mean next-token NLL in nats on fixed validation windows. Forgetting > 0 and BWT < 0 mean "
             "the model forgot. Forgetting and BWT measure a domain from its first training; an order that "
             "revisits domains also gets them per visit.", "",
             *statistics.verdicts(seed_stats, density, analysis=params["analysis"]),
             "## Summary", "",
             "Plasticity is the loss on each domain right after its (first) training, learning speed the loss on "
             f"a new domain after {params['phase']['speed_steps']} steps of its phase; intransigence is plasticity "
             "minus the joint reference's loss (the same topology trained on all domains at once with the whole "
             "budget), FWT vs scratch how much lower plasticity is than one phase of training from the untrained "
             "model. Lower is better for every loss; forgetting is read beside plasticity: an arm that learned "
             "less has less to forget." + ("" if set(params["topologies"]) <= set(params["references"]) else
                                           " The references ran for the topologies in params `references` only "
                                           f"({', '.join(params['references']) or 'none'}); - marks the others "
                                           "(presets/verdict.yaml runs them all)."), "",
             "| arm | final avg loss | forgetting | BWT | plasticity | learning speed | intransigence | "
             f"gap to joint | FWT vs scratch | {order[0]}: after pretrain -> final |",
             "|---" * 10 + "|"]
    for a in arms:
        s = summary[a.name]
        ref = " | ".join(f"{s[k]:.3f}" if k in s else "-" for k in ("intransigence", "joint_gap", "fwt_vs_scratch"))
        lines.append(f"| {a.name} | {s['final_avg_loss']:.3f} | {s['forgetting']:.3f} | {s['bwt']:.3f} | "
                     f"{s['plasticity']:.3f} | {s['learning_speed']:.3f} | {ref} | "
                     f"{a.L[0, 0]:.3f} -> {s['core_final_loss']:.3f} |")
    if len(set(order)) < len(order):  # an order that revisits domains: per-visit figures
        lines += ["", "The order revisits domains: per visit, forgetting and BWT from each training of a domain to "
                      "the last phase before its next training (the domain trained last excluded).", "",
                  "| arm | forgetting per visit | BWT per visit | " + f"{order[0]} forgetting per visit |",
                  "|---|---|---|---|"]
        lines += [f"| {a.name} | {summary[a.name]['forgetting_per_visit']:.3f} | {summary[a.name]['bwt_per_visit']:.3f} "
                  f"| {summary[a.name]['core_forgetting_per_visit']:.3f} |" for a in arms]
    lines += ["", "## Dense vs sparse crossover", ""]
    if not cross:
        lines.append("No sparse arm with a dense counterpart in this run.")
    for key, c in cross.items():
        for curve, label in (("seen_mean", "mean seen-domain loss"), ("core", f"{order[0]} loss")):
            where = (f"phase {c[f'{curve}_phase']:.2f} ({c[f'{curve}_tokens']:,.0f} tokens; training FLOPs "
                     f"{c[f'{curve}_flops']:.3g}, dense {c[f'{curve}_dense_flops']:.3g})"
                     if c[f"{curve}_crossed"] else "none (never crosses for good)")
            lines.append(f"- {key}, {label}: {where}")
    return "\n".join([*lines, "", *statistics.section(seed_stats, density)])


def render_matrices(arms: list[Arm], order: list[str]) -> list[str]:
    domains, _ = first_phases(order)
    lines = ["## Loss matrices", ""]
    for a in arms:
        lines += [f"### {a.name}", "", "| after | " + " | ".join(domains) + " |", "|---" * (len(domains) + 1) + "|",
                  "| untrained | " + " | ".join(f"{v:.3f}" for v in a.untrained) + " |"]
        lines += [f"| phase {j} ({order[j]}) | " + " | ".join(f"{v:.3f}" for v in a.L[j]) + " |"
                  for j in range(len(order))]
        lines.append("")
    lines += ["## Plots", "", "![per-domain loss](plots/domain_loss.png)", "",
              "![dense vs sparse](plots/dense_vs_sparse.png)", "", "![loss matrices](plots/loss_matrix.png)", ""]
    return lines
