"""Expander: a random biregular bipartite graph, every row and column at its exact degree.

Degrees: a matrix with nnz kept of (n_out, n_in) gives row i floor((i+1)*nnz/n_out) - floor(i*nnz/n_out)
and column j the same with n_in (`allocation.spread`): every row floor or ceil of nnz / n_out, every
column floor or ceil of nnz / n_in, exactly biregular when they divide.

Construction: the configuration model (match row stubs to a random permutation of column stubs), then
every duplicate edge is repaired by a switch with a random other edge, (a, b), (c, d) -> (a, d), (c, b),
accepted only when both new edges are absent: degrees never change. Random biregular graphs are
near-Ramanujan (second singular value close to sqrt(d_r - 1) + sqrt(d_c - 1)). Above half density the
complement (also biregular) is built instead, so a switch always has room.
"""
from __future__ import annotations

import numpy as np

from sparsecl.checks import flag
from sparsecl.topology.allocation import allocate, check_allocation, spread, stack_masks

SCHEMA = {"allocation": check_allocation, "same_mask_every_layer": flag}


def biregular(row_deg: np.ndarray, col_deg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A simple bipartite graph (bool biadjacency) with exactly these row and column degrees."""
    n_out, n_in = len(row_deg), len(col_deg)
    rows = np.repeat(np.arange(n_out), row_deg)
    cols = rng.permutation(np.repeat(np.arange(n_in), col_deg))
    keys = rows * n_in + cols
    count: dict[int, int] = {}
    for k in keys.tolist():
        count[k] = count.get(k, 0) + 1
    _, first = np.unique(keys, return_index=True)
    for e in np.setdiff1d(np.arange(len(keys)), first).tolist():  # every copy after an edge's first
        while count[int(keys[e])] > 1:
            f = int(rng.integers(len(keys)))
            a, b = int(rows[e] * n_in + cols[f]), int(rows[f] * n_in + cols[e])
            if count.get(a, 0) or count.get(b, 0):  # also rejects f in e's row or column
                continue
            count[int(keys[e])] -= 1
            count[int(keys[f])] -= 1
            count[a], count[b] = 1, 1
            cols[e], cols[f] = cols[f], cols[e]
            keys[e], keys[f] = a, b
    mask = np.zeros(n_out * n_in, dtype=bool)
    mask[keys] = True
    return mask.reshape(n_out, n_in)


def build(blocks, density, settings, rng: np.random.Generator):
    def block_mask(n_out, n_in, nnz):
        row_deg, col_deg = spread(nnz, n_out), spread(nnz, n_in)
        if 2 * nnz <= n_out * n_in:
            return biregular(row_deg, col_deg, rng)
        return ~biregular(n_in - row_deg, n_out - col_deg, rng)

    return stack_masks(blocks, allocate(blocks, density, settings["allocation"]), block_mask,
                       settings["same_mask_every_layer"])
