"""FLOPs and parameters of a model or of one of its subnetworks, counted from the weights that are not 0
(what a sparse kernel would compute; the CPU implementation multiplies masked dense matrices).

Conventions (nanoGPT / PaLM): a forward pass costs 2 FLOPs per active matmul weight per token, plus
4 * n_embd * block_size per layer for attention scores and values; a backward pass costs twice the forward.
Embedding lookups, LayerNorms and softmax are not counted. With the topk activation only k of the MLP's
units feed its output projection, so that matrix counts k / (4 * n_embd) of its weights.
A subnetwork is given as 0/1 float vectors per layer over MLP units (`units`) and heads (`heads`).
`structural=True` counts the weights the topology lets a layer multiply (its mask's entries, every weight
without one) whether or not they are 0 now: what dense training of a pruned model multiplies (postprune).
"""
from __future__ import annotations

import torch


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
    """Forward FLOPs per token."""
    cfg = model.cfg
    kept_heads = cfg.n_layer * cfg.n_head if heads is None else float(sum(h.sum() for h in heads))
    attention = 4 * (cfg.n_embd // cfg.n_head) * cfg.block_size * kept_heads
    return 2 * matmul_weights(model, units, heads, structural) + attention


def pretrain_flops(model, tokens: int) -> float:
    """Training FLOPs of an arm's pretraining: forward and backward of `tokens` tokens with every weight its
    topology keeps (a pretrained model: its weights that are not 0), counted as the later phases are. Every
    mechanism of a (topology, seed) shares it; a dense model's costs about twice a 5%-dense one's at the
    default shape (the tied embedding and attention scores are dense in both)."""
    return 3 * forward_flops(model, structural=True) * tokens


def param_count(model, units=None, heads=None) -> float:
    """Parameters of the (sub)network, the tied embedding once, sparsified matrices at their active count."""
    everything = sum(p.numel() for p in model.parameters())
    sparsified = sum(m.weight.numel() for m in model.masked_layers().values())
    return everything - sparsified + block_weights(model, units, heads)


def param_bytes(model, units=None, heads=None) -> int:
    """Bytes to hold the values of those parameters (a copy of the model: a teacher, a Fisher)."""
    return int(param_count(model, units, heads)) * next(model.parameters()).element_size()


def arm_metrics(mechanism, model, pretrain_tokens: int) -> dict:
    """What a sequential arm cost and what it left: its metrics file (numbers only, deterministic).
    train_flops covers the later phases only; pretrain_flops the pretraining every mechanism of the
    (topology, seed) shares."""
    return {"train_flops": mechanism.flops, "pretrain_flops": pretrain_flops(model, pretrain_tokens),
            "extra_memory_bytes": mechanism.extra_memory_bytes(),
            "inference_flops_per_token": forward_flops(model), "params_active": param_count(model),
            **mechanism.metrics()}
