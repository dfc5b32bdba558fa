"""`er`: experience replay (Mammoth models/er.py, for a language model).

A reservoir buffer holds sequences of past domains; every step adds `weight` times the next-token loss on
`replay_batch` sequences drawn from it. Sequences enter at the end of each phase (the pretraining phase
included): `buffer_size` fixed windows of the finished domain are offered to the reservoir, so every domain
is offered equally and the buffer stays a uniform sample of all of them.
"""
from __future__ import annotations

from sparsecl.checks import number
from sparsecl.mechanisms.base import Mechanism
from sparsecl.mechanisms.buffer import ReservoirBuffer
from sparsecl.mechanisms.common import probe_windows
from sparsecl.mechanisms.cost import forward_flops

REPLAY_SCHEMA = {"buffer_size": number(1, integer=True), "replay_batch": number(1, integer=True)}


class ExperienceReplay(Mechanism):
    SCHEMA = {**REPLAY_SCHEMA, "weight": number(0)}

    def __init__(self, settings: dict, seed: int = 0):
        super().__init__(settings, seed)
        # DER++ (and LoRD) also store each sequence's top `logit_topk` logits.
        self.buffer = ReservoirBuffer(settings["buffer_size"], settings.get("logit_topk", 0))

    def begin_phase(self, phase, domain, model) -> None:
        super().begin_phase(phase, domain, model)
        self.buffer.to(next(model.parameters()).device)

    def end_phase(self, phase, domain, model, train_tokens) -> None:
        candidates = probe_windows(train_tokens, self.settings["buffer_size"] * model.cfg.block_size, model)
        self.insert(model, candidates)

    def insert(self, model, windows) -> None:
        entered = self.buffer.offer(windows, self.rng, model)
        if self.buffer.logit_topk:  # the stored logits cost a forward pass of the sequences that entered
            self.flops += forward_flops(model) * entered * model.cfg.block_size

    def loss(self, model, x, y):
        return self.next_token_loss(model, x, y) + self.replay_loss(model)

    def replay_loss(self, model):
        bx, by, _ = self.buffer.sample(self.settings["replay_batch"], self.rng)
        return self.settings["weight"] * self.next_token_loss(model, bx, by, replay=True)

    def extra_memory_bytes(self) -> int:
        return self.buffer.nbytes()

    def metrics(self) -> dict:
        return {"buffer_sequences": len(self.buffer), "buffer_offered": self.buffer.seen}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])
