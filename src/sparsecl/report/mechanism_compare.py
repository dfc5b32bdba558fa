"""The mechanism comparison of the analyze stage: forgetting and final loss against what each arm cost
(the sequential stage's metrics/mechanism/<arm>.json, read by analyze), as a table for report.md and a plot."""
from __future__ import annotations

from pathlib import Path

from sparsecl.report.plots import save_figure  # first: plots selects the Agg backend
import matplotlib.pyplot as plt  # noqa: E402  isort: skip

MARKERS = "o^sDvP*X"


def _notes(cost: dict) -> str:
    """The mechanism-specific figures worth a glance in the table."""
    notes = []
    if "coverage" in cost:
        notes.append(f"coverage {cost['coverage']:.2f}, Jaccard (consecutive) {cost['jaccard_consecutive_mean']:.2f}")
    occupancy = list(cost.get("teacher_occupancy", {}).values())
    if occupancy:
        notes.append(f"teacher occupancy {min(occupancy):.2f}-{max(occupancy):.2f}")
    if "sparsified_density" in cost:
        notes.append(f"density {cost['sparsified_density']:.3f}")
    return "; ".join(notes)


def plot(arms, summary: dict, costs: dict, path: Path) -> None:
    """Forgetting and final average loss against training FLOPs, one point per arm: colour = mechanism,
    marker = topology."""
    mechanisms = sorted({a.mechanism for a in arms})
    topologies = sorted({a.topology for a in arms})
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(mechanisms)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (key, label) in zip(axes, (("forgetting", "forgetting (nats)"), ("final_avg_loss", "final avg loss (nats)"))):
        for a in arms:
            x, y = costs[a.name]["train_flops"] / 1e12, summary[a.name][key]
            ax.scatter(x, y, color=colors[a.mechanism], marker=MARKERS[topologies.index(a.topology) % len(MARKERS)])
            ax.annotate(a.mechanism, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("training FLOPs of the later phases (TFLOP)")
        ax.set_ylabel(label)
    for t in topologies:
        axes[1].scatter([], [], color="0.4", marker=MARKERS[topologies.index(t) % len(MARKERS)], label=t)
    axes[1].legend(fontsize=7, title="topology", title_fontsize=7)
    save_figure(fig, path)


def section(arms, summary: dict, costs: dict, plots_dir: str | Path) -> str:
    """Write plots/mechanism_compare.png and return the report's mechanism comparison (markdown); `costs` are
    the arms' metrics/mechanism/<arm>.json."""
    plot(arms, summary, costs, Path(plots_dir) / "mechanism_compare.png")
    none = {(a.topology, a.seed): costs[a.name]["train_flops"] for a in arms if a.mechanism == "none"}
    lines = ["## Mechanisms: forgetting against cost", "",
             "Training FLOPs count the later phases only (forward and backward of every batch, teacher forwards, "
             "replay, Fisher passes; weights that are 0 are not counted); x none is the ratio to the `none` arm of "
             "the same topology and seed. Extra memory is what the mechanism holds besides the model.", "",
             "| arm | forgetting | BWT | final avg loss | code final | train TFLOP | x none | extra memory (MB) "
             "| inference MFLOP/token | active params (M) | notes |", "|---" * 11 + "|"]
    for a in arms:
        s, c = summary[a.name], costs[a.name]
        base = none.get((a.topology, a.seed))
        ratio = f"{c['train_flops'] / base:.2f}" if base else "-"
        lines.append(f"| {a.name} | {s['forgetting']:.3f} | {s['bwt']:.3f} | {s['final_avg_loss']:.3f} | "
                     f"{s['core_final_loss']:.3f} | {c['train_flops'] / 1e12:.1f} | {ratio} | "
                     f"{c['extra_memory_bytes'] / 2**20:.1f} | {c['inference_flops_per_token'] / 1e6:.2f} | "
                     f"{c['params_active'] / 1e6:.3f} | {_notes(c)} |")
    lines += ["", "![mechanisms](plots/mechanism_compare.png)", ""]
    return "\n".join(lines)
