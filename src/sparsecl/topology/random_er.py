"""Random Erdos-Renyi topology: exactly nnz uniformly chosen entries per matrix (not Bernoulli).

`no_dead_units: true` (off by default, so the proposal's ER stays the default) first gives every row and
every column one link, as sparse-training initializations that need every unit connected do, then places
the other links uniformly among the free entries. The cover takes max(n_out, n_in) links: each node of
the larger side links to one node of the smaller side, every node of the smaller side at least once (a
random permutation of it, then uniform picks, in random order). A matrix whose nnz is below that has no
such mask at its exact count, and the build stops with the key named instead of keeping fewer links alive
or more links in all. The default masks at density 0.05 leave some output rows with no input (`dead_rows` in
the diagnostics; about 1.3 per block over seeds 0-9, most in the MLP's fc); expander and BRF masks never do.
"""
from __future__ import annotations

import numpy as np

from sparsecl.checks import flag
from sparsecl.topology.allocation import allocate, check_allocation, stack_masks

SCHEMA = {"allocation": check_allocation, "no_dead_units": flag, "same_mask_every_layer": flag}


def cover(n_out: int, n_in: int, rng: np.random.Generator) -> np.ndarray:
    """max(n_out, n_in) distinct (row, column) links touching every row and every column."""
    small, large = sorted((n_out, n_in))
    partner = rng.permutation(np.concatenate([np.arange(small), rng.integers(0, small, large - small)]))
    return (partner, np.arange(large)) if n_out == small else (np.arange(large), partner)


def build(blocks, density, settings, rng: np.random.Generator):
    alive = settings["no_dead_units"]

    def block_mask(n_out, n_in, nnz):
        mask = np.zeros(n_out * n_in, dtype=bool)
        if alive:
            if nnz < max(n_out, n_in):
                raise ValueError(f"topology.random.no_dead_units: a {n_out} x {n_in} matrix keeps {nnz} weights at "
                                 f"this density, fewer than the {max(n_out, n_in)} that reach every row and column; "
                                 f"allowed from density {max(n_out, n_in) / (n_out * n_in):.4g} for this matrix")
            rows, cols = cover(n_out, n_in, rng)
            mask[rows * n_in + cols] = True
        free = np.flatnonzero(~mask)
        mask[free[rng.choice(len(free), size=nnz - int(mask.sum()), replace=False)]] = True
        return mask.reshape(n_out, n_in)

    return stack_masks(blocks, allocate(blocks, density, settings["allocation"]), block_mask,
                       settings["same_mask_every_layer"])
