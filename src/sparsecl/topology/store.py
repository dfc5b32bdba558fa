"""Make, save, load and describe the masks of one (topology, seed) arm."""
from __future__ import annotations

import hashlib
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from sparsecl.io import IntegrityError, torch_load, torch_save
from sparsecl.model import GPT, GPTConfig, layer_blocks
from sparsecl.topology import TOPOLOGIES


def masked_blocks(params: dict) -> dict[str, tuple[int, tuple[int, int]]]:
    # The sparsified matrices do not depend on the vocabulary, so this stage does not read the tokenizer.
    return layer_blocks(GPTConfig(vocab_size=1, **params["model"]))


def make_masks(params: dict, topology: str, seed: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng([seed, zlib.crc32(topology.encode())])
    settings = {**(params.get("topology") or {}).get(topology, {}), "n_head": params["model"]["n_head"]}
    return TOPOLOGIES[topology].build(masked_blocks(params), params["density"], settings, rng)


def mask_hash(masks: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(masks):
        h.update(name.encode())
        h.update(masks[name].to(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()


def save_masks(path: str | Path, masks: dict[str, torch.Tensor], topology: str, seed: int) -> None:
    # Only what the masks are, not the params that asked for them: a dense mask file is the same at every
    # density, so DVC does not retrain dense arms when `density` changes.
    torch_save({"topology": topology, "seed": seed, "sha256": mask_hash(masks),
                "masks": {n: m.to(torch.bool) for n, m in masks.items()}}, path)


def load_masks(path: str | Path) -> dict:
    """Load a mask file and check its content hash: a corrupted mask is refused, not trained on."""
    blob = torch_load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or mask_hash(blob.get("masks", {})) != blob.get("sha256"):
        raise IntegrityError(f"{path}: masks do not match their stored sha256 (corrupted); rerun init_topologies")
    return blob


# A dense SVD of a logical matrix up to this size on each side takes well under a second on a laptop CPU;
# larger matrices get no spectral diagnostics (the keys are absent, not faked).
SPECTRAL_MAX_SIDE = 1024


def spectral(block: torch.Tensor) -> dict[str, float]:
    """Second singular value of a 0/1 biadjacency and the Ramanujan bound sqrt(d_r - 1) + sqrt(d_c - 1) at
    its mean row and column degrees (exact degrees for a biregular graph)."""
    n_out, n_in = block.shape
    nnz = float(block.sum())
    sigma = torch.linalg.svdvals(block.double())
    bound = math.sqrt(max(nnz / n_out - 1, 0)) + math.sqrt(max(nnz / n_in - 1, 0))
    return {"sigma2": float(sigma[1]), "ramanujan_bound": bound}


def model_counts(params: dict, nnz: int, sparsified: int) -> dict[str, float]:
    """Whole-model parameter counts without the tied token embedding (its size is the trained tokenizer's
    vocabulary, known only after `tokenize`; the pretrain stage's train_summary.json has the full count)."""
    with torch.device("meta"):
        model = GPT(GPTConfig(vocab_size=1, **params["model"]))
    total = sum(p.numel() for p in model.parameters()) - model.cfg.n_embd
    active = total - sparsified + nnz
    return {"model_params_non_embedding": total, "model_active_non_embedding": active,
            "model_density_non_embedding": active / total}


def diagnostics(masks: dict[str, torch.Tensor], params: dict) -> dict:
    """Per layer: realized density, nnz, degree ranges and (where affordable) the largest second singular
    value of its logical matrices with their Ramanujan bound. Summary: totals, whole-model counts,
    extremes over layers and the proposal's path-density estimate."""
    blocks = masked_blocks(params)
    layers = {}
    for name, (n, (n_out, n_in)) in blocks.items():
        m = masks.get(name)
        m = torch.ones(n * n_out, n_in, dtype=torch.bool) if m is None else m
        rows, cols = m.sum(1), m.view(n, n_out, n_in).sum(1)  # column degree per logical matrix
        layer = {"nnz": int(m.sum()), "density": float(m.float().mean()),
                 "row_degree_min": int(rows.min()), "row_degree_mean": float(rows.float().mean()),
                 "row_degree_max": int(rows.max()), "col_degree_min": int(cols.min()),
                 "col_degree_mean": float(cols.float().mean()), "col_degree_max": int(cols.max())}
        if max(n_out, n_in) <= SPECTRAL_MAX_SIDE:
            layer |= max((spectral(b) for b in m.view(n, n_out, n_in)), key=lambda s: s["sigma2"])
            if layer["ramanujan_bound"] > 0:  # 0 when every degree is 1: no bound to compare with
                layer["sigma2_over_bound"] = layer["sigma2"] / layer["ramanujan_bound"]
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
    ratios = [v["sigma2_over_bound"] for v in layers.values() if "sigma2_over_bound" in v]
    if ratios:
        summary["sigma2_over_bound_max"] = max(ratios)
    return {"summary": summary, "layers": layers}
