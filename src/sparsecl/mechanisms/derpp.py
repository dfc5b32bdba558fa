"""`derpp`: Dark Experience Replay++ (Buzzega et al. 2020; Mammoth models/derpp.py, for a language model).

The ER buffer also stores, for every position of a sequence, the next-token distribution of the model that
inserted it, coarsened to k + 1 outcomes: its `logit_topk` most likely tokens and the rest together
(`buffer.coarse_log_probs`; the full 4096-way logits would not fit a buffer). Each step adds `alpha` *
MSE(the current model's log-probabilities of the same k + 1 outcomes, stored ones) on one draw from the
buffer, DER's logit matching with the coarsened distribution's log-probabilities as its logits, and `beta` *
next-token loss on a second, independent draw.
"""
from __future__ import annotations

import torch.nn.functional as F

from sparsecl.checks import number
from sparsecl.mechanisms.buffer import coarse_log_probs
from sparsecl.mechanisms.er import REPLAY_SCHEMA, ReplayBase

DERPP_SCHEMA = {**REPLAY_SCHEMA, "alpha": number(0), "beta": number(0), "logit_topk": number(1, integer=True)}


class DarkExperienceReplay(ReplayBase):
    SCHEMA = DERPP_SCHEMA

    def loss(self, model, x, y):
        return self.next_token_loss(model, x, y) + self.replay_loss(model)

    def replay_loss(self, model):
        s = self.settings
        bx, _, slots = self.buffer.sample(s["replay_batch"], self.rng)
        logits = self.lm_loss(model, bx, None, replay=True)[0]
        now = coarse_log_probs(logits, self.buffer.indices[slots].long())
        loss = s["alpha"] * F.mse_loss(now, self.buffer.values[slots])
        bx, by, _ = self.buffer.sample(s["replay_batch"], self.rng)
        return loss + s["beta"] * self.next_token_loss(model, bx, by, replay=True)
