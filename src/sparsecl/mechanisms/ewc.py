"""`ewc`: online Elastic Weight Consolidation (Schwarz et al. 2018; Mammoth models/ewc_on.py, Avalanche
plugins/ewc.py, for a language model).

After each phase (pretraining included), the empirical Fisher of the finished domain is estimated in eval
mode on `fisher_tokens` tokens: one sequence of block_size tokens is one sample, F = mean over sequences of
(d sum-of-token-NLL / d theta)^2 / block_size, i.e. per-token curvature, on the scale of the training loss.
Online update F <- gamma * F + F_new, anchor theta* <- theta. Each step adds
lambda * sum F * (theta - theta*)^2. Masked weights get no gradient, so their Fisher is exactly 0.
"""
from __future__ import annotations

import torch

from sparsecl.checks import number
from sparsecl.mechanisms.base import Mechanism
from sparsecl.mechanisms.common import probe_windows
from sparsecl.cost import forward_flops, param_bytes


class OnlineEWC(Mechanism):
    SCHEMA = {"lambda": number(0), "gamma": number(0, 1), "fisher_tokens": number(1, integer=True)}

    def __init__(self, settings: dict, seed: int = 0):
        super().__init__(settings, seed)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.memory = 0

    def begin_phase(self, phase, domain, model) -> None:
        super().begin_phase(phase, domain, model)
        # Parameters by name from the real model: `loss` may receive a compiled wrapper of it.
        named = dict(model.named_parameters())
        self.terms = [(named[n], self.fisher[n].to(named[n]), self.anchor[n].to(named[n])) for n in self.fisher]
        # ~4 FLOPs per parameter (difference, square, two products) and as many in backward.
        self.penalty_flops = 8 * sum(p.numel() for p, _, _ in self.terms)

    def penalty(self) -> torch.Tensor:
        self.flops += self.penalty_flops
        return sum((f * (p - a) ** 2).sum() for p, f, a in self.terms)

    def loss(self, model, x, y):
        return self.next_token_loss(model, x, y) + self.settings["lambda"] * self.penalty()

    def end_phase(self, phase, domain, model, train_tokens) -> None:
        windows = probe_windows(train_tokens, self.settings["fisher_tokens"], model)
        block = model.cfg.block_size
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        was_training = model.training
        model.eval()
        for w in windows:
            nll = model(w[None, :-1], w[None, 1:], return_logits=False)[1] * block  # the sequence's summed NLL
            for n, g in zip(params, torch.autograd.grad(nll, list(params.values()))):
                fisher[n] += g.square()
        model.train(was_training)
        self.flops += 3 * forward_flops(model) * len(windows) * block
        for n, f in fisher.items():
            f /= len(windows) * block
            self.fisher[n] = f if n not in self.fisher else self.settings["gamma"] * self.fisher[n] + f
            self.anchor[n] = params[n].detach().clone()
        self.memory = 2 * param_bytes(model)  # F and theta*, active entries only

    def extra_memory_bytes(self) -> int:
        return self.memory

    def state_dict(self) -> dict:
        return {**super().state_dict(), "fisher": self.fisher, "anchor": self.anchor, "memory": self.memory}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.fisher, self.anchor, self.memory = state["fisher"], state["anchor"], state["memory"]
