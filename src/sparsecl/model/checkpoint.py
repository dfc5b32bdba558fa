"""Model checkpoints that carry their masks' hash and their weights' hash: a checkpoint that does not match
its topology is refused, and so is one whose weights or masks were corrupted on disk. The masks are stored
bit-packed (model/masks.py), apart from the weights: 1/32 of the float32 buffers they were."""
from __future__ import annotations

from pathlib import Path

import torch

from sparsecl.errors import IntegrityError
from sparsecl.io import tensors_sha256, torch_load, torch_save
from sparsecl.model.gpt import GPT, GPTConfig
from sparsecl.model.masks import mask_hash, pack, unpack

MASK = ".mask"  # the state-dict suffix of a MaskedLinear's mask buffer


def model_masks(model: GPT) -> dict[str, torch.Tensor]:
    return {n: m.mask for n, m in model.masked_layers().items() if m.mask is not None}


def save_checkpoint(path: str | Path, model: GPT, **meta) -> None:
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(MASK)}
    torch_save({"config": model.cfg.to_dict(), "mask_sha256": mask_hash(model_masks(model)),
                "weights_sha256": tensors_sha256(state), "model": state, "masks": pack(model_masks(model)),
                **meta}, path)


def load_checkpoint(path: str | Path, mask_blob: dict, device: torch.device | str = "cpu") -> tuple[GPT, dict]:
    """Rebuild the model with the topology's masks and load the weights, after checking that the weights and
    the stored masks are intact (each against its hash) and that those masks are the topology's."""
    ck = torch_load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or tensors_sha256(ck.get("model", {})) != ck.get("weights_sha256"):
        raise IntegrityError(f"{path}: weights do not match their stored sha256 (corrupted); rerun the stage "
                             f"that made it")
    masks = unpack(ck.get("masks", {}))
    if mask_hash(masks) != ck.get("mask_sha256"):
        raise IntegrityError(f"{path}: masks do not match their stored sha256 (corrupted); rerun the stage "
                             f"that made it")
    if ck["mask_sha256"] != mask_blob["sha256"]:
        raise IntegrityError(f"{path}: checkpoint masks (sha256 {ck['mask_sha256'][:12]}) do not match topology "
                             f"{mask_blob['topology']!r} (sha256 {mask_blob['sha256'][:12]}); rerun the stage that made it")
    model = GPT(GPTConfig(**ck["config"]), masks=mask_blob["masks"])
    model.load_state_dict(ck["model"] | {f"{n}{MASK}": m for n, m in masks.items()})
    return model.to(device), ck
