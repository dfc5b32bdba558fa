"""A reservoir buffer of training sequences, optionally with the model's top-k logits at insertion time
(the replay memory of ER, DER++ and LoRD)."""
from __future__ import annotations

import torch


OFFER_BATCH = 32  # sequences per forward pass when storing logits


class ReservoirBuffer:
    """Keeps a uniform sample of every sequence ever offered (reservoir sampling, Vitter's algorithm R):
    the i-th offered sequence (counting from 1) takes a random slot with probability size / i.

    A sequence is a window of block_size + 1 tokens (input and next-token targets). With `logit_topk` > 0
    each slot also holds, for every position, the k largest logits of the model that inserted it and their
    token ids, computed when it enters the buffer (DER++'s "dark knowledge").
    """

    def __init__(self, size: int, logit_topk: int = 0):
        self.size, self.logit_topk = size, logit_topk
        self.seen = 0  # sequences offered so far
        self.windows: torch.Tensor | None = None   # (size, block + 1) int32 token ids
        self.values: torch.Tensor | None = None    # (size, block, k) float32 logits
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
        """Offer sequences (n, block + 1); with `logit_topk`, `model` gives the logits stored with each one.
        Returns how many sequences' logits were computed (those that entered)."""
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
            was_training = model.training
            model.eval()
            # In batches: the logits of all entering sequences at once would take sequences x block x vocab
            # floats (1 GB for the default LoRD arm, ~8 GB at the GPU presets' 1024-token context).
            values, indices = map(torch.cat, zip(*(model(r[:, :-1])[0].float().topk(self.logit_topk, dim=-1)
                                                   for r in rows.split(OFFER_BATCH))))
            model.train(was_training)
            if self.values is None:
                self.values = torch.zeros(self.size, *values.shape[1:], device=windows.device)
                self.indices = torch.zeros(self.size, *indices.shape[1:], dtype=torch.int32, device=windows.device)
            self.values[slots], self.indices[slots] = values, indices.int()
        return len(final)

    def sample(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n stored sequences drawn without replacement (all of them if fewer): inputs, targets, slots."""
        slots = torch.randperm(len(self), generator=rng)[:n].to(self.windows.device)
        w = self.windows[slots].long()
        return w[:, :-1], w[:, 1:], slots

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.windows, self.values, self.indices) if t is not None)

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
