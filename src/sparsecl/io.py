"""Atomic file writes and content hashes: a killed stage never leaves a half-written output, and a
corrupted input is refused with a clear error instead of giving a wrong result."""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sparsecl.errors import IntegrityError, NonFiniteError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once: nothing here changes it, and setting it (the only way to read it) races other threads' files.
FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds. The file
    gets the mode a plain open() would (0644 under umask 022; mkstemp's own is 0600), and a failed write
    (a full disk) names `path`, which the system's error does not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise type(e)(e.errno, e.strerror, str(path)) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, obj: Any) -> None:
    """Refuses NaN and infinity (not JSON, and never a result) before anything is written, naming the key:
    `metrics/summary.json: dense-none-s0.forgetting is NaN`."""
    if (bad := non_finite(obj)) is not None:
        where, value = bad
        raise NonFiniteError(f"{path}: {where or 'the value'} is {json.dumps(value)}; not written")
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def non_finite(obj: Any, where: str = "") -> tuple[str, float] | None:
    """The first non-finite number in nested dicts and lists, as (its dotted key path, the value), or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where, obj)
    if isinstance(obj, dict):
        children = ((f"{where}.{k}" if where else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        children = ((f"{where}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    return next((bad for key, v in children if (bad := non_finite(v, key)) is not None), None)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def torch_save(obj: Any, path: str | Path) -> None:
    """torch.save through a buffer: the archive then does not embed the (random) temporary file name,
    so the same object always gives the same bytes and DVC sees an unchanged output."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def torch_load(path: str | Path, **kwargs) -> Any:
    """torch.load whose every failure to parse the file (a truncated or corrupted archive fails in many
    different ways inside torch) is one IntegrityError naming the file."""
    import torch

    try:
        return torch.load(path, **kwargs)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise IntegrityError(f"{path}: cannot be read ({type(e).__name__}: {str(e)[:200]}); the file is "
                             f"corrupted or truncated, rerun the stage that wrote it") from e


def tensors_sha256(tensors: dict) -> str:
    """Hash of named tensors (names, dtypes, shapes, raw bytes): equal exactly when the contents are equal."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
