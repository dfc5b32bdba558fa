"""Make, save, load and describe the masks of one (topology, seed) arm."""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
from scipy.sparse.linalg import svds

from sparsecl.errors import IntegrityError
from sparsecl.io import torch_load, torch_save
from sparsecl import cost
from sparsecl.model import GPT, GPTConfig, layer_blocks
from sparsecl.model.masks import mask_hash, pack, unpack
from sparsecl.topology import TOPOLOGIES


def masked_blocks(params: dict) -> dict[str, tuple[int, tuple[int, int]]]:
    # The sparsified matrices do not depend on the vocabulary, so this stage does not read the tokenizer.
    return layer_blocks(GPTConfig(vocab_size=1, **params["model"]))


def make_masks(params: dict, topology: str, seed: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng([seed, zlib.crc32(topology.encode())])
    settings = {**(params.get("topology") or {}).get(topology, {}), "n_head": params["model"]["n_head"]}
    return TOPOLOGIES[topology].build(masked_blocks(params), params["density"], settings, rng)


def save_masks(path: str | Path, masks: dict[str, torch.Tensor], topology: str, seed: int) -> None:
    # Only what the masks are, not the params that asked for them: a dense mask file is the same at every
    # density, so DVC does not retrain dense arms when `density` changes.
    torch_save({"topology": topology, "seed": seed, "sha256": mask_hash(masks), "packed": pack(masks)}, path)


def load_masks(path: str | Path) -> dict:
    """Load a mask file (blob["masks"]: bool masks) and check its content hash: a corrupted mask is
    refused, not trained on."""
    blob = torch_load(path, map_location="cpu", weights_only=True)
    try:
        masks = unpack(blob["packed"]) if isinstance(blob, dict) else None
    except (KeyError, IntegrityError):
        masks = None
    if masks is None or mask_hash(masks) != blob.get("sha256"):
        raise IntegrityError(f"{path}: masks do not match their stored sha256 (corrupted); rerun init_topologies")
    return {k: v for k, v in blob.items() if k != "packed"} | {"masks": masks}


def spectral(block: torch.Tensor) -> dict[str, float]:
    """The two largest singular values of a 0/1 biadjacency (n_out, n_in), the relative spectral gap
    1 - sigma2 / sigma1 (scale-free: an irregular mask's sigma1 grows with its largest degrees, so the
    absolute gap would favour it), and the Ramanujan bound sqrt(d_r - 1) + sqrt(d_c - 1) at the mean row
    and column degrees.

    Singular values: ARPACK's Lanczos (scipy's `svds`) on the sparse matrix, from a fixed start vector, to
    machine precision: a 4096 x 4096 mask at density 0.01 takes well under a second on a laptop CPU
    (bench/spectral.py), so every preset's matrices get them. `bound_is_ramanujan` is 1 when the matrix is
    biregular (every row at one degree, every column at one degree): the bound is then the Ramanujan bound
    proper, which a random biregular graph nearly meets. Otherwise (0) it is only the Ramanujan bound of a
    biregular graph with these mean degrees, a reference value: an irregular mask's sigma2 is driven by its
    largest degrees and need not stay under it."""
    n_out, n_in = block.shape
    rows, cols = block.sum(1), block.sum(0)
    nnz = int(rows.sum())
    bound = math.sqrt(max(nnz / n_out - 1, 0)) + math.sqrt(max(nnz / n_in - 1, 0))
    regular = int(rows.min() == rows.max() and cols.min() == cols.max())
    if nnz == n_out * n_in:  # all ones: rank 1, exactly (a dense layer, at any size, for free)
        sigma = [math.sqrt(nnz), 0.0]
    elif nnz == 0 or min(n_out, n_in) < 3:  # ARPACK needs k = 2 < min side; no preset has such a matrix
        sigma = torch.linalg.svdvals(block.double()).tolist() + [0.0, 0.0]
    else:
        r, c = np.nonzero(block.cpu().numpy())
        a = scipy.sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(n_out, n_in))
        v0 = np.random.default_rng(0).standard_normal(min(n_out, n_in))  # fixed: the same value every run
        sigma = sorted(svds(a, k=2, tol=0, v0=v0, return_singular_vectors=False).tolist(), reverse=True)
    return {"sigma1": sigma[0], "sigma2": sigma[1], "spectral_gap": 1 - sigma[1] / sigma[0] if sigma[0] else 0.0,
            "bound": bound,
            "bound_is_ramanujan": regular}


