"""Export a trained masked model to sparse matrices for inference: a pruned model at its real cost.

`export_sparse` copies the model and replaces every sparsified matrix whose nonzero share is at most
`max_density` by a `SparseLinear` (model/sparse_linear.py) holding only its nonzeros (CSR arrays); denser ones stay dense, where
sparsity does not pay. The copy is still a `GPT`: its forward, KV cache and `generate` are the masked
model's own code, with the sparse matrices' products computed from their nonzeros. Nonzeros are what a forward pass multiplies: the mask's entries, or a post-pruned dense
model's weights that are not 0. Random masks have no block structure, so a blocked format (BSR) would store
and multiply mostly zeros; it is not used. The exported model is for inference only.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn as nn

from sparsecl import cost
from sparsecl.model.gpt import GPT, MaskedLinear
from sparsecl.model.sparse_linear import SparseLinear, swap

# A nonzero costs more than a dense kernel's weight (an indexed row instead of packed FMAs): on the 2-core CPU
# a model whose matrices are all sparse is as fast as the dense one at 30-40% nonzeros with batch 8 and 50-60%
# with batch 1 (bench/sparse_inference.py --densities 0.2,0.3,0.4,0.5,0.6, widths 128 and 512).
MAX_DENSITY = 0.3


def nonzeros(layer: MaskedLinear) -> int:
    return int((layer.effective_weight != 0).sum())


@torch.no_grad()
def export_sparse(model: GPT, max_density: float = MAX_DENSITY) -> GPT:
    """A copy of `model` (on CPU, eval mode) whose sparse enough matrices are `SparseLinear`."""
    sparse = copy.deepcopy(model).cpu().eval().requires_grad_(False)
    for name, layer in sparse.masked_layers().items():
        if nonzeros(layer) <= max_density * layer.weight.numel():
            swap(sparse, name, SparseLinear(layer, keep=layer.effective_weight != 0))
    return sparse


@torch.inference_mode()  # cheaper than no_grad per op (no version counters): less fixed cost for both forms
def next_token_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Logits (B, vocab) of the token after each context in idx (B, T): `GPT.forward` over the whole
    context into a fresh KV cache (the first step of `GPT.generate`), the LM head at the last position only."""
    return model(idx, cache=model.new_cache())[0][:, -1]


def _stored(model: nn.Module) -> int:
    """Bytes the model holds: dense tensors whole (masks included), SparseLinear matrices as CSR."""
    sparse_own = {id(t) for m in model.modules() if isinstance(m, SparseLinear) for t in m.parameters()}
    tensors = [t for t in list(model.parameters()) + [b for b in model.buffers() if b is not None]
               if id(t) not in sparse_own]  # counted in SparseLinear.nbytes
    return (sum(t.numel() * t.element_size() for t in tensors)
            + sum(m.nbytes for m in model.modules() if isinstance(m, SparseLinear)))


def inference_complexity(model: GPT, sparse: GPT) -> dict:
    """Per-token forward FLOPs (sparsecl.cost.kernel_flops: 2 per weight the form's kernels multiply plus
    attention over a full context), active parameters and stored bytes of three forms of one trained model:
    `dense` (the same architecture with every weight), `masked` (as trained: dense kernels on weight * mask)
    and `sparse` (`export_sparse`). Counts only, so the same model always gives the same figures."""
    dense_flops = cost.kernel_flops(model)
    total = cost.param_counts(model)["params_total"]
    active = int(cost.param_count(model))  # its nonzero weights
    masked_bytes, sparse_bytes = _stored(model), _stored(sparse)
    return {
        "dense": {"flops_per_token": dense_flops, "params_active": total, "stored_bytes": total * model.lm_head.weight.element_size()},
        "masked": {"flops_per_token": dense_flops, "params_active": active, "stored_bytes": masked_bytes},
        "sparse": {"flops_per_token": cost.kernel_flops(sparse), "params_active": active,
                   "stored_bytes": sparse_bytes},
    }


def time_calls(calls: dict[str, callable], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, measured round-robin so that load on a shared machine
    hits every one alike."""
    times = {name: [] for name in calls}
    for fn in calls.values():
        fn()  # warm-up: allocator, MKL's first call
    for _ in range(repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def latency(model: GPT, sparse: GPT, batch: int = 1, repeats: int = 10, seed: int = 0) -> dict:
    """Measured CPU seconds per next-token call (a full context) of the masked and exported forms."""
    idx = torch.randint(0, model.cfg.vocab_size, (batch, model.cfg.block_size),
                        generator=torch.Generator().manual_seed(seed))
    masked = copy.deepcopy(model).cpu().eval()
    sec = time_calls({"masked": lambda: next_token_logits(masked, idx),
                      "sparse": lambda: next_token_logits(sparse, idx)}, repeats)
    return {"batch": batch, "context": model.cfg.block_size, "threads": torch.get_num_threads(),
            "masked_s": sec["masked"], "sparse_s": sec["sparse"], "speedup": sec["masked"] / sec["sparse"]}
