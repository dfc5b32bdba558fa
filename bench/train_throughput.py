"""Training throughput: masked sparse vs the same dense model, and achieved model FLOP rate vs the dense
matmul rate of this machine, all measured side by side in one process.

    python bench/train_throughput.py                 # default model shape from params.yaml
    python bench/train_throughput.py --steps 3 --tiny   # smoke run (CI)

Prints figures only; it asserts nothing about time.
"""
from __future__ import annotations

import time

import torch
from common import bench_params, bench_parser

from sparsecl.model import GPT, GPTConfig
from sparsecl.topology.store import make_masks
from sparsecl.train.loop import make_optimizer


def model_flops_per_token(model: GPT, active: bool) -> float:
    """6N (forward + backward) plus the attention term 12 * n_layer * n_embd * block_size (nanoGPT / PaLM)."""
    c = model.param_counts()
    n = (c["params_active"] if active else c["params_total"]) - model.transformer.wpe.weight.numel()
    cfg = model.cfg
    return 6 * n + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def time_training(model: GPT, params: dict, steps: int, device: torch.device) -> float:
    """Seconds per optimizer step (after two warm-up steps)."""
    opt = make_optimizer(model, params["train"], device)
    bs, T = params["train"]["batch_size"], model.cfg.block_size
    x = torch.randint(0, model.cfg.vocab_size, (bs, T + 1), device=device)
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        model(x[:, :-1], x[:, 1:], return_logits=False)[1].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / steps


def matmul_rate(n: int, repeats: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    params = bench_params(args)
    device = torch.device("cpu")
    cfg = GPTConfig(vocab_size=args.vocab, **params["model"])
    tokens_per_step = params["train"]["batch_size"] * cfg.block_size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {params['model']}, "
          f"batch {params['train']['batch_size']}x{cfg.block_size}")
    rows = {}
    for topology in ("dense", "random"):
        torch.manual_seed(0)
        model = GPT(cfg, masks=make_masks(params, topology, 0))
        sec = time_training(model, params, args.steps, device)
        rows[topology] = (sec, model)
        print(f"{topology:>7}: {tokens_per_step / sec:10,.0f} tokens/s  ({sec * 1e3:.1f} ms/step)")
    dense_sec, dense_model = rows["dense"]
    print(f"masked sparse (density {params['density']}) / dense throughput: {dense_sec / rows['random'][0]:.3f}")
    peak = matmul_rate(256 if args.tiny else 1024, 3 if args.tiny else 20)
    achieved = model_flops_per_token(dense_model, active=False) * tokens_per_step / dense_sec
    print(f"dense matmul rate: {peak / 1e9:.1f} GFLOP/s; dense model FLOP rate (6N + attention): "
          f"{achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.1%} of matmul")


if __name__ == "__main__":
    main()