def model_counts(params: dict, nnz: int, sparsified: int) -> dict[str, float]:
    """Whole-model parameter counts (sparsecl.cost.param_counts) without the tied token embedding, whose size
    is the trained tokenizer's vocabulary, known only after `tokenize` (the pretrain stage's
    train_summary.json has the full count). The model is built on the meta device at any vocabulary: the
    counts without the embedding do not depend on it."""
    with torch.device("meta"):
        model = GPT(GPTConfig(vocab_size=1, **params["model"]))
    total = cost.param_counts(model)["params_total"] - cost.embedding_params(model)
    active = total - sparsified + nnz
    return {"model_params_non_embedding": total, "model_active_non_embedding": active,
            "model_density_non_embedding": active / total}


def diagnostics(masks: dict[str, torch.Tensor], params: dict) -> dict:
    """Per layer: realized density, nnz, degree ranges, dead units (`dead_rows`: outputs of a logical
    matrix with no input; `dead_cols`: inputs that feed none of its outputs; summed over the logical
    matrices) and the spectrum of the logical matrix with the largest second singular value (`spectral`;
    a dense layer's all-ones matrix has sigma2 = 0 exactly). Summary: totals, whole-model counts, extremes
    over layers and the proposal's path-density estimate."""
    blocks = masked_blocks(params)
    layers = {}
    for name, (n, (n_out, n_in)) in blocks.items():
        m = masks.get(name)
        m = torch.ones(n * n_out, n_in, dtype=torch.bool) if m is None else m
        rows, cols = m.sum(1), m.view(n, n_out, n_in).sum(1)  # column degree per logical matrix
        layer = {"nnz": int(m.sum()), "density": float(m.float().mean()),
                 "row_degree_min": int(rows.min()), "row_degree_mean": float(rows.float().mean()),
                 "row_degree_max": int(rows.max()), "col_degree_min": int(cols.min()),
                 "col_degree_mean": float(cols.float().mean()), "col_degree_max": int(cols.max()),
                 "dead_rows": int((rows == 0).sum()), "dead_cols": int((cols == 0).sum())}
        layer |= max((spectral(b) for b in m.view(n, n_out, n_in)), key=lambda s: s["sigma2"])
        if layer["bound"] > 0:  # 0 when every degree is 1: nothing to compare with
            layer["sigma2_over_bound"] = layer["sigma2"] / layer["bound"]
        layers[name] = layer
    nnz = sum(v["nnz"] for v in layers.values())
    total = sum(n * s[0] * s[1] for n, s in blocks.values())
    rho = nnz / total
    # The proposal's depth L counts the masked matrices a signal crosses in sequence: fc and proj per block.
    depth = 2 * params["model"]["n_layer"]
    summary = {"nnz": nnz, "sparsified_params": total, "density": rho, **model_counts(params, nnz, total),
               "path_depth": depth, "path_density_estimate": rho ** (depth - 1)}
    for key, pick in (("row_degree_min", min), ("row_degree_max", max), ("col_degree_min", min),
                      ("col_degree_max", max)):
        summary[key] = pick(v[key] for v in layers.values())
    summary["dead_rows"] = sum(v["dead_rows"] for v in layers.values())
    summary["dead_cols"] = sum(v["dead_cols"] for v in layers.values())
    summary["spectral_gap_min"] = min(v["spectral_gap"] for v in layers.values())
    ratios = [v["sigma2_over_bound"] for v in layers.values() if "sigma2_over_bound" in v]
    if ratios:
        summary["sigma2_over_bound_max"] = max(ratios)
    return {"summary": summary, "layers": layers}
