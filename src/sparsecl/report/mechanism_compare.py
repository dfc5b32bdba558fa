"""The mechanism comparison of the analyze stage: forgetting and final loss against what each arm cost
(the sequential stage's metrics/mechanism/<arm>.json, read by analyze), as a table for report.md and a plot."""
from __future__ import annotations

from pathlib import Path

from sparsecl.report.plots import save_figure  # first: plots selects the Agg backend
import matplotlib.pyplot as plt  # noqa: E402  isort: skip

from sparsecl.names import PRETRAINED, phase_label  # noqa: E402

MARKERS = "o^sDvP*X"


def total_flops(cost: dict) -> float:
    """An arm's whole training cost from its metrics file: its pretraining plus the later phases."""
    return cost["pretrain_flops"] + cost["train_flops"]


def pruning_damage(losses: dict, core: str) -> dict | None:
    """Loss the change a mechanism made to the pretrained model before phase 1 cost (postprune's pruning),
    on the pretraining domain and averaged over all domains: its phase-0 checkpoint against the pretrained
    model, both scored by `evaluate`; `core` is the pretraining domain. None for mechanisms that start from
    the pretrained model itself."""
    if PRETRAINED not in losses:
        return None
    start, pre = losses[phase_label(0, core)], losses[PRETRAINED]
    diffs = [start[d] - pre[d] for d in pre]
    return {"domain": core, "core": start[core] - pre[core], "mean": sum(diffs) / len(diffs)}


def _notes(cost: dict, damage: dict | None) -> str:
    """The mechanism-specific figures worth a glance in the table."""
    notes = []
    if "coverage" in cost:
        notes.append(f"coverage {cost['coverage']:.2f}, Jaccard (consecutive) {cost['jaccard_consecutive_mean']:.2f}")
    occupancy = list(cost.get("teacher_occupancy", {}).values())
    if occupancy:
        notes.append(f"teacher occupancy {min(occupancy):.2f}-{max(occupancy):.2f}")
    if "sparsified_density" in cost:
        notes.append(f"density {cost['sparsified_density']:.3f}")
    if damage is not None:
        notes.append(f"pruning damage {damage['core']:+.3f} on {damage['domain']} ({damage['mean']:+.3f} mean over "
                     f"domains), not in forgetting")
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
    none = {(a.topology, a.seed): costs[a.name] for a in arms if a.mechanism == "none"}
    lines = ["## Mechanisms: forgetting against cost", "",
             "Training FLOPs count forward and backward of every batch, teacher forwards, replay and Fisher passes, "
             "from the weights multiplied (a sparse or pruned model's kept weights; postprune's dense training "
             "counts every weight of its topology). `later` is the phases after pretraining; `total` adds the "
             "arm's pretraining, which every mechanism of a topology shares. x none is the ratio to the `none` "
             "arm of the same topology and seed. Extra memory is what the mechanism holds besides the model. A mechanism that changes the pretrained model before "
             "phase 1 (postprune prunes it) starts its loss matrix from the changed model; the damage of that "
             "change is in the notes, not in its forgetting.", "",
             "| arm | forgetting | BWT | final avg loss | code final | later TFLOP | x none | total TFLOP | x none "
             "| extra memory (MB) | inference MFLOP/token | active params (M) | notes |", "|---" * 13 + "|"]
    for a in arms:
        s, c = summary[a.name], costs[a.name]
        base = none.get((a.topology, a.seed))
        later = f"{c['train_flops'] / base['train_flops']:.2f}" if base else "-"
        total = f"{total_flops(c) / total_flops(base):.2f}" if base else "-"
        lines.append(f"| {a.name} | {s['forgetting']:.3f} | {s['bwt']:.3f} | {s['final_avg_loss']:.3f} | "
                     f"{s['core_final_loss']:.3f} | {c['train_flops'] / 1e12:.1f} | {later} | "
                     f"{total_flops(c) / 1e12:.1f} | {total} | "
                     f"{c['extra_memory_bytes'] / 2**20:.1f} | {c['inference_flops_per_token'] / 1e6:.2f} | "
                     f"{c['params_active'] / 1e6:.3f} | {_notes(c, a.damage)} |")
    lines += ["", "![mechanisms](plots/mechanism_compare.png)", ""]
    return "\n".join(lines)
