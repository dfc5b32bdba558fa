"""Sparse inference: next-token latency of the exported sparse model vs the same dense model, on
CPU, at several densities and batch sizes, all measured side by side (round-robin) in one process.

    python bench/sparse_inference.py                    # default model shape from params.yaml
    python bench/sparse_inference.py --width 512        # a wider model (n_embd 512, 8 heads)
    python bench/sparse_inference.py --tiny --repeats 2 # smoke run

A call is one next token: a full context of block_size tokens through the blocks (no KV cache) and the LM
head at the last position. Every matrix is exported sparse here, whatever its density, to show where
sparsity stops paying. The floor is the same call with every sparsified matrix free (zeros of its output's
shape): what no sparse kernel can beat, since attention, LayerNorms, GELU and the LM head remain (Amdahl).
Prints figures only; it asserts nothing about time.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from common import bench_params, bench_parser, with_width

from sparsecl.model import GPT, config_from_params
from sparsecl.model.sparse_export import export_sparse, inference_complexity, next_token_logits, time_calls
from sparsecl.topology.store import make_masks


class Free(nn.Module):
    """A matrix that costs nothing: zeros of its output's shape."""

    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.out_features = layer.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.out_features)


def floor_model(model: GPT) -> GPT:
    """A copy of `model` whose sparsified matrices are all `Free`."""
    floor = copy.deepcopy(model)
    for name, layer in floor.masked_layers().items():
        parent, attr = name.rsplit(".", 1)
        setattr(floor.get_submodule(parent), attr, Free(layer))
    return floor


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--densities", default="0.01,0.05,0.1,0.3")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--width", type=int, help="n_embd (heads: width / 64)")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    params = bench_params(args)
    if args.width:
        with_width(params, args.width)
    cfg = config_from_params(params, args.vocab)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {params['model']}, "
          f"vocab {args.vocab}; median of {args.repeats} round-robin calls")
    torch.manual_seed(0)
    dense = GPT(cfg).eval()
    floor = floor_model(dense)
    for batch in (int(b) for b in args.batches.split(",")):
        idx = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size))
        calls = {"dense": lambda: next_token_logits(dense, idx), "floor": lambda: next_token_logits(floor, idx)}
        flops, err = {}, {}
        for rho in (float(d) for d in args.densities.split(",")):
            params["density"] = rho
            masked = GPT(cfg, masks=make_masks(params, "random", 0)).eval()
            sparse = export_sparse(masked, max_density=1.0)
            with torch.no_grad():
                err[rho] = float((masked(idx)[0] - sparse(idx)[0]).abs().max())
            flops[rho] = inference_complexity(masked, sparse)
            calls[f"sparse {rho}"] = lambda s=sparse: next_token_logits(s, idx)
        sec = time_calls(calls, args.repeats)
        print(f"batch {batch} x context {cfg.block_size}: dense {sec['dense'] * 1e3:.2f} ms/call, floor "
              f"{sec['floor'] * 1e3:.2f} ms/call (best possible speedup {sec['dense'] / sec['floor']:.2f}x)")
        head = 2 * dense.lm_head.weight.numel()  # the LM head runs at the last position only

        def call_flops(form: dict) -> float:
            return cfg.block_size * (form["flops_per_token"] - head) + head

        for rho, c in flops.items():
            s = sec[f"sparse {rho}"]
            ideal = call_flops(c["dense"]) / call_flops(c["sparse"])
            print(f"  rho {rho:<5} sparse {s * 1e3:8.2f} ms/call  speedup vs dense {sec['dense'] / s:5.2f}x "
                  f"(FLOP ratio {ideal:5.1f}x)  max |logit diff| vs masked {err[rho]:.1e}")


if __name__ == "__main__":
    main()
