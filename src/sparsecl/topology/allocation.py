"""How many weights each logical matrix keeps, so every topology has the same exact nnz per layer, and the
settings every sparse topology shares."""
from __future__ import annotations

import math
import re

import numpy as np
import torch

from sparsecl.checks import choice

ALLOCATIONS = ("uniform", "erk")


# The `allocation` setting every sparse topology accepts (a params.yaml check).
check_allocation = choice(ALLOCATIONS)


def allocate(blocks: dict[str, tuple[int, tuple[int, int]]], density: float, allocation: str) -> dict[str, int]:
    """nnz per logical matrix (the same for every block of a layer).

    uniform: round(density * n_out * n_in) everywhere.
    erk: RigL's Erdos-Renyi-Kernel: density of a matrix proportional to (n_in + n_out) / (n_in * n_out),
    scaled so the total kept equals uniform's total; matrices that would exceed 1 are made dense and the
    scale is solved again over the rest. Each other matrix then keeps the floor or the ceil of its exact
    share, the ceil ones chosen (`round_up`) so that the total is exactly uniform's with the least total
    rounding error. Rounding a layer of c logical matrices up adds c, so the exact total is reachable
    precisely when some set of the layers below density 1 has counts summing to the shortfall (which is
    below their count sum). With counts 1 and 3 (this model: fused q,k,v 3, every other layer 1) that
    holds whenever at least two layers of a single logical matrix are below density 1: every model here.
    A layer set that misses it (a single layer beside fused ones, or single layers all at density 1) gets
    the largest reachable total below uniform's, short by less than its largest count (tests show both).
    """
    sizes = {n: shape[0] * shape[1] for n, (_, shape) in blocks.items()}
    uniform = {n: int(round(density * s)) for n, s in sizes.items()}
    if allocation == "uniform":
        return uniform
    if allocation != "erk":
        raise ValueError(f"topology allocation: unknown {allocation!r}, allowed: {', '.join(ALLOCATIONS)}")
    count = {n: b for n, (b, _) in blocks.items()}
    raw = {n: (shape[0] + shape[1]) / (shape[0] * shape[1]) for n, (_, shape) in blocks.items()}
    target = sum(count[n] * uniform[n] for n in sizes)
    dense: set[str] = set()
    while True:
        budget = target - sum(count[n] * sizes[n] for n in dense)
        free = [n for n in sizes if n not in dense]
        scale = budget / sum(count[n] * raw[n] * sizes[n] for n in free)
        over = [n for n in free if scale * raw[n] > 1]
        if not over:
            break
        dense.update(over)
    exact = {n: float(sizes[n]) if n in dense else scale * raw[n] * sizes[n] for n in sizes}
    nnz = {n: min(math.floor(x), sizes[n]) for n, x in exact.items()}
    short = target - sum(count[n] * nnz[n] for n in sizes)
    room = [n for n in free if nnz[n] < sizes[n]]
    for n in round_up([count[n] for n in room], [exact[n] - nnz[n] for n in room], short):
        nnz[room[n]] += 1
    return nnz


def round_up(counts: list[int], fractions: list[float], short: int) -> list[int]:
    """Indices to round up: their counts sum to `short` (or the most reachable below it) and their weighted
    remainders sum(count * fraction) are the largest such, i.e. the least total rounding error. A 0/1
    knapsack on the total count, solved exactly (at most a few hundred items and a shortfall below their
    count sum); ties keep the earlier items, so the result is deterministic."""
    best: dict[int, tuple[float, list[int]]] = {0: (0.0, [])}  # reachable total -> (best value, its items)
    for i, (c, f) in enumerate(zip(counts, fractions)):
        for total, (value, items) in sorted(best.items(), reverse=True):
            new = total + c
            if new <= short and (new not in best or value + c * f > best[new][0]):
                best[new] = (value + c * f, items + [i])
    return best[max(best)][1]


def spread(total: int, n: int) -> np.ndarray:
    """`total` split over n nodes as evenly as possible: node i gets floor((i+1)*total/n) - floor(i*total/n),
    so every node has floor or ceil of total/n and the ceil ones are evenly spaced."""
    return np.diff(np.arange(n + 1, dtype=np.int64) * total // n)


_BLOCK_INDEX = re.compile(r"\.h\.\d+\.")


def stack_masks(blocks, nnz: dict[str, int], block_mask, same_every_layer: bool = False) -> dict[str, torch.Tensor]:
    """Build each layer by stacking `block_mask(n_out, n_in, nnz)` for each of its logical matrices (each
    drawn on its own: q, k and v differ). `same_every_layer`: every transformer block reuses the masks of
    the first block (the same layer's "transformer.h.<i>." in each block), as expander-mask pruning-at-init
    methods lay one graph on every layer; the layers still hold exactly their allocated nnz."""
    built: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, (n, shape) in blocks.items():
        key = (_BLOCK_INDEX.sub(".h.*.", name) if same_every_layer else name, n, shape, nnz[name])
        if key not in built:
            built[key] = torch.from_numpy(np.concatenate([block_mask(*shape, nnz[name]) for _ in range(n)], axis=0))
        out[name] = built[key]
    return out
