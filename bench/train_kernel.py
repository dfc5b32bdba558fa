"""The sparse training kernel (train.kernel: sparse) vs the masked one: tokens/s of the pipeline's training
step (forward, backward, clipping, AdamW) at one density, the two stepping in turn in one process so load
hits both alike, at the default width and wider ones.

    python bench/train_kernel.py                          # rho 0.05, widths: the default and 1024
    python bench/train_kernel.py --widths 512 --rho 0.1   # another shape or density
    python bench/train_kernel.py --tiny --widths 32 --steps 1  # smoke run

Both start from the same model; batch and block size are the params' (16 x 128 tokens by default). Then,
for the widest model's MLP c_fc matrix at the batch's tokens, the parts of its forward and backward: dense
(F.linear and its backward) vs the sparse kernel's forward, dX and dW, to show where the step's time goes.
Prints figures only; it asserts nothing about time.
"""
from __future__ import annotations

import statistics
import time

import torch
from common import bench_params, bench_parser, train_step, with_width

from sparsecl.model import GPT, config_from_params
from sparsecl.model.sparse_export import time_calls
from sparsecl.model.sparse_linear import SparseKernels, SparseLinear
from sparsecl.topology.store import make_masks
from sparsecl.train.loop import make_optimizer

CPU = torch.device("cpu")


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--widths", help="n_embd values, comma-separated (heads: width / 64); default: the params' and 1024")
    ap.add_argument("--rho", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=3, help="timed steps of each kernel (after one warm-up each)")
    args = ap.parse_args()
    params = bench_params(args)
    widths = [int(w) for w in args.widths.split(",")] if args.widths else [params["model"]["n_embd"], 1024]
    tcfg, params["density"] = params["train"], args.rho
    bs, T = tcfg["batch_size"], params["model"]["block_size"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, random@{args.rho}, batch {bs} x {T} "
          f"tokens, vocab {args.vocab}; median of {args.steps} alternating steps")
    for width in widths:
        with_width(params, width)
        cfg = config_from_params(params, args.vocab)
        masks = make_masks(params, "random", 0)
        models = {}
        for kernel in ("masked", "sparse"):
            torch.manual_seed(0)
            models[kernel] = GPT(cfg, masks=masks)
        x = torch.randint(0, cfg.vocab_size, (bs, T + 1), generator=torch.Generator().manual_seed(0))
        times = {"masked": [], "sparse": []}
        with SparseKernels(models["sparse"]):
            opts = {k: make_optimizer(m, tcfg, CPU) for k, m in models.items()}
            for i in range(args.steps + 1):  # the first is a warm-up
                for kernel, model in models.items():
                    t0 = time.perf_counter()
                    train_step(model, model, opts[kernel], x, tcfg["grad_clip"], CPU)
                    if i:
                        times[kernel].append(time.perf_counter() - t0)
        rate = {k: bs * T / statistics.median(t) for k, t in times.items()}
        drift = max(float((a - b).detach().abs().max()) for a, b in zip(models["masked"].parameters(),
                                                                 models["sparse"].parameters()))
        print(f"  width {width:5d}: masked {rate['masked']:9,.0f} tokens/s, sparse {rate['sparse']:9,.0f} tokens/s, "
              f"sparse / masked {rate['sparse'] / rate['masked']:.2f}x  (max |weight diff| after "
              f"{args.steps + 1} steps {drift:.1e})")
    parts(models["masked"], bs * T, max(1, args.steps))


def parts(model: GPT, tokens: int, repeats: int) -> None:
    """Median ms of the dense and sparse products of one MLP c_fc matrix, forward and backward."""
    layer = model.transformer.h[0].mlp.c_fc
    sparse = SparseLinear(layer)
    pattern, values = sparse.pattern, sparse.values.detach()
    x, dy = torch.randn(tokens, layer.in_features), torch.randn(tokens, layer.out_features)
    w = layer.effective_weight.detach().requires_grad_()
    xg = x.clone().requires_grad_()

    def dense():
        torch.nn.functional.linear(xg, w).backward(dy)

    sec = time_calls({"dense forward + backward": dense, "sparse forward": lambda: pattern.mm(x, values),
                      "sparse dX": lambda: pattern.mm_t(dy, values), "sparse dW": lambda: pattern.sampled(dy, x)},
                     repeats)
    print(f"  one {layer.out_features}x{layer.in_features} matrix (c_fc), {tokens} tokens, rho "
          f"{pattern.nnz / layer.weight.numel():.3f}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in sec.items())
          + f"; dense / sparse {sec['dense forward + backward'] / sum(v for k, v in sec.items() if k.startswith('sparse')):.2f}x")


if __name__ == "__main__":
    main()
