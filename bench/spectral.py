"""Seconds to get a mask's second singular value with the diagnostics' sparse Lanczos (topology/store.py:
spectral), at the sizes the issue asks for and at the largest matrix of the 1B preset; the dense SVD's
value beside it where that is affordable, as the check that both agree.

    python bench/spectral.py            # 4096 x 4096 at density 0.01 (and the rest)
    python bench/spectral.py --tiny     # smoke run, 256 x 256
    python bench/spectral.py --table h3 # per matrix, sigma2 / bound of every topology of presets/h3.yaml

Each figure is the best of --repeats calls (the mask is built once, outside the timing). Prints figures
only; it asserts nothing about time.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sparsecl.params import load as load_params, validate
from sparsecl.presets import load as load_preset, merged, overlay_of
from sparsecl.topology import TOPOLOGIES
from sparsecl.topology.store import make_masks, masked_blocks, spectral

SETTINGS = {"allocation": "uniform", "randomness": 0.0, "degree_dist": "fixed", "no_dead_units": False,
            "same_mask_every_layer": False}


def best_of(fn, repeats: int) -> tuple[float, dict]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def table(preset: str, seeds: int) -> None:
    """Per logical matrix kind (q, k, v, attention output, MLP fc, MLP proj): sigma2 / bound over the layers
    (min-max) of each sparse topology's seed-0 masks with the smallest relative spectral gap 1 - sigma2 / sigma1, and random's sigma2 over the expander's, worst case
    over layers and seeds 0..seeds-1 (random's smallest against the expander's largest)."""
    params = validate(merged(load_params("params.yaml"), overlay_of(load_preset(preset))))
    blocks = masked_blocks(params)
    sparse = [t for t in params["topologies"] if t not in ("dense", "narrow")]
    worst_case = {"random", "expander"} <= set(sparse)  # only these two are compared over seeds
    found: dict[tuple[str, str, int], list[dict]] = {}
    for topology in sparse:
        for seed in range(seeds if worst_case and topology in ("random", "expander") else 1):
            masks = make_masks(params, topology, seed)
            for name, (n, shape) in blocks.items():
                kind = name.split(".", 3)[-1]
                for i, b in enumerate(masks[name].view(n, *shape)):
                    found.setdefault((topology, kind + (f".{'qkv'[i]}" if n == 3 else ""), seed), []).append(spectral(b))
    kinds = list(dict.fromkeys(k for _, k, _ in found))
    print(f"{preset}: density {params['density']}, n_embd {params['model']['n_embd']}, {params['model']['n_layer']} layers")
    print("| matrix | " + " | ".join(f"{t}: sigma2 / bound, min gap" for t in sparse) + " | bound (kind) | random / expander, worst |")
    print("|---|" + "---|" * (len(sparse) + 2))
    for kind in kinds:
        cells = []
        for t in sparse:
            r = [s["sigma2"] / s["bound"] for s in found[(t, kind, 0)]]
            gap = min(s["spectral_gap"] for s in found[(t, kind, 0)])
            cells.append(f"{min(r):.3f}-{max(r):.3f}, gap {gap:.3f}")
        s0 = found[(sparse[0], kind, 0)][0]
        ramanujan = {t: all(s["bound_is_ramanujan"] for s in found[(t, kind, 0)]) for t in sparse}
        kind_note = ", ".join(t for t in sparse if ramanujan[t]) or "none"
        worst = ""
        if worst_case:
            rnd = min(s["sigma2"] for seed in range(seeds) for s in found[("random", kind, seed)])
            exp = max(s["sigma2"] for seed in range(seeds) for s in found[("expander", kind, seed)])
            worst = f"{rnd / exp:.3f}"
        print(f"| {kind} | " + " | ".join(cells) + f" | {s0['bound']:.3f} (Ramanujan for: {kind_note}) | {worst} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--table", metavar="PRESET", help="print the diagnostic table of presets/PRESET.yaml instead")
    ap.add_argument("--seeds", type=int, default=3, help="with --table: seeds the worst case runs over")
    args = ap.parse_args()
    if args.table:
        table(args.table, args.seeds)
        return
    # (label, shape, density, also the dense SVD)
    cases = ([("tiny", (256, 256), 0.05, True)] if args.tiny else
             [("issue", (4096, 4096), 0.01, False), ("check", (512, 512), 0.05, True),
              ("gpu-1b mlp", (6400, 1600), 0.05, False)])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for label, shape, density, with_dense in cases:
        for topology in ("random", "expander", "brf"):
            mask = TOPOLOGIES[topology].build({"x": (1, shape)}, density, SETTINGS, np.random.default_rng(0))["x"]
            sec, s = best_of(lambda: spectral(mask), args.repeats)
            line = (f"{label:>10} {shape[0]}x{shape[1]} density {density} {topology:>8}: sigma2 {s['sigma2']:.6f} "
                    f"(bound {s['bound']:.4f}) in {sec:.3f} s")
            if with_dense:
                dense = float(torch.linalg.svdvals(mask.double())[1])
                line += f"; dense SVD sigma2 {dense:.6f}, |diff| {abs(dense - s['sigma2']):.1e}"
            print(line)


if __name__ == "__main__":
    main()
