"""The choice of a topology's lr from its grid (the select_lr stage)."""
from __future__ import annotations

from sparsecl.params import ParamsError


def select_lr(points: list[dict]) -> dict:
    """The grid point with the lowest loss on domain A's selection windows, and whether it lies at an end of
    the grid (then the grid should be widened: the best lr may lie outside it)."""
    ok = [p for p in points if not p["diverged"]]
    if not ok:
        raise ParamsError(f"lr_search.factors: every lr of the grid diverged "
                          f"({', '.join(str(p['lr']) for p in points)}), allowed: a grid with a lower train.lr")
    best = min(ok, key=lambda p: p["val_loss"])
    factors = sorted(p["factor"] for p in points)
    return {"lr": best["lr"], "factor": best["factor"], "val_loss": best["val_loss"], "grid_points": len(points),
            "at_grid_edge": int(len(points) > 1 and best["factor"] in (factors[0], factors[-1]))}
