"""Checks of single params.yaml values, shared by the schema in params.py and the SCHEMA of every topology
and mechanism. A check takes (key, value) and returns an error message or None."""
from __future__ import annotations

import math
from typing import Any, Callable

Check = Callable[[str, Any], "str | None"]


def flag(key, v) -> str | None:
    return None if isinstance(v, bool) else f"{key}: {v!r} is not true/false"


def number(lo=None, hi=None, lo_open=False, integer=False, why="") -> Check:
    """A number (an integer if asked) in [lo, hi], or (lo, hi] with lo_open; None leaves a side open."""
    bounds = [f"{'>' if lo_open else '>='} {lo}"] * (lo is not None) + [f"<= {hi}"] * (hi is not None)
    allowed = f"allowed {' and '.join(bounds)}" + (f" ({why})" if why else "")

    def check(key, v):
        kind = "an integer" if integer else "a number"
        if isinstance(v, bool):
            return f"{key}: {v!r} is not {kind} (YAML reads true/false, yes/no and on/off as a bool)"
        if not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            return f"{key}: {v!r} is not {kind}" + _text_number_hint(v)
        if not math.isfinite(v):  # .nan passes every comparison, .inf every lower bound
            return f"{key}: {v!r} is not a finite number" + (f", {allowed}" if bounds else "")
        if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
            return f"{key}: {v!r} is out of range, {allowed}"
        return None
    return check


def _text_number_hint(v) -> str:
    """YAML 1.1 reads `1e-3` or `2e6` (no dot) as a string: say so, since the file looks right."""
    if not isinstance(v, str):
        return ""
    try:
        float(v)
    except (TypeError, ValueError):
        return ""
    return " (YAML read it as text: write it unquoted with a dot, e.g. 1.0e-3, or in full, e.g. 2000000)"


def choice(allowed) -> Check:
    def check(key, v):
        if v not in allowed:
            return f"{key}: unknown value {v!r}, allowed: {', '.join(map(str, allowed))}"
        return None
    return check
