"""Random Erdos-Renyi topology: exactly nnz uniformly chosen entries per matrix (not Bernoulli)."""
from __future__ import annotations

import numpy as np

from sparsecl.topology.allocation import allocate, check_allocation, stack_masks

SCHEMA = {"allocation": check_allocation}


def build(blocks, density, settings, rng: np.random.Generator):
    def block_mask(n_out, n_in, nnz):
        mask = np.zeros(n_out * n_in, dtype=bool)
        mask[rng.choice(n_out * n_in, size=nnz, replace=False)] = True
        return mask.reshape(n_out, n_in)

    return stack_masks(blocks, allocate(blocks, density, settings["allocation"]), block_mask)
