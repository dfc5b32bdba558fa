"""The interface every continual-learning mechanism implements (SPEC section 7)."""
from __future__ import annotations

import torch


class Mechanism:
    """A mechanism sees the model at phase boundaries and decides the loss of each training batch.

    The base class is plain sequential training: next-token cross-entropy on the current domain only.
    Subclasses override what they need; `state_dict` must hold everything needed to resume mid-run.
    """

    SCHEMA: dict = {}  # settings under params.mechanism.<name>, checked before any work

    def __init__(self, settings: dict):
        self.settings = settings

    def begin_phase(self, phase: int, domain: str, model: torch.nn.Module) -> None:
        """Called before training on `domain` (phase 1 is the first domain after pretraining)."""

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss to minimise on one batch of the current domain."""
        return model(x, y)[1]

    def end_phase(self, phase: int, domain: str, model: torch.nn.Module, train_tokens) -> None:
        """Called after training on `domain`, with that domain's train tokens (e.g. to estimate a Fisher)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
