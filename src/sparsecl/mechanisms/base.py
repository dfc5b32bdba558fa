"""The interface every continual-learning mechanism implements (one module per mechanism, found by name)."""
from __future__ import annotations

import torch

from sparsecl.cost import forward_flops


class Mechanism:
    """A mechanism sees the model at phase boundaries and around every optimizer step, and decides the loss
    of each training batch.

    The sequential stage calls `end_phase(0, A, model, tokens of A)` once on the pretrained model (what a
    mechanism keeps of the pretraining domain: a Fisher, a teacher, buffer entries), then for each phase
    k >= 1: `begin_phase`, per step `loss` (per micro-batch), `before_step`, `after_step`, and `end_phase`.

    The base class is plain sequential training: next-token cross-entropy on the current domain only.
    Subclasses override what they need and count what they compute in `flops` (training FLOPs: forward and
    backward of every batch, teacher forwards, replay, Fisher passes). `state_dict` holds everything needed
    to resume mid-run, random generator included, so a resumed run equals an uninterrupted one.
    """

    SCHEMA: dict = {}  # settings under params.mechanism.<name>, checked before any work
    # Processes the current batch is split over (DDP; set by the training loop). Every rank counts the
    # FLOPs of the whole current batch, so the arm's count is one process's whatever the number of
    # processes; replay batches and phase-boundary work run whole on every rank and count as they are.
    batch_shards = 1
    # Whether `end_phase(0)` changes the pretrained model (postprune prunes it): the sequential stage then
    # saves that model as the arm's phase-0 checkpoint, which `evaluate` scores in place of the pretrained one.
    modifies_pretrained = False
    # Whether every hook only calls the model, so a phase may train with the sparse kernel (train.kernel),
    # whose matrices hold their kept values only: a mechanism that reads or writes weights by name and shape
    # (a penalty, a snapshot, frozen entries) must leave it False, and False is the safe default.
    sparse_kernel_ok = False

    def __init__(self, settings: dict, seed: int = 0):
        self.settings = settings
        self.rng = torch.Generator().manual_seed(seed)  # every random choice of the mechanism
        self.flops = 0.0
        self.train_flops_per_token = 0.0  # forward + backward of the trained model, set by begin_phase

    def begin_phase(self, phase: int, domain: str, model: torch.nn.Module) -> None:
        """Called before training on `domain` (phase 1 is the first domain after pretraining)."""
        self.train_flops_per_token = 3 * forward_flops(model)

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss to minimise on one batch of the current domain."""
        return self.next_token_loss(model, x, y)

    def lm_loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, replay: bool = False, **kwargs):
        """(logits, next-token loss) of a batch that will be backpropagated, the current batch or (`replay`)
        one from a buffer; counts its FLOPs."""
        self.flops += self.train_flops_per_token * (x.numel() if replay else self.batch_tokens(x))
        return model(x, y, **kwargs)

    def next_token_loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                        replay: bool = False) -> torch.Tensor:
        """`lm_loss` without the logits (cheaper on CPU: see GPT.forward)."""
        return self.lm_loss(model, x, y, replay, return_logits=False)[1]

    def batch_tokens(self, x: torch.Tensor) -> int:
        """Tokens of the whole current batch, of which `x` is this process's slice."""
        return x.numel() * self.batch_shards

    def before_step(self, model: torch.nn.Module) -> None:
        """After the backward pass, before clipping and the optimizer step (e.g. zero frozen gradients)."""

    def after_step(self, model: torch.nn.Module, step: int, steps: int) -> None:
        """After optimizer step `step` (1-based) of the phase's `steps` (e.g. keep pruned weights at 0)."""

    def end_phase(self, phase: int, domain: str, model: torch.nn.Module, train_tokens) -> None:
        """Called after training on `domain`, with that domain's train tokens (e.g. to estimate a Fisher)."""

    def extra_memory_bytes(self) -> int:
        """What the mechanism holds besides the model (buffer, teacher, Fisher), in bytes."""
        return 0

    def metrics(self) -> dict:
        """Mechanism-specific figures for the arm's metrics file (numbers only)."""
        return {}

    def state_dict(self) -> dict:
        return {"flops": self.flops, "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.flops = state["flops"]
        self.rng.set_state(state["rng"].cpu())  # a checkpoint loaded onto a GPU moved it there
