"""A nanoGPT-style causal transformer whose attention and MLP matrices carry a fixed sparse mask.

Sparsified: q, k, v (one mask per logical matrix even though they are fused), attention output,
MLP fc and MLP proj. Dense: embeddings, tied LM head, LayerNorms, biases.
The MLP activation is GELU or SDMLP's Top-K (`topk`: k winners take all by inhibition, as SSD assumes).
`GPT.generate` samples as nanoGPT's does, with a KV cache (`LayerKV`) so each step feeds only the new token.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from sparsecl import cost


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    mlp_activation: str = "gelu"  # gelu | topk (SDMLP's Top-K: `kwta`)
    topk_k: int = 32              # units that fire per token with the topk activation (at most)

    def to_dict(self) -> dict:
        return asdict(self)


class MaskedLinear(nn.Linear):
    """nn.Linear with an optional fixed 0/1 mask.

    The forward pass uses `weight * mask`, so the gradient of a masked entry is exactly 0, and so are its
    Adam moments; decoupled weight decay keeps a zero weight at zero. Masked entries stay 0 forever.
    The mask is a bool buffer (1 byte per entry, not the weight's 4): multiplying by a bool is exact (x * 1
    = x, x * 0 = 0), and at the 1B preset the masks take 0.9 GiB on the device instead of 3.7 GiB.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, blocks: int = 1):
        super().__init__(in_features, out_features, bias=bias)
        self.blocks = blocks  # logical matrices stacked along the output dim (3 for fused q,k,v)
        self.register_buffer("mask", None)

    @property
    def block_shape(self) -> tuple[int, int]:
        return self.out_features // self.blocks, self.in_features

    def set_mask(self, mask: torch.Tensor | None) -> None:
        if mask is not None:
            if tuple(mask.shape) != tuple(self.weight.shape):
                raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(self.weight.shape)}")
            mask = mask.to(dtype=torch.bool, device=self.weight.device)
            with torch.no_grad():
                self.weight.mul_(mask)
        self.mask = mask

    @property
    def density(self) -> float:
        return 1.0 if self.mask is None else int(self.mask.count_nonzero()) / self.mask.numel()

    @property
    def init_gain(self) -> float:
        """sqrt(n_in / mean kept inputs of a row that keeps any): the factor by which this layer's init std
        exceeds a dense layer's, so that each output starts at the dense layer's scale. 1/sqrt(density) for
        a random mask; 1 for the full rows of a narrow layer. The optimizer scales this matrix's lr by it."""
        if self.mask is None:
            return 1.0
        kept = self.mask.sum(1)
        return math.sqrt(self.in_features * float((kept > 0).sum()) / max(float(kept.sum()), 1.0))

    @property
    def effective_weight(self) -> torch.Tensor:
        """The weight the layer multiplies: masked entries are 0."""
        return self.weight if self.mask is None else self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight, self.bias)


def kwta(h: torch.Tensor, k: int) -> torch.Tensor:
    """SDMLP's Top-K activation (k winners take all, by inhibition): ReLU, then every unit of a token less
    the token's (k+1)-th largest ReLU output, through a ReLU again. The k largest fire with their excess over
    that inhibition, the rest are 0 (fewer fire when fewer than k + 1 are positive). The inhibition is a
    constant for the gradient (SDMLP detaches it), so a winner's gradient is its pre-activation's.
    SDMLP's GABA switch (an inhibition that starts excitatory and turns inhibitory per unit over its first
    activations, against dead units in training from scratch) is not reproduced: see docs/MECHANISMS.md."""
    a = F.relu(h)
    inhibition = a.detach().topk(k + 1, dim=-1).values[..., -1:] if k < h.shape[-1] else 0.0
    return F.relu(a - inhibition)


