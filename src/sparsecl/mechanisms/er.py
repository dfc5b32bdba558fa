"""`er`: experience replay (Mammoth models/er.py, for a language model).

A reservoir buffer holds sequences of past domains; every step trains on the current batch and
`replay_batch` sequences drawn from it as one batch: the loss is the mean next-token loss over the tokens of
both, a replayed token counting `weight` times a current one (1: Mammoth's single concatenated batch; 0:
no replay). Sequences enter at the end of each phase (the pretraining phase included): `buffer_size` fixed
windows of the finished domain are offered to the reservoir, so every domain is offered equally and the
buffer stays a uniform sample of all of them.
"""
from __future__ import annotations

import torch

from sparsecl.checks import number
from sparsecl.mechanisms.base import Mechanism
from sparsecl.mechanisms.buffer import ReservoirBuffer
from sparsecl.mechanisms.common import probe_windows
from sparsecl.cost import forward_flops

REPLAY_SCHEMA = {"buffer_size": number(1, integer=True), "replay_batch": number(1, integer=True)}


class ReplayBase(Mechanism):
    """The buffer and its upkeep, shared by ER, DER++ and LoRD; subclasses say how replay enters the loss."""
    sparse_kernel_ok = True  # the buffer holds tokens (and DER++ targets), never weights

    def __init__(self, settings: dict, seed: int = 0):
        super().__init__(settings, seed)
        # DER++ (and LoRD) also store each sequence's distribution over its `logit_topk` likeliest tokens.
        self.buffer = ReservoirBuffer(settings["buffer_size"], settings.get("logit_topk", 0))
        self.visits: dict[str, int] = {}  # finished phases per domain: a revisit offers other windows

    def begin_phase(self, phase, domain, model) -> None:
        super().begin_phase(phase, domain, model)
        self.buffer.to(next(model.parameters()).device)

    def end_phase(self, phase, domain, model, train_tokens) -> None:
        self.insert(model, self.candidates(domain, self.settings["buffer_size"], model, train_tokens))

    def candidates(self, domain: str, n: int, model, train_tokens) -> torch.Tensor:
        """`n` fixed windows of the finished domain, evenly spread; at its v-th revisit every window starts
        v * (block_size + 1) tokens later, so a domain met again offers windows the buffer does not hold yet
        (Mammoth's reservoir sees a revisit's new batches)."""
        visit = self.visits.get(domain, 0)
        self.visits[domain] = visit + 1
        return probe_windows(train_tokens, n * model.cfg.block_size, model, visit * (model.cfg.block_size + 1))

    def insert(self, model, windows) -> None:
        entered = self.buffer.offer(windows, self.rng, model)
        if self.buffer.logit_topk:  # the stored logits cost a forward pass of the sequences that entered
            self.flops += forward_flops(model) * entered * model.cfg.block_size

    def extra_memory_bytes(self) -> int:
        return self.buffer.nbytes()

    def metrics(self) -> dict:
        return {"buffer_sequences": len(self.buffer), "buffer_offered": self.buffer.seen}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "buffer": self.buffer.state_dict(), "visits": dict(self.visits)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])
        self.visits = dict(state["visits"])


class ExperienceReplay(ReplayBase):
    SCHEMA = {**REPLAY_SCHEMA, "weight": number(0)}

    def loss(self, model, x, y):
        bx, by, _ = self.buffer.sample(self.settings["replay_batch"], self.rng)
        # The mean over the concatenated batch, from the two batches' means: the current batch's share is
        # its tokens over all tokens (the whole batch's under data parallelism), exactly 1 at weight 0.
        current, replayed = self.batch_tokens(x), self.settings["weight"] * by.numel()
        share = current / (current + replayed)
        return (share * self.next_token_loss(model, x, y)
                + (1 - share) * self.next_token_loss(model, bx, by, replay=True))
