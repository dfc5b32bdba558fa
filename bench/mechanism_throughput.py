"""Training throughput of every mechanism at the default model size, on the tokenize stage's real data:
tokens/s of the phase's training loop (the budget that sets the default run's time) and the seconds of the
work at a phase boundary (Fisher, activation frequencies, teacher search, buffer insertion).

    python bench/mechanism_throughput.py                      # needs data/tokens (dvc repro tokenize)
    python bench/mechanism_throughput.py --tokens /path/to/data/tokens --steps 40 --topology random

Prints figures only; it asserts nothing about time. On a busy machine compare the ratios to `none`.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sparsecl.data.tokens import TokenData
from sparsecl.mechanisms import MECHANISMS, make
from sparsecl.model import GPT, config_from_params
from sparsecl.params import load
from sparsecl.topology.store import make_masks
from sparsecl.train.loop import train_phase


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--tokens", default="data/tokens")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--topology", default="dense")
    ap.add_argument("--mechanisms", nargs="*", default=sorted(MECHANISMS))
    args = ap.parse_args()
    params = load(args.params)
    data = TokenData(args.tokens)
    first, second = params["data"]["order"][:2]
    tcfg = {**params["train"], "log_every": args.steps, "ckpt_every": 10 * args.steps}
    tokens = args.steps * tcfg["batch_size"] * tcfg["grad_accum"] * params["model"]["block_size"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {params['model']}, "
          f"{args.topology}, {args.steps} steps of {tokens // args.steps} tokens")
    def phase(name: str, n_tokens: int):
        """A fresh model through the pretraining boundary and one phase: (seconds of the boundary, its
        FLOPs, the phase's result, the mechanism)."""
        torch.manual_seed(0)
        model = GPT(config_from_params(params, data.vocab_size), masks=make_masks(params, args.topology, 0))
        mech = make(name, params["mechanism"][name])
        t0 = time.perf_counter()
        mech.end_phase(0, first, model, data.array(first, "train"))
        boundary, boundary_flops = time.perf_counter() - t0, mech.flops
        mech.begin_phase(1, second, model)
        with tempfile.TemporaryDirectory() as tmp:
            result = train_phase(model, data.array(second, "train"), n_tokens, tcfg, seed=0, phase=1,
                                 mechanism=mech, device=torch.device("cpu"), resume_file=Path(tmp) / "r.pt",
                                 label=name)
        return boundary, boundary_flops, result, mech

    phase("none", 2 * tokens // args.steps)  # warm-up, untimed: the process's first steps pay one-time costs
    names = sorted(args.mechanisms, key=lambda n: n != "none")  # none first: the reference
    base = None
    for name in names:
        boundary, boundary_flops, result, mech = phase(name, tokens)
        rate = result.tokens / result.seconds
        base = base or rate
        print(f"{name:>10}: {rate:8,.0f} tokens/s ({rate / base:.2f} x {names[0]}), "
              f"phase boundary {boundary:5.1f} s, "
              f"{(mech.flops - boundary_flops) / result.tokens / 1e6:6.1f} MFLOP per trained token")


if __name__ == "__main__":
    main()
