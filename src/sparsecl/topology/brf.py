"""Bipartite Receptive Field (BRF), the initial topology of Cannistraci-Hebb Training (CHT).

Read as in CHT's `sparse_topology_initialization.py` (the LLM code): the nodes of the matrix's smaller
side (the output rows of a square matrix) are the BRF nodes; the larger side, of size m, is a ring.
Node i of n is centred at i * m / n on that ring (CHT's `(i * stride) mod m`, stride = m / n; a real
number here, so shapes that do not divide also spread the centres evenly) and keeps k_i columns:

- `randomness` r = 0: the k_i columns nearest to its centre on the ring (ties to the lower index), so
  the mask is a band along the (wrapped) diagonal. No randomness at all: every seed gives this mask.
- r > 0: k_i columns sampled without replacement with p_j proportional to (1 + d_j)^(-(1-r)/r), d_j the
  ring distance of column j to the centre (Gumbel top-k, which is sequential sampling proportional to
  p and needs no underflowing powers); r = 1 samples uniformly.

`degree_dist` sets the k_i, always summing to the exact nnz of the matrix:
- `fixed`: every node floor or ceil of nnz / n, the ceil ones evenly spaced (CHT's default branch,
  with its shuffle replaced by a deterministic spread).
- `uniform`: CHT's `degree_dist="uniform"`: every node one link (when nnz >= n), the other links land
  on uniformly random nodes, none above m (a multivariate hypergeometric draw).
"""
from __future__ import annotations

import numpy as np

from sparsecl.checks import choice, number
from sparsecl.topology.allocation import allocate, check_allocation, spread, stack_masks

DEGREE_DISTS = ("fixed", "uniform")


SCHEMA = {"allocation": check_allocation, "randomness": number(0, 1), "degree_dist": choice(DEGREE_DISTS)}


def ring_distance(n: int, m: int) -> np.ndarray:
    """(n, m): distance on the ring of m columns from node i's centre i * m / n to every column."""
    d = np.abs(np.arange(m)[None, :] - (np.arange(n) * m / n)[:, None])
    return np.minimum(d, m - d)


def degrees(nnz: int, n: int, m: int, degree_dist: str, rng: np.random.Generator) -> np.ndarray:
    if degree_dist == "fixed":
        return spread(nnz, n)
    base = 1 if nnz >= n else 0
    return base + rng.multivariate_hypergeometric(np.full(n, m - base), nnz - base * n)


def build(blocks, density, settings, rng: np.random.Generator):
    r, degree_dist = float(settings["randomness"]), settings["degree_dist"]

    def block_mask(n_out, n_in, nnz):
        n, m = sorted((n_out, n_in))
        d = ring_distance(n, m)
        if r == 0:
            order = np.argsort(d, axis=1, kind="stable")
        else:  # ascending -log p + Gumbel noise = a sample without replacement proportional to p
            order = np.argsort((1 - r) / r * np.log1p(d) - rng.gumbel(size=d.shape), axis=1)
        mask = np.zeros((n, m), dtype=bool)
        np.put_along_axis(mask, order, np.arange(m) < degrees(nnz, n, m, degree_dist, rng)[:, None], axis=1)
        return mask if n == n_out else mask.T

    return stack_masks(blocks, allocate(blocks, density, settings["allocation"]), block_mask)
