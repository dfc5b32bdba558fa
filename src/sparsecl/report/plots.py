"""Matplotlib figures of the analyze stage (PNG, written atomically)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sparsecl.io import atomic_path  # noqa: E402
from sparsecl.metrics.continual import first_phases  # noqa: E402


def save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _phase_ticks(ax, order: list[str]) -> None:
    """One tick per phase, labelled with its domain; thinned when a long (cycled) order would crowd them."""
    step = max(1, len(order) // 12)
    ax.set_xticks(range(0, len(order), step), [f"{j}:{order[j][:4]}" for j in range(0, len(order), step)],
                  fontsize=7, rotation=45 * (step > 1))
    ax.set_xlabel("after phase")


def _shade_training(ax, order: list[str], domain: str) -> None:
    for j, d in enumerate(order):
        if d == domain:
            ax.axvspan(j - 0.5, j + 0.5, color="0.9")


def domain_curves(arms, order: list[str], path: Path) -> None:
    """One panel per domain: its loss after every phase, one line per arm; the phases that train it are shaded."""
    domains, _ = first_phases(order)
    fig, axes = plt.subplots(1, len(domains), figsize=(3.2 * len(domains), 3), sharey=False, squeeze=False)
    for i, (ax, domain) in enumerate(zip(axes[0], domains)):
        for a in arms:
            ax.plot(range(len(order)), a.L[:, i], marker="o", ms=3, label=a.name)
        _shade_training(ax, order, domain)
        ax.set_title(domain)
        _phase_ticks(ax, order)
    axes[0][0].set_ylabel("val loss (nats)")
    axes[0][-1].legend(fontsize=7)
    save_figure(fig, path)


def loss_heatmaps(arms, order: list[str], path: Path) -> None:
    domains, _ = first_phases(order)
    fig, axes = plt.subplots(1, len(arms), figsize=(3.6 * len(arms), 3.2), squeeze=False)
    lo = min(a.L.min() for a in arms)
    hi = max(a.L.max() for a in arms)
    for ax, a in zip(axes[0], arms):
        im = ax.imshow(a.L, vmin=lo, vmax=hi, cmap="viridis")
        for j in range(a.L.shape[0]):
            for i in range(a.L.shape[1]):
                ax.text(i, j, f"{a.L[j, i]:.2f}", ha="center", va="center", fontsize=6, color="w")
        ax.set_title(a.name, fontsize=9)
        ax.set_xticks(range(len(domains)), [d[:4] for d in domains], fontsize=7)
        ax.set_yticks(range(len(order)), [f"{j}:{d[:4]}" for j, d in enumerate(order)], fontsize=7)
        ax.set_xlabel("evaluated on")
        ax.set_ylabel("after phase")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="loss (nats)")
    save_figure(fig, path)


def dense_vs_sparse(arms, order: list[str], cross: dict, path: Path) -> None:
    """Mean seen-domain loss and core-domain loss over all phases (experiment 3's plot when the order cycles);
    each arm's crossover with dense marked by a dotted line of its colour; phases that train the core domain shaded."""
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 0.4 * len(order)), 3.5))
    _shade_training(axes[1], order, order[0])
    for ax, (curve, title) in zip(axes, (("seen_mean", "mean loss over seen domains"),
                                         ("core", f"core domain ({order[0]})"))):
        for a in arms:
            line, = ax.plot(range(len(order)), a.curves[curve], marker="o", ms=3, label=a.name,
                            ls="--" if a.topology == "dense" else "-")
            c = cross.get(f"{a.name}_vs_dense", {})
            if c.get(f"{curve}_crossed"):
                ax.axvline(c[f"{curve}_phase"], color=line.get_color(), lw=1, ls=":")
        ax.set_title(title)
        _phase_ticks(ax, order)
        ax.set_ylabel("val loss (nats)")
    axes[1].legend(fontsize=7)
    save_figure(fig, path)


def lr_grid(grid: dict, path: Path) -> None:
    """Domain A's validation loss against the lr, one line per topology, its chosen lr marked."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for topology, g in grid.items():
        ok = [p for p in g["points"] if not p["diverged"]]
        line, = ax.plot([p["lr"] for p in ok], [p["val_loss"] for p in ok], marker="o", label=topology)
        ax.plot(g["chosen"]["lr"], g["chosen"]["val_loss"], marker="*", markersize=14, color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (train.lr x factor)")
    ax.set_ylabel("domain A val loss (nats)")
    ax.set_title("lr grid (star: chosen)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def training_curves(curves: dict, order: list[str], path: Path) -> None:
    """The step logs grouped (analyze.step_curves): training loss over pretraining, a line per topology and
    seed, and over the later phases laid end to end, a line per arm, phase boundaries dotted."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1, 2]})
    for name, (xs, ys) in curves["pretrain"].items():
        axes[0].plot(xs, ys, lw=1, label=name)
    for name, (xs, ys) in curves["phases"].items():
        axes[1].plot(xs, ys, lw=1, label=name, ls="--" if name.startswith("dense-") else "-")
    for x in curves["boundaries"]:
        axes[1].axvline(x, color="0.8", lw=0.8, ls=":")
    axes[0].set_title(f"pretraining on {order[0]}")
    axes[1].set_title("later phases, end to end" + (": " + " -> ".join(order[1:]) if len(order) <= 8 else ""))
    for ax in axes:
        ax.set_xlabel("logged window (train.log_every steps each)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("training loss (nats)")
    save_figure(fig, path)
