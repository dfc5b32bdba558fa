"""`postprune`: post-pruning, the after-the-fact counterpart of a fixed
sparse topology ("pre-pruning"): train dense, prune, fine-tune.

The pretrained model is pruned first (at `end_phase(0)`, before phase 1; no fine-tune, as pretraining is
shared by every mechanism): every sparsified matrix is pruned by magnitude to exactly
round(rho * n_out * n_in) weights per logical matrix (q, k, v separately, as the topologies count). The
sequential stage saves that model as the arm's phase-0 checkpoint, so the loss matrix starts from it and
forgetting excludes the damage of pruning (`evaluate` also scores the unpruned pretrained model, and the
report gives the difference as the pruning damage).

Each phase then trains every weight the topology keeps (pruned ones included: they regrow). Once all but
`finetune_fraction` of the phase's steps are done, the model is pruned again the same way, and the rest of
the phase fine-tunes it with the pruned weights held at 0. Every checkpoint of the loss matrix therefore
has density rho. FLOPs count what is multiplied: the topology's weights in the dense part of a phase, the
kept ones in the fine-tune.

On a topology that keeps no more than rho of any matrix there is nothing to prune and the arm would be
`none`; the params check refuses it, naming the key, before any stage runs.
"""
from __future__ import annotations

import torch

from sparsecl.checks import number
from sparsecl.mechanisms.base import Mechanism
from sparsecl.mechanisms.common import FrozenEntries
from sparsecl.cost import forward_flops


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
    modifies_pretrained = True

    def __init__(self, settings: dict, seed: int = 0):
        super().__init__(settings, seed)
        self.frozen: FrozenEntries | None = None  # the pruned weights, once this phase has pruned
        self.density = 1.0

    def begin_phase(self, phase, domain, model) -> None:
        # Dense training multiplies every weight the topology keeps, the ones pruned to 0 included.
        self.train_flops_per_token = 3 * forward_flops(model, structural=True)
        self.frozen = None

    def end_phase(self, phase, domain, model, train_tokens) -> None:
        if phase == 0:  # the pretrained model: pruned before phase 1 trains it (`rho` = 1 changes nothing)
            self.prune(model, freeze=False)  # phase 1 then trains every weight the topology keeps

    def before_step(self, model) -> None:
        if self.frozen is not None:
            self.frozen.zero_grads(model)

    def after_step(self, model, step, steps) -> None:
        if self.frozen is not None:
            self.frozen.restore(model)
        elif step == max(1, steps - round(self.settings["finetune_fraction"] * steps)):
            self.prune(model)

    @torch.no_grad()
    def prune(self, model, freeze: bool = True) -> None:
        """Prune to rho; with `freeze`, hold the pruned weights at 0 for the rest of the phase (the fine-tune)."""
        masks = magnitude_masks(model, self.settings["rho"])
        params = dict(model.named_parameters())
        for name, keep in masks.items():
            params[name].mul_(keep)
        if freeze:
            self.frozen = FrozenEntries(model, masks)
            self.train_flops_per_token = 3 * forward_flops(model)  # the fine-tune multiplies the kept weights
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
