"""Training batches and fixed evaluation windows from flat token arrays."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Mixture:
    """Several domains' train arrays trained on at once (the joint reference): each window of a batch comes
    from domain i with probability weights[i] / sum(weights)."""
    arrays: tuple[np.ndarray, ...]
    weights: tuple[float, ...]


def batch_rng(seed: int, phase: int, step: int) -> np.random.Generator:
    """The batch drawn at (seed, phase, step) depends on nothing else, so a resumed run draws the same data."""
    return np.random.default_rng([seed, phase, step])


def sample_batch(tokens: np.ndarray | Mixture, batch_size: int, block_size: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random contiguous windows; a domain shorter than the budget is simply cycled through again."""
    if isinstance(tokens, Mixture):
        p = np.asarray(tokens.weights, dtype=float)
        sources = [tokens.arrays[i] for i in rng.choice(len(p), size=batch_size, p=p / p.sum())]
    else:
        sources = [tokens] * batch_size
    lengths = np.array([len(t) for t in sources])
    if lengths.min() <= block_size + 1:
        raise ValueError(f"a train split has {lengths.min()} tokens, fewer than model.block_size+2={block_size + 2}")
    starts = rng.integers(0, lengths - block_size - 1)  # one draw per window, vectorized (the training step)
    windows = np.stack([t[s: s + block_size + 1] for t, s in zip(sources, starts)]).astype(np.int64)
    w = torch.from_numpy(windows)
    return w[:, :-1], w[:, 1:]


def eval_windows(tokens: np.ndarray, eval_tokens: int, block_size: int, offset: int = 0) -> torch.Tensor:
    """`eval_tokens // block_size` windows of block_size+1 tokens, evenly spread over the val split.

    They depend only on the array and the two sizes, so every model is scored on the same tokens. `offset`
    moves every start that many tokens on (wrapping past the last possible start): another set of windows
    spread the same way."""
    starts = _eval_starts(tokens, eval_tokens, block_size)
    return _windows(tokens, (starts + offset) % (len(tokens) - block_size), block_size)


def selection_windows(tokens: np.ndarray, eval_tokens: int, block_size: int) -> torch.Tensor:
    """The windows the learning rate is chosen on: midway between consecutive evaluation windows, so on a
    val split longer than (windows x 2 x (block_size + 1)) tokens they share no token with the windows the
    comparison is scored on. A split with one evaluation window gives that window."""
    starts = _eval_starts(tokens, eval_tokens, block_size)
    mid = (starts[:-1] + starts[1:]) // 2 if len(starts) > 1 else starts
    return _windows(tokens, mid, block_size)


def _eval_starts(tokens: np.ndarray, eval_tokens: int, block_size: int) -> np.ndarray:
    n = max(1, eval_tokens // block_size)
    if len(tokens) < block_size + 1:
        raise ValueError(f"a val split has {len(tokens)} tokens, fewer than model.block_size+1={block_size + 1}")
    return np.linspace(0, len(tokens) - block_size - 1, n).astype(np.int64)


def _windows(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([tokens[s: s + block_size + 1] for s in starts]).astype(np.int64))
