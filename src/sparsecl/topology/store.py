"""Make, save, load and describe the masks of one (topology, seed) arm."""
from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np
import torch

from sparsecl.io import torch_save
from sparsecl.model import GPTConfig, layer_blocks
from sparsecl.topology import TOPOLOGIES


def masked_blocks(params: dict) -> dict[str, tuple[int, tuple[int, int]]]:
    # The sparsified matrices do not depend on the vocabulary, so this stage does not read the tokenizer.
    return layer_blocks(GPTConfig(vocab_size=1, **params["model"]))


def make_masks(params: dict, topology: str, seed: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng([seed, zlib.crc32(topology.encode())])
    settings = (params.get("topology") or {}).get(topology, {})
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
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if mask_hash(blob["masks"]) != blob["sha256"]:
        raise ValueError(f"{path}: masks do not match their stored sha256 (corrupted); rerun init_topologies")
    return blob


def diagnostics(masks: dict[str, torch.Tensor], blocks, n_layer: int, density: float) -> dict:
    """Per-layer realized density, nnz and degree ranges, plus the proposal's path-density estimate."""
    layers = {}
    for name, (n, (n_out, n_in)) in blocks.items():
        m = masks.get(name)
        m = torch.ones(n * n_out, n_in, dtype=torch.bool) if m is None else m
        rows, cols = m.sum(1), m.view(n, n_out, n_in).sum(1)  # column degree per logical matrix
        layers[name] = {"nnz": int(m.sum()), "density": float(m.float().mean()),
                        "row_degree_min": int(rows.min()), "row_degree_mean": float(rows.float().mean()),
                        "row_degree_max": int(rows.max()), "col_degree_min": int(cols.min()),
                        "col_degree_mean": float(cols.float().mean()), "col_degree_max": int(cols.max())}
    nnz = sum(v["nnz"] for v in layers.values())
    total = sum(n * s[0] * s[1] for n, s in blocks.values())
    rho = nnz / total
    # The proposal's depth L counts the masked matrices a signal crosses in sequence: fc and proj per block.
    depth = 2 * n_layer
    return {"summary": {"nnz": nnz, "sparsified_params": total, "density": rho, "path_depth": depth,
                        "path_density_estimate": rho ** (depth - 1)},
            "layers": layers}
