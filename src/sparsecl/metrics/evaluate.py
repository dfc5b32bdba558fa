"""The loss matrix: mean next-token NLL of every checkpoint of an arm on every domain's fixed windows."""
from __future__ import annotations

from pathlib import Path

import torch

from sparsecl.data.batches import eval_windows
from sparsecl.data.tokens import TokenData
from sparsecl.device import autocast
from sparsecl.model.checkpoint import load_checkpoint


@torch.no_grad()
def mean_nll(model, windows: torch.Tensor, device: torch.device, batch_size: int = 32) -> float:
    """Token-weighted mean NLL in nats over all windows (every window has the same length)."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(0, len(windows), batch_size):
        w = windows[i: i + batch_size].to(device)
        with autocast(device):
            loss = model(w[:, :-1], w[:, 1:], return_logits=False)[1]  # the chunked head: see GPT.forward
        total += loss.double() * w[:, 1:].numel()
    return float(total) / (windows.shape[0] * (windows.shape[1] - 1))


def loss_matrix(checkpoints: dict[str, tuple[Path, list[str]]], mask_blob: dict, data: TokenData,
                device: torch.device) -> tuple[dict[str, dict[str, float]], torch.nn.Module]:
    """{checkpoint label: {domain: loss}} for each checkpoint on its listed domains, on windows that are
    identical for every model (each domain's evaluation budget is fixed by the tokenize stage's manifest),
    and the last checkpoint's model."""
    windows: dict[str, torch.Tensor] = {}
    out = {}
    for label, (path, domains) in checkpoints.items():
        model, _ = load_checkpoint(path, mask_blob, device)
        for d in domains:
            if d not in windows:
                windows[d] = eval_windows(data.array(d, "val"), data.manifest["domains"][d]["eval_tokens"],
                                          model.cfg.block_size)
        out[label] = {d: mean_nll(model, windows[d], device) for d in domains}
        print(f"[evaluate] {label}: " + " ".join(f"{d}={v:.3f}" for d, v in out[label].items()), flush=True)
    return out, model
