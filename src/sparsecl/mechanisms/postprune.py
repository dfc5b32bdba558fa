"""`postprune`: post-pruning (seed 004's pruning framework), the after-the-fact counterpart of a fixed
sparse topology ("pre-pruning"): train dense, prune, fine-tune.

Each phase trains every weight (a topology's masked ones excepted). Once all but `finetune_fraction` of
the phase's steps are done, every sparsified matrix is pruned by magnitude to exactly
round(rho * n_out * n_in) weights per logical matrix (q, k, v separately, as the topologies count), and
the rest of the phase fine-tunes the pruned model with the pruned weights held at 0. Every phase's
checkpoint therefore has density rho; the next phase starts from it, trains densely again (pruned weights
may regrow) and is pruned again at its end.
"""
from __future__ import annotations

import torch

from sparsecl.checks import number
from sparsecl.mechanisms.base import Mechanism
from sparsecl.mechanisms.common import FrozenEntries
from sparsecl.mechanisms.cost import forward_flops


@torch.no_grad()
def magnitude_masks(model, rho: float) -> dict[str, torch.Tensor]:
    """Per sparsified matrix, the round(rho * n_out * n_in) largest-magnitude weights of every logical
    block (fewer if its topology keeps fewer)."""
    masks = {}
    for name, layer in model.masked_layers().items():
        weight = layer.effective_weight
        n_out, n_in = layer.block_shape
        blocks = weight.abs().reshape(layer.blocks, n_out * n_in)
        active = (blocks != 0).sum(1)
        keep = torch.zeros_like(blocks, dtype=torch.bool)
        for b in range(layer.blocks):
            k = min(round(rho * n_out * n_in), int(active[b]))
            keep[b, blocks[b].topk(k).indices] = True
        masks[f"{name}.weight"] = keep.view_as(weight)
    return masks


class PostPrune(Mechanism):
    SCHEMA = {"rho": number(0, 1, lo_open=True), "finetune_fraction": number(0, 1)}

    def __init__(self, settings: dict, seed: int = 0):
        super().__init__(settings, seed)
        self.frozen: FrozenEntries | None = None  # the pruned weights, once this phase has pruned
        self.density = 1.0

    def begin_phase(self, phase, domain, model) -> None:
        super().begin_phase(phase, domain, model)
        self.frozen = None

    def before_step(self, model) -> None:
        if self.frozen is not None:
            self.frozen.zero_grads(model)

    def after_step(self, model, step, steps) -> None:
        if self.frozen is not None:
            self.frozen.restore(model)
        elif step == max(1, steps - round(self.settings["finetune_fraction"] * steps)):
            self.prune(model)

    @torch.no_grad()
    def prune(self, model) -> None:
        masks = magnitude_masks(model, self.settings["rho"])
        params = dict(model.named_parameters())
        for name, keep in masks.items():
            params[name].mul_(keep)
        self.frozen = FrozenEntries(model, masks)
        self.train_flops_per_token = 3 * forward_flops(model)  # the fine-tune trains the pruned model
        self.density = float(sum(m.sum() for m in masks.values()) / sum(m.numel() for m in masks.values()))

    def metrics(self) -> dict:
        return {"sparsified_density": self.density}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "frozen": None if self.frozen is None else self.frozen.state_dict(),
                "density": self.density, "train_flops_per_token": self.train_flops_per_token}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.frozen = None if state["frozen"] is None else FrozenEntries.from_state(state["frozen"])
        self.density, self.train_flops_per_token = state["density"], state["train_flops_per_token"]
