"""A reservoir buffer of training sequences, optionally with the model's output distribution at insertion
time (the replay memory of ER, DER++ and LoRD)."""
from __future__ import annotations

import torch


OFFER_BATCH = 32  # sequences per forward pass when storing logits


def coarse_log_probs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The next-token distribution softmax(logits) coarsened to k + 1 outcomes: each of the k tokens `ids`
    (..., k), and all the other tokens together. Returns their log-probabilities (..., k + 1), whose exps
    sum to 1. The rest is a log-sum-exp over the other logits, not log(1 - sum of the k probabilities),
    which loses a rest mass under about 1e-7 to rounding."""
    logits = logits.float()
    lse = logits.logsumexp(-1, keepdim=True)
    rest = logits.scatter(-1, ids, float("-inf")).logsumexp(-1, keepdim=True)
    return torch.cat([logits.gather(-1, ids), rest], -1) - lse


class ReservoirBuffer:
    """Keeps a uniform sample of every sequence ever offered (reservoir sampling, Vitter's algorithm R):
    the i-th offered sequence (counting from 1) takes a random slot with probability size / i.

    A sequence is a window of block_size + 1 tokens (input and next-token targets). With `logit_topk` k > 0
    each slot also holds, for every position, the distribution of the model that inserted it (DER++'s "dark
    knowledge"), computed when it enters the buffer: the ids of its k most likely tokens and the
    log-probabilities of those k tokens and of the rest (`coarse_log_probs`). The full 4096-way fp32 logits
    of the default 500 windows would take 1 GiB; this takes (2k + 1) x 4 bytes per position (8.4 MB at k 16).
    """

    def __init__(self, size: int, logit_topk: int = 0):
        self.size, self.logit_topk = size, logit_topk
        self.seen = 0  # sequences offered so far
        self.windows: torch.Tensor | None = None   # (size, block + 1) int32 token ids
        self.values: torch.Tensor | None = None    # (size, block, k + 1) float32 log-probabilities
        self.indices: torch.Tensor | None = None   # (size, block, k) int32 token ids

    def __len__(self) -> int:
        return min(self.seen, self.size)

    def slots_for(self, n: int, rng: torch.Generator) -> list[tuple[int, int]]:
        """Reservoir decisions for the next n offered sequences: (offered index, slot) for those that enter,
        in order (a later one may overwrite an earlier one's slot)."""
        rank = self.seen + torch.arange(1, n + 1, dtype=torch.float64)  # 1-based position in the stream
        slot = (torch.rand(n, generator=rng, dtype=torch.float64) * rank).long()
        slot = torch.where(rank <= self.size, rank.long() - 1, slot)  # fill an empty buffer in order
        self.seen += n
        return [(i, int(s)) for i, s in enumerate(slot.tolist()) if s < self.size]

    @torch.no_grad()
    def offer(self, windows: torch.Tensor, rng: torch.Generator, model=None) -> int:
        """Offer sequences (n, block + 1); with `logit_topk`, `model` gives the distribution stored with each
        one. Returns how many sequences' logits were computed (those that entered)."""
        chosen = self.slots_for(len(windows), rng)
        if not chosen:
            return 0
        if self.windows is None:
            self.windows = torch.zeros(self.size, windows.shape[1], dtype=torch.int32, device=windows.device)
        # The last sequence offered for a slot is the one that stays.
        final = {slot: i for i, slot in chosen}
        slots = torch.tensor(list(final), device=windows.device)
        rows = windows[torch.tensor(list(final.values()), device=windows.device)]
        self.windows[slots] = rows.int()
        if self.logit_topk:
            if self.logit_topk >= model.cfg.vocab_size:
                raise ValueError(f"logit_topk {self.logit_topk} leaves no rest of the {model.cfg.vocab_size}-token "
                                 f"vocabulary; allowed < tokenizer.vocab_size")
            was_training = model.training
            model.eval()
            # In batches: the logits of all entering sequences at once would take sequences x block x vocab
            # floats (1 GB for the default LoRD arm, ~8 GB at the GPU presets' 1024-token context).
            values, indices = [], []
            for r in rows.split(OFFER_BATCH):
                logits = model(r[:, :-1])[0]
                ids = logits.topk(self.logit_topk, dim=-1).indices
                values.append(coarse_log_probs(logits, ids))
                indices.append(ids.int())
            values, indices = torch.cat(values), torch.cat(indices)
            model.train(was_training)
            if self.values is None:
                self.values = torch.zeros(self.size, *values.shape[1:], device=windows.device)
                self.indices = torch.zeros(self.size, *indices.shape[1:], dtype=torch.int32, device=windows.device)
            self.values[slots], self.indices[slots] = values, indices
        return len(final)

    def sample(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n stored sequences drawn without replacement (all of them if fewer): inputs, targets, slots."""
        slots = torch.randperm(len(self), generator=rng)[:n].to(self.windows.device)
        w = self.windows[slots].long()
        return w[:, :-1], w[:, 1:], slots

    def nbytes(self) -> int:
        """Bytes of the sequences held (and their stored distributions): the filled slots."""
        return sum(t[: len(self)].numel() * t.element_size() for t in (self.windows, self.values, self.indices)
                   if t is not None)

    def to(self, device) -> "ReservoirBuffer":
        for name in ("windows", "values", "indices"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self

    def state_dict(self) -> dict:
        return {"seen": self.seen, "windows": self.windows, "values": self.values, "indices": self.indices}

    def load_state_dict(self, state: dict) -> None:
        self.seen, self.windows, self.values, self.indices = (state[k] for k in ("seen", "windows", "values",
                                                                                  "indices"))
