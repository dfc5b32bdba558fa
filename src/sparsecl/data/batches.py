"""Training batches and fixed evaluation windows from flat token arrays."""
from __future__ import annotations

import numpy as np
import torch


def batch_rng(seed: int, phase: int, step: int) -> np.random.Generator:
    """The batch drawn at (seed, phase, step) depends on nothing else, so a resumed run draws the same data."""
    return np.random.default_rng([seed, phase, step])


def sample_batch(tokens: np.ndarray, batch_size: int, block_size: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random contiguous windows; a domain shorter than the budget is simply cycled through again."""
    if len(tokens) <= block_size + 1:
        raise ValueError(f"a train split has {len(tokens)} tokens, fewer than model.block_size+2={block_size + 2}")
    starts = rng.integers(0, len(tokens) - block_size - 1, size=batch_size)
    windows = np.stack([tokens[s: s + block_size + 1] for s in starts]).astype(np.int64)
    w = torch.from_numpy(windows)
    return w[:, :-1], w[:, 1:]


def eval_windows(tokens: np.ndarray, eval_tokens: int, block_size: int) -> torch.Tensor:
    """`eval_tokens // block_size` windows of block_size+1 tokens, evenly spread over the val split.

    They depend only on the array and the two sizes, so every model is scored on the same tokens."""
    n = max(1, eval_tokens // block_size)
    if len(tokens) < block_size + 1:
        raise ValueError(f"a val split has {len(tokens)} tokens, fewer than model.block_size+1={block_size + 1}")
    starts = np.linspace(0, len(tokens) - block_size - 1, n).astype(np.int64)
    return torch.from_numpy(np.stack([tokens[s: s + block_size + 1] for s in starts]).astype(np.int64))