def loss_chunk_rows(vocab_size: int) -> int:
    """Tokens per chunk of `lm_head_loss` on CPU: about 4 MB of fp32 logits, which stay in cache."""
    return max(1, 2**20 // vocab_size)


def lm_head_loss(head: nn.Linear, x: torch.Tensor, targets: torch.Tensor, rows: int):
    """Logits (in chunks of `rows` tokens) and the mean next-token loss of final hidden states x (N, C).

    The LM head and its loss take about 45% of a default CPU training step (a 4096-token vocabulary at
    width 128). One pass writes and rereads (N, vocab) logits, their log-softmax and its gradient, far
    more than the cache holds; per chunk they stay in cache, which makes head and loss about a third
    faster (bench/lm_head_loss.py). The loss is the same up to rounding."""
    chunks = [head(xc) for xc in x.split(rows)]
    loss = sum(F.cross_entropy(lc.float(), tc, reduction="sum") for lc, tc in zip(chunks, targets.split(rows)))
    return chunks, loss / len(targets)


class LayerKV:
    """One layer's keys and values of the positions seen so far, for generation: buffers of block_size
    positions, allocated at the first call in the keys' shape, dtype and device."""

    def __init__(self, block_size: int):
        self.block_size, self.length = block_size, 0
        self.k = self.v = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' k and v (B, heads, T, head dim); return those of every position so far."""
        end = self.length + k.shape[2]
        if self.k is None:
            self.k, self.v = (t.new_empty(*t.shape[:2], self.block_size, t.shape[3]) for t in (k, v))
        self.k[:, :, self.length:end], self.v[:, :, self.length:end] = k, v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """Next tokens (B, 1) from logits (B, vocab): the likeliest at temperature 0, else a draw."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.c_attn = MaskedLinear(cfg.n_embd, 3 * cfg.n_embd, cfg.bias, blocks=3)
        self.c_proj = MaskedLinear(cfg.n_embd, cfg.n_embd, cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.keep: torch.Tensor | None = None  # 0/1 per head while a subnetwork is active (GPT.subnetwork)

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        past = 0 if kv is None else kv.length
        if kv is not None:
            k, v = kv.append(k, v)
        # New positions see every cached one and the new ones up to themselves.
        mask = None if past == 0 or T == 1 else torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=past == 0 and T > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        if self.keep is not None:
            y = y * self.keep.view(1, -1, 1, 1)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = MaskedLinear(cfg.n_embd, 4 * cfg.n_embd, cfg.bias)
        self.c_proj = MaskedLinear(4 * cfg.n_embd, cfg.n_embd, cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)
        self.topk = cfg.topk_k if cfg.mlp_activation == "topk" else 0
        self.keep: torch.Tensor | None = None  # 0/1 per unit while a subnetwork is active (GPT.subnetwork)

    def forward(self, x: torch.Tensor, acts: list | None = None) -> torch.Tensor:
        h = self.c_fc(x)
        if self.keep is not None:
            # A removed unit's pre-activation is 0: GELU and Top-K (ReLU first) both give 0.
            h = h * self.keep
        h = kwta(h, self.topk) if self.topk else F.gelu(h)
        if acts is not None:
            acts.append(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, acts: list | None = None, kv: LayerKV | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv)
        return x + self.mlp(self.ln_2(x), acts)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, masks: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied
        masks = masks or {}
        unknown = set(masks) - set(self.masked_layers())
        if unknown:
            raise ValueError(f"masks for layers the model does not have: {sorted(unknown)}")
        for name, layer in self.masked_layers().items():
            layer.set_mask(masks.get(name))
        self._init_weights()

    def masked_layers(self) -> dict[str, MaskedLinear]:
        return {n: m for n, m in self.named_modules() if isinstance(m, MaskedLinear)}

    def _init_weights(self) -> None:
        """nanoGPT's init, with a masked layer's std multiplied by its `init_gain`, so its effective fan-in
        (the kept inputs of a row) gives the same activation scale as the dense layer."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = 0.02
                if name.endswith("c_proj"):
                    std /= math.sqrt(2 * self.cfg.n_layer)  # residual projections, as in GPT-2
                if isinstance(module, MaskedLinear):
                    std *= module.init_gain
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
                if isinstance(module, MaskedLinear) and module.mask is not None:
                    with torch.no_grad():
                        module.weight.mul_(module.mask)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, acts: list | None = None,
                return_logits: bool = True, cache: list[LayerKV] | None = None):
        """Logits and (with targets) the mean next-token loss; `acts`, if given, receives every layer's
        MLP activations (B, T, 4 * n_embd). Training code that needs only the loss passes
        `return_logits=False` (logits None): on CPU that skips gathering the logits of every token.
        With a `cache` (generation, from `new_cache`) idx holds the positions after the cached ones, which
        it then holds too, and only the last position's logits (B, 1, vocab) are computed."""
        B, T = idx.shape
        past = 0 if cache is None else cache[0].length
        if past + T > self.cfg.block_size:
            raise ValueError(f"sequence length {past + T} > model.block_size {self.cfg.block_size}")
        if cache is not None and targets is not None:
            raise ValueError("a KV cache is for generation: no targets")
        pos = torch.arange(past, past + T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, acts, None if cache is None else cache[i])
        x = self.transformer.ln_f(x)
        if cache is not None:
            return self.lm_head(x[:, -1:]), None
        if targets is None:
            return self.lm_head(x), None
        rows = loss_chunk_rows(self.cfg.vocab_size) if idx.device.type == "cpu" else B * T  # a GPU: one chunk
        chunks, loss = lm_head_loss(self.lm_head, x.view(B * T, -1), targets.reshape(-1), rows)
        return (torch.cat(chunks).view(B, T, -1) if return_logits else None), loss

    def new_cache(self) -> list[LayerKV]:
        return [LayerKV(self.cfg.block_size) for _ in self.transformer.h]

    @torch.inference_mode()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, use_cache: bool = True) -> torch.Tensor:
        """nanoGPT's generate: idx (B, T) with max_new_tokens tokens appended, each drawn from the last
        position's logits at `temperature` (0: greedy), from the `top_k` likeliest if given, with `generator`
        (seeded for reproducible draws). Call it in eval mode (dropout off). With the KV cache a step feeds
        only the new token; beyond block_size tokens the context is cropped to its last block_size as without
        the cache, and the cache is rebuilt from it each step (positions are absolute: cached keys cannot slide)."""
        block, cache = self.cfg.block_size, None
        for _ in range(max_new_tokens):
            if cache is not None and cache[0].length + 1 == idx.shape[1] <= block:
                logits = self(idx[:, -1:], cache=cache)[0]
            else:
                cache = self.new_cache() if use_cache else None
                logits = self(idx[:, -block:], cache=cache)[0]
            idx = torch.cat((idx, sample_next(logits[:, -1], temperature, top_k, generator)), dim=1)
        return idx

    @contextmanager
    def subnetwork(self, units: list[torch.Tensor], heads: list[torch.Tensor]):
        """Run as if only some MLP units and attention heads of each layer existed (0/1 float vectors per
        layer): the structured subnetworks of LoRD's pruned teacher."""
        for block, u, h in zip(self.transformer.h, units, heads):
            block.mlp.keep, block.attn.keep = u, h
        try:
            yield self
        finally:
            for block in self.transformer.h:
                block.mlp.keep = block.attn.keep = None

    def param_counts(self) -> dict[str, float]:
        """Parameter counts (tied head counted once) and densities, over sparsified and all matrices
        (sparsecl.cost.param_counts)."""
        return cost.param_counts(self)
