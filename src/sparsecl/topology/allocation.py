"""How many weights each logical matrix keeps, so every topology has the same exact nnz per layer."""
from __future__ import annotations

import math

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
    scale is solved again over the rest. The fractional parts are rounded by largest remainder so the
    total is exactly uniform's (always reachable when some layer holds a single logical matrix).
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
    nnz = {n: math.floor(x) for n, x in exact.items()}
    short = target - sum(count[n] * nnz[n] for n in sizes)
    for n in sorted(free, key=lambda n: nnz[n] - exact[n]):  # largest remainder first
        if count[n] <= short and nnz[n] < sizes[n]:
            nnz[n] += 1
            short -= count[n]
    return nnz


def spread(total: int, n: int) -> np.ndarray:
    """`total` split over n nodes as evenly as possible: node i gets floor((i+1)*total/n) - floor(i*total/n),
    so every node has floor or ceil of total/n and the ceil ones are evenly spaced."""
    return np.diff(np.arange(n + 1, dtype=np.int64) * total // n)


def stack_masks(blocks, nnz: dict[str, int], block_mask) -> dict[str, torch.Tensor]:
    """Build each layer by stacking `block_mask(n_out, n_in, nnz)` for each of its logical matrices."""
    return {name: torch.from_numpy(np.concatenate([block_mask(*shape, nnz[name]) for _ in range(n)], axis=0))
            for name, (n, shape) in blocks.items()}
