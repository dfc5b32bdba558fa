"""Bipartite Receptive Field (BRF), the initial topology of Cannistraci-Hebb Training (CHT).

Read as in CHT's `sparse_topology_initialization.py` (the LLM code): the nodes of the matrix's smaller
side (the output rows of a square matrix) are the BRF nodes; the larger side, of size m, is a ring.
Node i of n is centred at i * m / n on that ring (CHT's `(i * stride) mod m`, stride = m / n; a real
number here, so shapes that do not divide also spread the centres evenly) and keeps k_i columns:

- `randomness` r = 0: the k_i columns nearest to its centre on the ring (ties to the lower index), so
  the mask is a band along the (wrapped) diagonal of the ring order.
- r > 0: k_i columns sampled without replacement with p_j proportional to (1 + d_j)^(-(1-r)/r), d_j the
  ring distance of column j to the centre (Gumbel top-k, which is sequential sampling proportional to
  p and needs no underflowing powers); r = 1 samples uniformly.

Placement (ours): CHT lays node i and column j at their index positions, so at r = 0 its mask has no
randomness and q, k, v, every layer and every seed get the same one. Here each logical matrix draws a
random order of its nodes and of its ring (`layout`), so a row's band is contiguous in that matrix's ring
order, not in the column indices. That is a relabelling of both sides: each matrix keeps CHT's band,
degrees and spectrum, while q, k and v, the layers and the seeds differ (and, at r = 0, the seed is what
arms replicate over).

`degree_dist` sets the k_i, always summing to the exact nnz of the matrix:
- `fixed`: every node floor or ceil of nnz / n, the ceil ones evenly spaced (CHT's default branch,
  with its shuffle replaced by a deterministic spread).
- `uniform`: CHT's `degree_dist="uniform"`: every node one link (when nnz >= n), the other links land
  on uniformly random nodes, none above m (a multivariate hypergeometric draw).
"""
from __future__ import annotations

import numpy as np

from sparsecl.checks import choice, flag, number
from sparsecl.topology.allocation import allocate, check_allocation, spread, stack_masks

DEGREE_DISTS = ("fixed", "uniform")


SCHEMA = {"allocation": check_allocation, "randomness": number(0, 1), "degree_dist": choice(DEGREE_DISTS),
          "same_mask_every_layer": flag}


def ring_distance(n: int, m: int) -> np.ndarray:
    """(n, m): distance on the ring of m columns from node i's centre i * m / n to every column."""
    d = np.abs(np.arange(m)[None, :] - (np.arange(n) * m / n)[:, None])
    return np.minimum(d, m - d)


def degrees(nnz: int, n: int, m: int, degree_dist: str, rng: np.random.Generator) -> np.ndarray:
    if degree_dist == "fixed":
        return spread(nnz, n)
    base = 1 if nnz >= n else 0
    return base + rng.multivariate_hypergeometric(np.full(n, m - base), nnz - base * n)


def layout(n_out: int, n_in: int, nnz: int, r: float, degree_dist: str, rng: np.random.Generator):
    """(mask, nodes, ring): `mask` (n_out, n_in) is the band `ring_mask` (rows = the smaller side, columns
    = the ring) with its row i placed at node nodes[i] and its column j at ring[j] of the larger side."""
    n, m = sorted((n_out, n_in))
    nodes, ring = rng.permutation(n), rng.permutation(m)
    local = ring_mask(n, m, nnz, r, degree_dist, rng)
    placed = np.zeros((n, m), dtype=bool)
    placed[np.ix_(nodes, ring)] = local
    return (placed if n == n_out else placed.T), nodes, ring


def ring_mask(n: int, m: int, nnz: int, r: float, degree_dist: str, rng: np.random.Generator) -> np.ndarray:
    """(n, m): node i keeps k_i columns near its centre i * m / n on the ring of m (the module docstring)."""
    d = ring_distance(n, m)
    if r == 0:
        order = np.argsort(d, axis=1, kind="stable")
    else:  # ascending -log p + Gumbel noise = a sample without replacement proportional to p
        order = np.argsort((1 - r) / r * np.log1p(d) - rng.gumbel(size=d.shape), axis=1)
    mask = np.zeros((n, m), dtype=bool)
    np.put_along_axis(mask, order, np.arange(m) < degrees(nnz, n, m, degree_dist, rng)[:, None], axis=1)
    return mask


def build(blocks, density, settings, rng: np.random.Generator):
    r, degree_dist = float(settings["randomness"]), settings["degree_dist"]
    return stack_masks(blocks, allocate(blocks, density, settings["allocation"]),
                       lambda n_out, n_in, nnz: layout(n_out, n_in, nnz, r, degree_dist, rng)[0],
                       settings["same_mask_every_layer"])
