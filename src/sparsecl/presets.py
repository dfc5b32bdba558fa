"""Presets: partial params overlays in presets/<name>.yaml, applied through DVC's own `-S` flags.

    dvc exp run $(python -m sparsecl.presets gpu-100m)      # one experiment with the preset
    python -m sparsecl.presets gpu-100m --list              # show what it changes

Printing `-S key=value` flags (instead of rewriting params.yaml) keeps every change on DVC's record.

A sweep preset also has a top-level `sweep:` section, `{dotted.key: [value, ...]}`, printed as DVC's sweep
flags `-Skey=v1,v2,...` (several keys: their grid). Those need `--queue`, and the gatherer reads the swept
keys from the same file:

    dvc exp run --queue $(python -m sparsecl.presets sweep-ewc-lambda) && dvc queue start
    python -m sparsecl.report.sweep --preset sweep-ewc-lambda --choose
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import yaml

PRESETS = Path("presets")
SWEEP = "sweep"  # the reserved top-level section of a sweep preset: never a params.yaml key


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


def _yaml_value(value) -> str:
    # JSON is valid YAML, which is how DVC parses a -S value.
    return json.dumps(value, separators=(',', ':'))


def set_flags(overlay: dict) -> list[str]:
    return [f"-S{key}={_yaml_value(value)}" for key, value in flatten(overlay).items()]


def load(name: str) -> dict:
    """presets/<name>.yaml, its `sweep` section checked: each key a list of at least two scalar values."""
    path = PRESETS / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise SystemExit(f"error: no preset {name!r} in {PRESETS}/ (known: {known})")
    doc = yaml.safe_load(path.read_text()) or {}
    for key, values in (doc.get(SWEEP) or {}).items():
        if (not isinstance(values, list) or len(values) < 2
                or any(isinstance(v, (list, dict)) or v is None for v in values)):
            raise SystemExit(f"error: {path}: {SWEEP}.{key} must list at least two scalar values, got {values!r}")
    return doc


def overlay_of(doc: dict) -> dict:
    """The preset without its sweep section: what every experiment of it sets."""
    return {k: v for k, v in doc.items() if k != SWEEP}


def sweep_of(doc: dict) -> dict[str, list]:
    return dict(doc.get(SWEEP) or {})


def preset_flags(doc: dict) -> list[str]:
    """The overlay's -S flags, then one sweep flag per swept key (DVC queues their grid)."""
    sweeps = [f"-S{key}=" + ",".join(_yaml_value(v) for v in values) for key, values in sweep_of(doc).items()]
    return set_flags(overlay_of(doc)) + sweeps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a file presets/<name>.yaml")
    parser.add_argument("--list", action="store_true", help="print key = value lines instead of -S flags")
    args = parser.parse_args(argv)
    doc = load(args.name)
    if args.list:
        lines = [f"{k} = {v}" for k, v in flatten(overlay_of(doc)).items()]
        sweep = sweep_of(doc)
        lines += [f"{k} = {', '.join(map(str, v))}   (swept)" for k, v in sweep.items()]
        if sweep:
            lines.append(f"-> {math.prod(map(len, sweep.values()))} queued experiments (the grid of the swept values)")
        print("\n".join(lines))
    else:
        flags = preset_flags(doc)
        # Printed for `$(...)`, which splits words but does not remove quotes: so no quotes, and no spaces.
        spaced = [f for f in flags if any(c.isspace() for c in f)]
        if spaced:
            raise SystemExit(f"error: {PRESETS / args.name}.yaml: values with spaces cannot pass through $(...): "
                             f"{spaced}")
        print(" ".join(flags))


if __name__ == "__main__":
    main()
