"""The capacity control: a dense model with narrower attention and MLP inner widths, holding as many active
block weights as the sparse arms at `density` (same residual width, embedding and tokenizer).

It is a structured mask: an attention inner dimension kept is its q, k and v rows and its attention-output
column (4 * n_embd weights), an MLP unit kept is its fc row and its proj column (2 * n_embd weights); the
rest is 0 forever, so the arm computes exactly what a narrower dense network computes (its attention keeps
the full model's softmax scale 1/sqrt(head size), which its queries can learn to offset). Every head keeps
the same number of inner dimensions, round(density * head size), at least one in total; MLP units then fill
the rest of the sparse arms' exact count (uniform allocation), spread over the layers, at least one each.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from sparsecl.topology.allocation import allocate, spread

SCHEMA: dict = {}  # the model's head count comes in as settings["n_head"] (topology.store.make_masks)

_LAYER = re.compile(r"(.*\.h\.\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)$")


def widths(blocks, density: float, n_head: int) -> dict[str, tuple[list[int], int]]:
    """Per block prefix ("transformer.h.0"): (the kept attention inner dims, the kept MLP units)."""
    nnz = allocate(blocks, density, "uniform")
    layers: dict[str, dict[str, str]] = {}
    for name in blocks:
        prefix, kind = _LAYER.fullmatch(name).groups()
        layers.setdefault(prefix, {})[kind] = name
    out, units_budget = {}, 0
    for prefix, names in layers.items():
        C = blocks[names["attn.c_proj"]][1][1]
        head = C // n_head
        per_head = int(round(density * head))
        dims = ([h * head + d for h in range(n_head) for d in range(per_head)] if per_head
                else [h * head for h in range(max(1, min(n_head, round(density * C))))])
        out[prefix] = dims
        target = sum(blocks[n][0] * nnz[n] for n in names.values())
        units_budget += target - 4 * C * len(dims)
    C = blocks[next(iter(layers.values()))["attn.c_proj"]][1][1]
    units = spread(max(len(layers), round(units_budget / (2 * C))), len(layers))
    return {prefix: (dims, int(u)) for (prefix, dims), u in zip(out.items(), units)}


def kept(blocks, density, settings):
    out = {}
    for prefix, (dims, units) in widths(blocks, density, settings["n_head"]).items():
        C = blocks[f"{prefix}.attn.c_proj"][1][1]
        out |= {f"{prefix}.attn.c_attn": len(dims) * C, f"{prefix}.attn.c_proj": C * len(dims),
                f"{prefix}.mlp.c_fc": units * C, f"{prefix}.mlp.c_proj": C * units}
    return out


def build(blocks, density, settings, rng: np.random.Generator):
    masks = {}
    for prefix, (dims, units) in widths(blocks, density, settings["n_head"]).items():
        C = blocks[f"{prefix}.attn.c_proj"][1][1]
        hidden = blocks[f"{prefix}.mlp.c_fc"][1][0]
        qkv = torch.zeros(3 * C, C, dtype=torch.bool)
        for b in range(3):
            qkv[[b * C + d for d in dims]] = True
        proj = torch.zeros(C, C, dtype=torch.bool)
        proj[:, dims] = True
        fc = torch.zeros(hidden, C, dtype=torch.bool)
        fc[:units] = True
        mlp_proj = torch.zeros(C, hidden, dtype=torch.bool)
        mlp_proj[:, :units] = True
        masks |= {f"{prefix}.attn.c_attn": qkv, f"{prefix}.attn.c_proj": proj, f"{prefix}.mlp.c_fc": fc,
                  f"{prefix}.mlp.c_proj": mlp_proj}
    return masks
