"""Generation as users run it: tokens/s of `GPT.generate` (KV cache, greedy) for the masked model (dense
kernels on weight * mask), the exported sparse model and the same dense model, beside the floor (the same
generation with every sparsified matrix free) and the FLOP ratio; every form of one width and batch
measured side by side (round-robin) in one process.

    python bench/generate.py                                   # widths 128/512/1024, rho 0.01/0.05/0.1, batch 1/8
    python bench/generate.py --widths 512 --densities 0.05     # one cell
    python bench/generate.py --tiny --widths 32 --repeats 1    # smoke run

A call generates --new tokens after a --prompt-token prompt (the prefill included), batch rows at once.
Speedups are over the dense model (the masked one pays a weight * mask product per call besides); "share
of floor" is the sparse speedup / the floor's, the fraction of what no kernel can beat that the sparse
kernel reaches (attention, LayerNorms, GELU, the LM head and Python remain: Amdahl). The FLOP ratio is
dense / sparse forward FLOPs per token (attention counted over a full context). Prints figures only.
"""
from __future__ import annotations

import torch
from common import bench_params, bench_parser, with_width
from sparse_inference import floor_model

from sparsecl.model import GPT, config_from_params
from sparsecl.model.sparse_export import export_sparse, inference_complexity, time_calls
from sparsecl.topology.store import make_masks


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--widths", default="128,512,1024", help="n_embd values (heads: width / 64)")
    ap.add_argument("--densities", default="0.01,0.05,0.1")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    params = bench_params(args)
    densities = [float(d) for d in args.densities.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, vocab {args.vocab}, prompt {args.prompt} "
          f"+ {args.new} new tokens (greedy, KV cache); median of {args.repeats} round-robin calls")
    print("width batch  rho    dense tok/s  masked tok/s  sparse tok/s  floor tok/s  sparse/dense  floor/dense  "
          "share of floor  FLOP ratio  same tokens")
    for width in (int(w) for w in args.widths.split(",")):
        with_width(params, width)
        cfg = config_from_params(params, args.vocab)
        torch.manual_seed(0)
        dense = GPT(cfg).eval()
        floor = floor_model(dense)
        forms = {}
        for rho in densities:
            params["density"] = rho
            masked = GPT(cfg, masks=make_masks(params, "random", 0)).eval()
            forms[rho] = masked, export_sparse(masked, max_density=1.0)
        for batch in (int(b) for b in args.batches.split(",")):
            prompt = torch.randint(0, cfg.vocab_size, (batch, args.prompt), generator=torch.Generator().manual_seed(1))

            def gen(model):
                return lambda: model.generate(prompt, args.new, temperature=0.0)

            calls = {"dense": gen(dense), "floor": gen(floor)}
            for rho, (masked, sparse) in forms.items():
                calls[f"masked {rho}"], calls[f"sparse {rho}"] = gen(masked), gen(sparse)
            sec = time_calls(calls, args.repeats)
            rate = {name: batch * args.new / s for name, s in sec.items()}
            floor_speedup = rate["floor"] / rate["dense"]
            for rho, (masked, sparse) in forms.items():
                c = inference_complexity(masked, sparse)
                speedup = rate[f"sparse {rho}"] / rate["dense"]
                same = torch.equal(masked.generate(prompt, args.new, temperature=0.0),
                                   sparse.generate(prompt, args.new, temperature=0.0))
                print(f"{width:5d} {batch:5d}  {rho:<5}  {rate['dense']:11,.0f}  {rate[f'masked {rho}']:12,.0f}  "
                      f"{rate[f'sparse {rho}']:12,.0f}  {rate['floor']:11,.0f}  {speedup:11.2f}x  "
                      f"{floor_speedup:10.2f}x  {speedup / floor_speedup:13.0%}  "
                      f"{c['dense']['flops_per_token'] / c['sparse']['flops_per_token']:9.1f}x  "
                      f"{'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
