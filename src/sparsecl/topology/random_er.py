"""Random Erdos-Renyi topology: exactly nnz uniformly chosen entries per matrix (not Bernoulli)."""
from __future__ import annotations

import numpy as np

from sparsecl.topology.allocation import ALLOCATIONS, allocate, stack_masks


def _allocation(key, v):
    return None if v in ALLOCATIONS else f"{key}: unknown value {v!r}, allowed: {', '.join(ALLOCATIONS)}"


SCHEMA = {"allocation": _allocation}


def build(blocks, density, settings, rng: np.random.Generator):
    def block_mask(n_out, n_in, nnz):
        mask = np.zeros(n_out * n_in, dtype=bool)
        mask[rng.choice(n_out * n_in, size=nnz, replace=False)] = True
        return mask.reshape(n_out, n_in)

    return stack_masks(blocks, allocate(blocks, density, settings["allocation"]), block_mask)
