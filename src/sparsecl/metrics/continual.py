"""Continual-learning metrics on a loss matrix.

`L[j, i]` is the mean NLL on domain i after phase j; phase 0 is pretraining. Columns are the distinct
domains in the order they are first trained, and `first[i]` is the phase that first trains domain i
(`trained(i)`). By default phase j trains domain j (`first = 0, 1, ..., T`); a data order that returns to
a domain (the crossover experiment cycles them) gives `first` from `first_phases`. Forgetting, BWT and FWT
are defined on first occurrences: a domain trained again later is measured from its first training.
T = L.shape[0] - 1 is the last phase.
All quantities are in nats; signs follow the usual accuracy conventions translated to loss:
forgetting > 0 means the model forgot, BWT < 0 means the model forgot, FWT > 0 means earlier phases helped.
"""
from __future__ import annotations

import math

import numpy as np


def first_phases(order: list[str]) -> tuple[list[str], np.ndarray]:
    """The distinct domains of a data order (the loss matrix's columns) and the phase that first trains each."""
    domains = list(dict.fromkeys(order))
    return domains, np.array([order.index(d) for d in domains])


def _check(L, first=None) -> tuple[np.ndarray, np.ndarray]:
    L = np.asarray(L, dtype=float)
    if first is None:
        if L.ndim != 2 or L.shape[1] < L.shape[0]:
            raise ValueError(f"loss matrix must be (phases, domains) with domains >= phases, got {L.shape} "
                             f"(pass `first` when the data order repeats domains)")
        first = np.arange(L.shape[0])
    first = np.asarray(first, dtype=int)
    if L.ndim != 2 or len(first) > L.shape[1] or first[0] != 0 or np.any(np.diff(first) <= 0):
        raise ValueError(f"first phases {first.tolist()} do not fit a loss matrix of shape {L.shape}")
    return L, first


def _before_last(L, first) -> range:
    """Domains first trained before the last phase: the ones forgetting and BWT are defined for."""
    return range(int(np.sum(first < L.shape[0] - 1)))


def forgetting_per_domain(L, first=None) -> np.ndarray:
    """F_i = L[T, i] - min_{trained(i) <= j < T} L[j, i] for every domain first trained before T (Chaudhry et
    al., in loss)."""
    L, first = _check(L, first)
    T = L.shape[0] - 1
    return np.array([L[T, i] - L[first[i]:T, i].min() for i in _before_last(L, first)])


def average_forgetting(L, first=None) -> float:
    return float(forgetting_per_domain(L, first).mean())


def backward_transfer(L, first=None) -> float:
    """BWT = mean over domains first trained before T of (L[trained(i), i] - L[T, i]): negative when training
    later domains hurt earlier ones."""
    L, first = _check(L, first)
    T = L.shape[0] - 1
    return float(np.mean([L[first[i], i] - L[T, i] for i in _before_last(L, first)]))


def forward_transfer(L, baseline, first=None) -> float:
    """FWT = mean over domains i first trained at a phase >= 1 of (baseline_i - L[trained(i) - 1, i]): how
    much the phases before domain i lowered its loss below a baseline (the untrained model, or a model
    trained from scratch) before seeing it."""
    L, first = _check(L, first)
    b = np.asarray(baseline, dtype=float)
    return float(np.mean([b[i] - L[first[i] - 1, i] for i in range(1, len(first))]))


def seen_mean_loss(L, first=None) -> np.ndarray:
    """After phase j, the mean loss over the domains trained so far."""
    L, first = _check(L, first)
    return np.array([L[j, : len(first)][first <= j].mean() for j in range(L.shape[0])])


def trained_columns(order: list[str]) -> np.ndarray:
    """The loss-matrix column each phase trains (phase j trains domain order[j])."""
    domains = list(dict.fromkeys(order))
    return np.array([domains.index(d) for d in order])


def plasticity_per_domain(L, first=None) -> np.ndarray:
    """P_i = L[trained(i), i]: how well each domain was learned when it was first trained (lower is better)."""
    L, first = _check(L, first)
    return np.array([L[first[i], i] for i in range(len(first))])


def intransigence(L, joint, first=None) -> float:
    """Chaudhry et al.'s intransigence, in loss: mean over domains of L[trained(i), i] - joint_i, where joint_i
    is the multitask reference's loss on domain i. > 0: the sequence learned a domain worse than training on
    all domains at once does."""
    return float(np.mean(plasticity_per_domain(L, first) - np.asarray(joint, dtype=float)))


