"""What the benchmark scripts share: the common flags and the params they start from."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from sparsecl.device import autocast
from sparsecl.presets import PRESETS, merged


def bench_parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer, 32-wide model and batch 4 (smoke test)")
    ap.add_argument("--preset", help="apply presets/<name>.yaml over the params, e.g. gpu-100m")
    return ap


def bench_params(args: argparse.Namespace) -> dict:
    params = yaml.safe_load(Path(args.params).read_text())
    if args.preset:
        params = merged(params, yaml.safe_load((PRESETS / f"{args.preset}.yaml").read_text()) or {})
    if args.tiny:
        params["model"].update(n_layer=2, n_embd=32, n_head=2, block_size=32)
        params["train"]["batch_size"] = 4
        params["data"]["eval_tokens"] = 256
    return params


def with_width(params: dict, width: int) -> dict:
    """`params` at residual width `width`, with heads of 64 (at least one), as the width sweeps of the benches."""
    params["model"].update(n_embd=width, n_head=max(1, width // 64))
    return params


def train_step(step_fn, model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, grad_clip: float,
               device: torch.device) -> None:
    """One optimizer step as the pipeline's training loop takes it (train/loop.py): autocast, backward,
    gradient clipping, optimizer step."""
    with autocast(device):
        loss = step_fn(x[:, :-1], x[:, 1:], return_logits=False)[1]
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
