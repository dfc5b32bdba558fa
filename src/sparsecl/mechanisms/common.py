"""Pieces several mechanisms share: a frozen teacher snapshot, fixed probe windows of a domain, and
parameter entries held fixed through optimizer steps (or held out of the model)."""
from __future__ import annotations

import copy

import numpy as np
import torch

from sparsecl.data.batches import eval_windows
from sparsecl.model import GPT, GPTConfig


def snapshot(model: GPT) -> GPT:
    """A frozen copy of `model` (a teacher): eval mode, no gradients."""
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    return teacher


def snapshot_state(teacher: GPT) -> dict:
    return {"config": teacher.cfg.to_dict(), "model": teacher.state_dict()}


def restore_snapshot(state: dict) -> GPT:
    sd = state["model"]
    masks = {k[: -len(".mask")]: v.bool() for k, v in sd.items() if k.endswith(".mask")}
    with torch.random.fork_rng(devices=[]):  # building the model must not move the training RNG
        teacher = GPT(GPTConfig(**state["config"]), masks=masks)
    teacher.load_state_dict(sd)
    return snapshot(teacher.to(next(iter(sd.values())).device))


def probe_windows(tokens: np.ndarray, n_tokens: int, model: GPT, offset: int = 0) -> torch.Tensor:
    """Fixed windows (block_size + 1 tokens) evenly spread over a train split: the sample a mechanism
    measures a finished domain on (Fisher, activation frequencies, buffer candidates). No randomness;
    `offset` moves every window on (`eval_windows`)."""
    device = next(model.parameters()).device
    return eval_windows(tokens, n_tokens, model.cfg.block_size, offset).to(device)


class FrozenEntries:
    """Entries of parameters held at fixed values: their gradients are zeroed before the optimizer step (so
    clipping and the optimizer see only trainable entries) and their values restored after it (undoing
    weight decay and the stale Adam moments of entries frozen mid-phase).

    `trainable` maps parameter names to boolean tensors of the parameter's shape; entries where it is False
    keep the values they have when this object is made.
    """

    def __init__(self, model: torch.nn.Module, trainable: dict[str, torch.Tensor]):
        params = dict(model.named_parameters())
        self.trainable = trainable
        self.values = {n: params[n].detach()[~m].clone() for n, m in trainable.items()}
        self._bound: tuple[torch.nn.Module, list] | None = None

    def _entries(self, model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(parameter, trainable mask, frozen values at full size) of every parameter with a frozen entry,
        worked out once per model: the per-step calls then index nothing (a boolean index syncs a GPU)."""
        if self._bound is None or self._bound[0] is not model:
            params = dict(model.named_parameters())
            entries = [(params[n], m, torch.zeros_like(params[n]).masked_scatter_(~m, self.values[n]))
                       for n, m in self.trainable.items() if not bool(m.all())]
            self._bound = (model, entries)
        return self._bound[1]

    def zero_grads(self, model: torch.nn.Module) -> None:
        for p, m, _ in self._entries(model):
            if p.grad is not None:
                p.grad.mul_(m)

    @torch.no_grad()
    def restore(self, model: torch.nn.Module) -> None:
        for p, m, frozen in self._entries(model):
            p.copy_(torch.where(m, p, frozen))

    @torch.no_grad()
    def remove(self, model: torch.nn.Module) -> None:
        """Set the held entries to 0 in the model (their values stay here, for `restore`)."""
        for p, m, _ in self._entries(model):
            p.mul_(m)

    def nbytes(self) -> int:
        """Bytes of the held values that are not 0 (masked entries need no storage)."""
        return sum(int(torch.count_nonzero(v)) * v.element_size() for v in self.values.values())

    def state_dict(self) -> dict:
        return {"trainable": self.trainable, "values": self.values}

    @classmethod
    def from_state(cls, state: dict) -> "FrozenEntries":
        obj = cls.__new__(cls)
        obj.trainable, obj.values, obj._bound = state["trainable"], state["values"], None
        return obj
