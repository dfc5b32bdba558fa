"""What the benchmark scripts share: the common flags and the params they start from."""
from __future__ import annotations

import argparse

import yaml

from sparsecl.presets import PRESETS, merged


def bench_parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer, 32-wide model and small budgets (smoke test)")
    ap.add_argument("--preset", help="apply presets/<name>.yaml over the params, e.g. gpu-100m")
    return ap


def bench_params(args: argparse.Namespace) -> dict:
    params = yaml.safe_load(open(args.params))
    if args.preset:
        params = merged(params, yaml.safe_load((PRESETS / f"{args.preset}.yaml").read_text()) or {})
    if args.tiny:
        params["model"].update(n_layer=2, n_embd=32, n_head=2, block_size=32)
        params["train"]["batch_size"] = 4
        params["data"]["eval_tokens"] = 256
    return params
