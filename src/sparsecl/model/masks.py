"""Masks as stored: their content hash and their bit-packed form, shared by the mask files
(topology/store.py) and the model checkpoints (model/checkpoint.py)."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from sparsecl.errors import IntegrityError


def mask_hash(masks: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(masks):
        h.update(name.encode())
        h.update(masks[name].to(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()


def pack(masks: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Bool masks as bits (np.packbits, 8 entries a byte) with their shapes: how masks are stored on disk,
    1/8 of a bool tensor and 1/32 of a float one (the 1B preset's masks: 123 MB)."""
    return {n: {"shape": list(m.shape), "bits": torch.from_numpy(np.packbits(m.cpu().numpy().reshape(-1)))}
            for n, m in masks.items()}


def unpack(packed: dict[str, dict]) -> dict[str, torch.Tensor]:
    """The bool masks `pack` stored (a malformed entry is an IntegrityError, as a corrupted file is)."""
    try:
        return {n: torch.from_numpy(np.unpackbits(p["bits"].numpy(), count=math.prod(p["shape"]))
                                    .view(bool).reshape(p["shape"])) for n, p in packed.items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise IntegrityError(f"packed masks cannot be read ({type(e).__name__}: {e})") from e
