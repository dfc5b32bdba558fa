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


def loss_matrix(checkpoints: dict[str, Path], mask_blob: dict, data: TokenData, domains: list[str],
                device: torch.device) -> tuple[dict[str, dict[str, float]], torch.nn.Module]:
    """{checkpoint label: {domain: loss}} on windows that are identical for every model (each domain's
    evaluation budget is fixed by the tokenize stage's manifest), and the last checkpoint's model."""
    windows = None
    out = {}
    for label, path in checkpoints.items():
        model, _ = load_checkpoint(path, mask_blob, device)
        if windows is None:
            windows = {d: eval_windows(data.array(d, "val"), data.manifest["domains"][d]["eval_tokens"],
                                       model.cfg.block_size) for d in domains}
        out[label] = {d: mean_nll(model, windows[d], device) for d in domains}
        print(f"[evaluate] {label}: " + " ".join(f"{d}={v:.3f}" for d, v in out[label].items()), flush=True)
    return out, model
