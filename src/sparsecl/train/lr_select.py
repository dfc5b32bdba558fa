"""The choice of a topology's lr from its grid (the select_lr stage)."""
from __future__ import annotations

import shutil
from pathlib import Path

from sparsecl.errors import ParamsError
from sparsecl.io import atomic_path


POINT_FILES = ("init.pt", "model.pt", "steplog.jsonl")  # what a grid point that did not diverge leaves


def select_lr(points: list[dict]) -> dict:
    """The grid point with the lowest loss on domain A's selection windows, and whether it lies at an end of
    the grid (then the grid should be widened: the best lr may lie outside it)."""
    ok = [p for p in points if not p["diverged"]]
    if not ok:
        raise ParamsError(f"lr_search.factors: every lr of the grid diverged "
                          f"({', '.join(str(p['lr']) for p in points)}), allowed: a grid with a lower train.lr")
    best = min(ok, key=lambda p: p["val_loss"])
    factors = sorted(p["factor"] for p in points)
    return {**best, "grid_points": len(points),
            "at_grid_edge": int(len(points) > 1 and best["factor"] in (factors[0], factors[-1]))}


def copy_point(point_dir: str | Path, out_dir: str | Path) -> None:
    for name in POINT_FILES:
        with atomic_path(Path(out_dir) / name) as tmp:
            shutil.copyfile(Path(point_dir) / name, tmp)