def forward_transfer_vs_scratch(L, scratch, first=None) -> float:
    """Mean over domains first trained at a phase >= 1 of scratch_i - L[trained(i), i]: how much lower the
    loss after a domain's phase is than a model trained on that domain alone from the same untrained
    weights with the same budget reaches (> 0: the earlier phases helped learn it). `scratch` lists the
    domains from the second on."""
    L, first = _check(L, first)
    return float(np.mean([s - L[first[i], i] for i, s in enumerate(scratch, start=1)]))


def visits(L, trained) -> list[tuple[int, int, int]]:
    """(column, phase it is trained at, last phase before it is trained again or the last phase) for every
    training of a domain that some later phase follows before the domain's next training."""
    L = np.asarray(L, dtype=float)
    T = L.shape[0] - 1
    out = []
    for p, c in enumerate(trained):
        again = [q for q in range(p + 1, T + 1) if trained[q] == c]
        end = again[0] - 1 if again else T
        if end > p:
            out.append((int(c), p, end))
    return out


def per_visit(L, trained) -> dict[str, float]:
    """Forgetting and BWT per visit, as Avalanche's stream metrics measure them: each time a domain is
    trained, from that training to the last phase before it is trained again (or the end); the domain
    trained last is excluded. forgetting = L[end, i] - min_{visit <= j < end} L[j, i]; BWT = L[visit, i] -
    L[end, i]. On an order without repeats these are Chaudhry's forgetting and BWT."""
    L = np.asarray(L, dtype=float)
    v = visits(L, trained)
    forgetting = [L[e, c] - L[p:e, c].min() for c, p, e in v]
    core = [f for (c, _, _), f in zip(v, forgetting) if c == 0]
    return {"forgetting_per_visit": float(np.mean(forgetting)),
            "bwt_per_visit": float(np.mean([L[p, c] - L[e, c] for c, p, e in v])),
            "core_forgetting_per_visit": float(np.mean(core)) if core else 0.0}


def final_summary(L, untrained, first=None, trained=None) -> dict[str, float]:
    """The arm's metrics from its loss matrix alone; `trained` (trained_columns) for an order with repeats."""
    L, first = _check(L, first)
    T = L.shape[0] - 1
    final = L[T, : len(first)]
    forgetting = forgetting_per_domain(L, first)
    if trained is None:
        if len(first) != L.shape[0]:
            raise ValueError("final_summary: pass `trained` (trained_columns) for an order that repeats domains")
        trained = np.arange(L.shape[0])
    return {"final_avg_loss": float(final.mean()),
            "final_ppl_geomean": float(math.exp(final.mean())),  # geometric mean of per-domain perplexities
            "forgetting": float(forgetting.mean()),
            "bwt": backward_transfer(L, first),
            "fwt_vs_untrained": forward_transfer(L, untrained, first),
            "plasticity": float(plasticity_per_domain(L, first).mean()),
            "core_final_loss": float(L[T, 0]),
            "core_forgetting": float(forgetting[0]) if T > 0 else 0.0,
            **per_visit(L, trained)}


def crossover(sparse, dense, persist: int = 1, margin: float = 0.0) -> float | None:
    """First point where `sparse` drops more than `margin` below `dense` and stays there for the rest of the
    curve (and for at least `persist` evaluations, so a dip at the last one does not count), linearly
    interpolated between the two evaluations around it.

    Returns the x position in units of curve index (0 when sparse is already below at the first point),
    or None when it never crosses for good. It never returns NaN: a non-finite value on either curve counts
    as "not below" at that point, and a crossing right after such a point is placed at the first point
    below (there is nothing to interpolate from).
    """
    d = np.asarray(sparse, dtype=float) - np.asarray(dense, dtype=float) + margin
    below = np.isfinite(d) & (d < 0)
    # first index from which the curve stays below to the end
    start = len(d)
    while start > 0 and below[start - 1]:
        start -= 1
    if start == len(d) or len(d) - start < persist:
        return None
    if start == 0:
        return 0.0
    if not np.isfinite(d[start - 1]):
        return float(start)
    return float(start - 1 + d[start - 1] / (d[start - 1] - d[start]))
