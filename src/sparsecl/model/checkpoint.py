"""Model checkpoints that carry their masks' hash and their weights' hash: a checkpoint that does not match
its topology is refused, and so is one whose weights were corrupted on disk."""
from __future__ import annotations

from pathlib import Path

import torch

from sparsecl.io import IntegrityError, tensors_sha256, torch_load, torch_save
from sparsecl.model.gpt import GPT, GPTConfig
from sparsecl.topology.store import mask_hash


def speed_checkpoint(phase: int) -> str:
    """The file of the checkpoint taken `phase.speed_steps` steps into a phase (its loss on that phase's
    domain is the arm's learning speed there)."""
    return f"phase{phase}_early.pt"


def model_masks(model: GPT) -> dict[str, torch.Tensor]:
    return {n: m.mask.to(torch.bool) for n, m in model.masked_layers().items() if m.mask is not None}


def save_checkpoint(path: str | Path, model: GPT, **meta) -> None:
    state = model.state_dict()
    torch_save({"config": model.cfg.to_dict(), "mask_sha256": mask_hash(model_masks(model)),
                "weights_sha256": tensors_sha256(state), "model": state, **meta}, path)


def load_checkpoint(path: str | Path, mask_blob: dict, device: torch.device | str = "cpu") -> tuple[GPT, dict]:
    """Rebuild the model with the topology's masks and load the weights, after checking that the weights are
    intact (their hash covers the mask buffers too) and that their masks are the topology's."""
    ck = torch_load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or tensors_sha256(ck.get("model", {})) != ck.get("weights_sha256"):
        raise IntegrityError(f"{path}: weights do not match their stored sha256 (corrupted); rerun the stage "
                             f"that made it")
    if ck["mask_sha256"] != mask_blob["sha256"]:
        raise IntegrityError(f"{path}: checkpoint masks (sha256 {ck['mask_sha256'][:12]}) do not match topology "
                         f"{mask_blob['topology']!r} (sha256 {mask_blob['sha256'][:12]}); rerun the stage that made it")
    model = GPT(GPTConfig(**ck["config"]), masks=mask_blob["masks"])
    model.load_state_dict(ck["model"])
    return model.to(device), ck
