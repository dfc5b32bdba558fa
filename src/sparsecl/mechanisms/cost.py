"""FLOPs and parameters of a model or of one of its subnetworks, counted from the weights that are not 0
(what a sparse kernel would compute; the CPU implementation multiplies masked dense matrices).

Conventions (nanoGPT / PaLM): a forward pass costs 2 FLOPs per active matmul weight per token, plus
4 * n_embd * block_size per layer for attention scores and values; a backward pass costs twice the forward.
Embedding lookups, LayerNorms and softmax are not counted. With the topk activation only k of the MLP's
units feed its output projection, so that matrix counts k / (4 * n_embd) of its weights.
A subnetwork is given as 0/1 float vectors per layer over MLP units (`units`) and heads (`heads`).
"""
from __future__ import annotations

import torch


def _active(layer) -> torch.Tensor:
    return (layer.effective_weight != 0).float()


def layer_weights(block) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Active weights of one block: per MLP unit in fc (its row) and in proj (its column), per head
    (its q, k, v rows and its attention-output columns)."""
    mlp, attn = block.mlp, block.attn
    C = attn.c_proj.in_features
    nh = attn.n_head
    heads = (_active(attn.c_attn).view(3, nh, C // nh, C).sum((0, 2, 3))
             + _active(attn.c_proj).view(C, nh, C // nh).sum((0, 2)))
    return _active(mlp.c_fc).sum(1), _active(mlp.c_proj).sum(0), heads


@torch.no_grad()
def block_weights(model, units=None, heads=None, topk_scaled: bool = False) -> float:
    """Active weights of the attention and MLP matrices of all blocks (of the subnetwork, if given)."""
    total = 0.0
    for i, block in enumerate(model.transformer.h):
        fc, proj, head = layer_weights(block)
        u = 1.0 if units is None else units[i].to(fc)
        h = 1.0 if heads is None else heads[i].to(head)
        scale = block.mlp.topk / fc.numel() if topk_scaled and block.mlp.topk else 1.0
        total += float((fc * u).sum() + scale * (proj * u).sum() + (head * h).sum())
    return total


def matmul_weights(model, units=None, heads=None) -> float:
    """Weights a forward pass multiplies per token: the blocks' matrices and the (tied) LM head."""
    return block_weights(model, units, heads, topk_scaled=True) + model.lm_head.weight.numel()


def forward_flops(model, units=None, heads=None) -> float:
    """Forward FLOPs per token."""
    cfg = model.cfg
    kept_heads = cfg.n_layer * cfg.n_head if heads is None else float(sum(h.sum() for h in heads))
    attention = 4 * (cfg.n_embd // cfg.n_head) * cfg.block_size * kept_heads
    return 2 * matmul_weights(model, units, heads) + attention


def param_count(model, units=None, heads=None) -> float:
    """Parameters of the (sub)network, the tied embedding once, sparsified matrices at their active count."""
    everything = sum(p.numel() for p in model.parameters())
    sparsified = sum(m.weight.numel() for m in model.masked_layers().values())
    return everything - sparsified + block_weights(model, units, heads)


def param_bytes(model, units=None, heads=None) -> int:
    """Bytes to hold the values of those parameters (a copy of the model: a teacher, a Fisher)."""
    return int(param_count(model, units, heads)) * next(model.parameters()).element_size()


def arm_metrics(mechanism, model) -> dict:
    """What a sequential arm cost and what it left: its metrics file (numbers only, deterministic).
    train_flops covers the later phases only (pretraining is shared by every mechanism)."""
    return {"train_flops": mechanism.flops, "extra_memory_bytes": mechanism.extra_memory_bytes(),
            "inference_flops_per_token": forward_flops(model), "params_active": param_count(model),
            **mechanism.metrics()}
