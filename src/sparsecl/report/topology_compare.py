"""Experiment 2: forgetting and final loss per topology at one density, as a report section and a plot."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsecl.report import plots  # first: it selects the Agg backend
import matplotlib.pyplot as plt  # noqa: E402  isort: skip

VALUES = (("forgetting", "forgetting"), ("final_avg_loss", "final avg loss"), ("bwt", "BWT"))


def _groups(arms, summary: dict) -> dict[tuple[str, str], dict[str, list[float]]]:
    """(topology, mechanism) -> metric -> one value per seed, in the order of the arms."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for a in arms:
        g = groups.setdefault((a.topology, a.mechanism), {k: [] for k, _ in VALUES})
        for key, _ in VALUES:
            g[key].append(summary[a.name][key])
    return groups


def _cell(values: list[float]) -> str:
    mean = f"{np.mean(values):.3f}"
    return mean if len(values) == 1 else f"{mean} ({min(values):.3f}..{max(values):.3f})"


def compare(arms, summary: dict, path: Path) -> list[str]:
    """Write the plot to `path`; return the report section (Markdown lines)."""
    groups = _groups(arms, summary)
    plot(groups, path)
    lines = ["## Topology comparison", "",
             "Same density and nnz in every layer for every sparse topology; mean over seeds (min..max when "
             "there are several).", "",
             "| topology | mechanism | seeds | " + " | ".join(label for _, label in VALUES) + " |",
             "|---" * (len(VALUES) + 3) + "|"]
    for (topology, mechanism), g in groups.items():
        lines.append(f"| {topology} | {mechanism} | {len(g['forgetting'])} | "
                     + " | ".join(_cell(g[key]) for key, _ in VALUES) + " |")
    return lines + ["", f"![topology comparison](plots/{path.name})", ""]


def plot(groups: dict, path: Path) -> None:
    """Per topology: the mean (large marker) and each seed (dots), one colour per mechanism. Markers, not
    bars: the differences are small next to the losses themselves, and a bar would have to start at 0."""
    topologies = list(dict.fromkeys(t for t, _ in groups))
    mechanisms = list(dict.fromkeys(m for _, m in groups))
    step = 0.6 / len(mechanisms)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(topologies)), 3.5), layout="constrained")
    for ax, (key, label) in zip(axes, VALUES[:2]):
        for k, mechanism in enumerate(mechanisms):
            present = [(i, groups[t, mechanism][key]) for i, t in enumerate(topologies) if (t, mechanism) in groups]
            xs = [i + (k - (len(mechanisms) - 1) / 2) * step for i, _ in present]
            line, = ax.plot(xs, [np.mean(v) for _, v in present], "o", ms=8, label=mechanism)
            for x, (_, v) in zip(xs, present):
                ax.plot([x] * len(v), v, ".", ms=4, color=line.get_color(), alpha=0.6)
        ax.set_xticks(range(len(topologies)), topologies)
        ax.set_xlim(-0.5, len(topologies) - 0.5)
        ax.set_ylabel(f"{label} (nats)")
        ax.set_title(f"{label} per topology")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, title="mechanism", title_fontsize=7)
    plots.save_figure(fig, path)
