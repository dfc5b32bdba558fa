"""Active parameters and FLOPs per token of a model, of one of its subnetworks, or of a model's exported forms:
the one place every figure of cost is counted (the model's summary, the mechanisms' counted FLOPs, the export,
the topology diagnostics, the report's crossover and the benches).

The convention (nanoGPT / PaLM):
- A forward pass costs 2 FLOPs per token for every matmul weight it multiplies (the attention and MLP matrices
  of every block and the tied LM head), plus, per layer and head, 4 * head_dim * block_size for the attention
  scores and the weighted values over a full context (4 * n_embd * block_size per layer with every head).
- Training costs 3 forward passes per token (the backward pass twice the forward): `TRAIN`.
- Embedding lookups, LayerNorms, biases and softmax are not counted.
- Which weights a forward pass multiplies: by default those that are not 0 (what a sparse kernel would compute;
  the CPU implementation multiplies masked dense matrices); `structural=True` counts the weights the topology
  lets a layer multiply (its mask's entries, every weight without one) whether or not they are 0 now: what dense
  training of a pruned model multiplies (postprune, and every arm's pretraining). With the topk activation only
  k of the MLP's units feed its output projection, so that matrix counts k / (4 * n_embd) of its weights.
  `kernel_flops` counts instead what given kernels multiply, whatever the weights and the activation: a dense or
  masked matrix all of its entries, a sparse (CSR) one its stored nonzeros (model/sparse_export.py's forms).
- Parameters: every parameter once (the tied embedding and LM head once), a sparsified matrix at its active
  count (nonzero weights; `param_counts` counts its mask's entries, what the topology keeps).
A subnetwork is given as 0/1 float vectors per layer over MLP units (`units`) and heads (`heads`).

Models are taken as they are (a `GPT`: `cfg`, `transformer.h`, `lm_head`, `masked_layers()`), so this module
imports nothing of the package and every layer, the model's included, may use it.
"""
from __future__ import annotations

import torch
import torch.nn as nn

TRAIN = 3  # training FLOPs per token are TRAIN x the forward pass's: forward + backward (twice the forward)


def attention_flops(cfg, heads: float | None = None) -> float:
    """Forward FLOPs per token of attention scores and values over a full context, for `heads` heads in all
    (every head of every layer by default)."""
    heads = cfg.n_layer * cfg.n_head if heads is None else heads
    return 4 * (cfg.n_embd // cfg.n_head) * cfg.block_size * heads


def _active(layer, structural: bool = False) -> torch.Tensor:
    if structural:
        return torch.ones_like(layer.weight) if layer.mask is None else layer.mask.float()
    return (layer.effective_weight != 0).float()


def layer_weights(block, structural: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Active weights of one block: per MLP unit in fc (its row) and in proj (its column), per head
    (its q, k, v rows and its attention-output columns)."""
    mlp, attn = block.mlp, block.attn
    C = attn.c_proj.in_features
    nh = attn.n_head
    heads = (_active(attn.c_attn, structural).view(3, nh, C // nh, C).sum((0, 2, 3))
             + _active(attn.c_proj, structural).view(C, nh, C // nh).sum((0, 2)))
    return _active(mlp.c_fc, structural).sum(1), _active(mlp.c_proj, structural).sum(0), heads


@torch.no_grad()
def block_weights(model, units=None, heads=None, topk_scaled: bool = False, structural: bool = False) -> float:
    """Active weights of the attention and MLP matrices of all blocks (of the subnetwork, if given)."""
    total = 0.0
    for i, block in enumerate(model.transformer.h):
        fc, proj, head = layer_weights(block, structural)
        u = 1.0 if units is None else units[i].to(fc)
        h = 1.0 if heads is None else heads[i].to(head)
        scale = block.mlp.topk / fc.numel() if topk_scaled and block.mlp.topk else 1.0
        total += float((fc * u).sum() + scale * (proj * u).sum() + (head * h).sum())
    return total


def matmul_weights(model, units=None, heads=None, structural: bool = False) -> float:
    """Weights a forward pass multiplies per token: the blocks' matrices and the (tied) LM head."""
    return block_weights(model, units, heads, topk_scaled=True, structural=structural) + model.lm_head.weight.numel()


def forward_flops(model, units=None, heads=None, structural: bool = False) -> float:
    """Forward FLOPs per token of the (sub)network."""
    kept_heads = None if heads is None else float(sum(h.sum() for h in heads))
    return 2 * matmul_weights(model, units, heads, structural) + attention_flops(model.cfg, kept_heads)


def train_flops(model, units=None, heads=None, structural: bool = False) -> float:
    """Training FLOPs per token (forward and backward) of the (sub)network."""
    return TRAIN * forward_flops(model, units, heads, structural)


def pretrain_flops_per_token(model) -> float:
    """Training FLOPs per token of a topology's pretraining: every weight its masks keep is multiplied, zero or
    not (`structural`). Every mechanism of a (topology, seed) shares it; a dense model's costs about twice a
    5%-dense one's at the default shape (the tied embedding and attention scores are dense in both)."""
    return train_flops(model, structural=True)


def kernel_weights(model: nn.Module) -> int:
    """Weights a forward pass through the given kernels multiplies per token: a dense or masked matrix all of
    its entries (the masked one runs as a dense kernel), a sparse one (anything with `nnz`) its stored
    nonzeros; the tied LM head once."""
    return sum(m.nnz if hasattr(m, "nnz") else m.weight.numel()
               for m in model.modules() if isinstance(m, nn.Linear) or hasattr(m, "nnz"))


def kernel_flops(model: nn.Module) -> int:
    """Forward FLOPs per token of a full context through the given kernels (`kernel_weights`)."""
    return 2 * kernel_weights(model) + attention_flops(model.cfg)


def param_count(model, units=None, heads=None) -> float:
    """Parameters of the (sub)network, the tied embedding once, sparsified matrices at their nonzero count."""
    everything = sum(p.numel() for p in model.parameters())
    sparsified = sum(m.weight.numel() for m in model.masked_layers().values())
    return everything - sparsified + block_weights(model, units, heads)


def param_bytes(model, units=None, heads=None) -> int:
    """Bytes to hold the values of those parameters (a copy of the model: a teacher, a Fisher)."""
    return int(param_count(model, units, heads)) * next(model.parameters()).element_size()


def param_counts(model) -> dict[str, float]:
    """Parameter counts (tied head counted once) and densities, over the sparsified matrices and over all
    parameters, a sparsified matrix at its mask's entries (what the topology keeps)."""
    total = sum(p.numel() for p in model.parameters())
    sparse_total = sum(m.weight.numel() for m in model.masked_layers().values())
    sparse_kept = sum(m.weight.numel() if m.mask is None else int(m.mask.sum())
                      for m in model.masked_layers().values())
    active = total - sparse_total + sparse_kept
    return {"params_total": total, "params_active": active, "sparsified_params": sparse_total,
            "sparsified_kept": sparse_kept, "sparsified_density": sparse_kept / sparse_total,
            "model_density": active / total}


def embedding_params(model) -> int:
    """The token embedding's parameters (tied to the LM head): the part of the counts that depends on the
    vocabulary."""
    return model.transformer.wte.weight.numel()
