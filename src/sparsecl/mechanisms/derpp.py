"""`derpp`: Dark Experience Replay++ (Buzzega et al. 2020; Mammoth models/derpp.py, for a language model).

The ER buffer also stores, for every position of a sequence, the top `logit_topk` logits of the model that
inserted it (the full 4096-way fp32 logits would take 128x the bytes of 16 values with int32 ids). Each step adds
`alpha` * MSE(current logits at the stored token ids, stored logits) on one draw from the buffer and
`beta` * next-token loss on a second, independent draw.
"""
from __future__ import annotations

import torch.nn.functional as F

from sparsecl.checks import number
from sparsecl.mechanisms.er import REPLAY_SCHEMA, ExperienceReplay

DERPP_SCHEMA = {**REPLAY_SCHEMA, "alpha": number(0), "beta": number(0), "logit_topk": number(1, integer=True)}


class DarkExperienceReplay(ExperienceReplay):
    SCHEMA = DERPP_SCHEMA

    def replay_loss(self, model):
        s = self.settings
        bx, _, slots = self.buffer.sample(s["replay_batch"], self.rng)
        logits = self.lm_loss(model, bx, None, replay=True)[0]
        stored = self.buffer.values[slots]
        matched = logits.float().gather(-1, self.buffer.indices[slots].long())
        loss = s["alpha"] * F.mse_loss(matched, stored)
        bx, by, _ = self.buffer.sample(s["replay_batch"], self.rng)
        return loss + s["beta"] * self.next_token_loss(model, bx, by, replay=True)
