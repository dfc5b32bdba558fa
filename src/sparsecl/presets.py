"""Presets: partial params overlays in presets/<name>.yaml, applied through DVC's own `-S` flags.

    dvc exp run $(python -m sparsecl.presets gpu-100m)      # one experiment with the preset
    python -m sparsecl.presets gpu-100m --list              # show what it changes

Printing `-S key=value` flags (instead of rewriting params.yaml) keeps every change on DVC's record.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

PRESETS = Path("presets")


def flatten(node: dict, prefix: str = "") -> dict[str, object]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}; lists and scalars are leaves."""
    out: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def merged(base: dict, overlay: dict) -> dict:
    """`base` with `overlay`'s keys set, section by section (what DVC's -S flags make of params.yaml)."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) and value else value
    return out


def set_flags(overlay: dict) -> list[str]:
    # JSON is valid YAML, which is how DVC parses a -S value.
    return [f"-S{key}={json.dumps(value, separators=(',', ':'))}" for key, value in flatten(overlay).items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help=f"a file presets/<name>.yaml")
    parser.add_argument("--list", action="store_true", help="print key = value lines instead of -S flags")
    args = parser.parse_args(argv)
    path = PRESETS / f"{args.name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise SystemExit(f"error: no preset {args.name!r} in {PRESETS}/ (known: {known})")
    overlay = yaml.safe_load(path.read_text()) or {}
    if args.list:
        print("\n".join(f"{k} = {v}" for k, v in flatten(overlay).items()))
    else:
        flags = set_flags(overlay)
        # Printed for `$(...)`, which splits words but does not remove quotes: so no quotes, and no spaces.
        spaced = [f for f in flags if any(c.isspace() for c in f)]
        if spaced:
            raise SystemExit(f"error: {path}: values with spaces cannot pass through $(...): {spaced}")
        print(" ".join(flags))


if __name__ == "__main__":
    main()
