"""Matplotlib figures of the analyze stage (PNG, written atomically)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sparsecl.io import atomic_path  # noqa: E402
from sparsecl.metrics.continual import seen_mean_loss  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def domain_curves(arms, order: list[str], path: Path) -> None:
    """One panel per domain: its loss after every phase, one line per arm; the phase that trains it is shaded."""
    fig, axes = plt.subplots(1, len(order), figsize=(3.2 * len(order), 3), sharey=False, squeeze=False)
    for i, (ax, domain) in enumerate(zip(axes[0], order)):
        for a in arms:
            ax.plot(range(len(order)), a.L[:, i], marker="o", ms=3, label=a.name)
        ax.axvspan(i - 0.5, i + 0.5, color="0.9")
        ax.set_title(domain)
        ax.set_xticks(range(len(order)), [d[:4] for d in order], fontsize=7)
        ax.set_xlabel("after phase")
    axes[0][0].set_ylabel("val loss (nats)")
    axes[0][-1].legend(fontsize=7)
    _save(fig, path)


def loss_heatmaps(arms, order: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(arms), figsize=(3.6 * len(arms), 3.2), squeeze=False)
    lo = min(a.L.min() for a in arms)
    hi = max(a.L.max() for a in arms)
    for ax, a in zip(axes[0], arms):
        im = ax.imshow(a.L, vmin=lo, vmax=hi, cmap="viridis")
        for j in range(a.L.shape[0]):
            for i in range(a.L.shape[1]):
                ax.text(i, j, f"{a.L[j, i]:.2f}", ha="center", va="center", fontsize=6, color="w")
        ax.set_title(a.name, fontsize=9)
        ax.set_xticks(range(len(order)), [d[:4] for d in order], fontsize=7)
        ax.set_yticks(range(len(order)), [f"{j}:{d[:4]}" for j, d in enumerate(order)], fontsize=7)
        ax.set_xlabel("evaluated on")
        ax.set_ylabel("after phase")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="loss (nats)")
    _save(fig, path)


def dense_vs_sparse(arms, order: list[str], cross: dict, path: Path) -> None:
    """Mean seen-domain loss and core-domain loss per phase; crossover points marked where they exist."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, (curve, title, fn) in zip(axes, (("seen_mean", "mean loss over seen domains", seen_mean_loss),
                                             ("core", f"core domain ({order[0]})", lambda L: L[:, 0]))):
        for a in arms:
            ax.plot(range(len(order)), fn(a.L), marker="o", ms=3, label=a.name,
                    ls="--" if a.topology == "dense" else "-")
            c = cross.get(f"{a.name}_vs_dense", {})
            if c.get(f"{curve}_crossed"):
                ax.axvline(c[f"{curve}_phase"], color="k", lw=0.8, ls=":")
        ax.set_title(title)
        ax.set_xticks(range(len(order)), [f"{j}:{d[:4]}" for j, d in enumerate(order)], fontsize=7)
        ax.set_xlabel("after phase")
        ax.set_ylabel("val loss (nats)")
    axes[1].legend(fontsize=7)
    _save(fig, path)
