"""Continual-learning metrics on a loss matrix (SPEC section 8).

`L[j, i]` is the mean NLL on domain i after phase j; phase 0 is pretraining on domain 0 and phase j
trains domain j, so domain i is first trained at phase i. T = L.shape[0] - 1 is the last phase.
All quantities are in nats; signs follow the usual accuracy conventions translated to loss:
forgetting > 0 means the model forgot, BWT < 0 means the model forgot, FWT > 0 means earlier phases helped.
"""
from __future__ import annotations

import math

import numpy as np


def _check(L: np.ndarray) -> np.ndarray:
    L = np.asarray(L, dtype=float)
    if L.ndim != 2 or L.shape[1] < L.shape[0]:
        raise ValueError(f"loss matrix must be (phases, domains) with domains >= phases, got {L.shape}")
    return L


def forgetting_per_domain(L) -> np.ndarray:
    """F_i = L[T, i] - min_{i <= j < T} L[j, i] for every domain i < T (Chaudhry et al., in loss)."""
    L = _check(L)
    T = L.shape[0] - 1
    return np.array([L[T, i] - L[i:T, i].min() for i in range(T)])


def average_forgetting(L) -> float:
    return float(forgetting_per_domain(L).mean())


def backward_transfer(L) -> float:
    """BWT = mean over i < T of (L[i, i] - L[T, i]): negative when training later domains hurt earlier ones."""
    L = _check(L)
    T = L.shape[0] - 1
    return float(np.mean([L[i, i] - L[T, i] for i in range(T)]))


def forward_transfer(L, baseline) -> float:
    """FWT = mean over 1 <= i <= T of (baseline_i - L[i-1, i]): how much the phases before domain i lowered
    its loss below a baseline (the untrained model, or a model trained from scratch) before seeing it."""
    L = _check(L)
    T = L.shape[0] - 1
    b = np.asarray(baseline, dtype=float)
    return float(np.mean([b[i] - L[i - 1, i] for i in range(1, T + 1)]))


def seen_mean_loss(L) -> np.ndarray:
    """After phase j, the mean loss over the domains trained so far (0..j)."""
    L = _check(L)
    return np.array([L[j, : j + 1].mean() for j in range(L.shape[0])])


def final_summary(L, untrained) -> dict[str, float]:
    L = _check(L)
    T = L.shape[0] - 1
    final = L[T, : T + 1]
    return {"final_avg_loss": float(final.mean()),
            "final_ppl_geomean": float(math.exp(final.mean())),  # geometric mean of per-domain perplexities
            "forgetting": average_forgetting(L),
            "bwt": backward_transfer(L),
            "fwt_vs_untrained": forward_transfer(L, untrained),
            "core_final_loss": float(L[T, 0]),
            "core_forgetting": float(forgetting_per_domain(L)[0]) if T > 0 else 0.0}


def crossover(sparse, dense, persist: int = 1) -> float | None:
    """First point where `sparse` drops below `dense` and stays below for the rest of the curve
    (and for at least `persist` points), linearly interpolated between the two evaluations around it.

    Returns the x position in units of curve index (0 when sparse is already below at the first point),
    or None when it never crosses for good.
    """
    d = np.asarray(sparse, dtype=float) - np.asarray(dense, dtype=float)
    below = d < 0
    # first index from which the curve stays below to the end
    start = len(d)
    while start > 0 and below[start - 1]:
        start -= 1
    if start == len(d) or len(d) - start < persist:
        return None
    if start == 0:
        return 0.0
    return float(start - 1 + d[start - 1] / (d[start - 1] - d[start]))
