"""Training throughput: masked sparse vs the same dense model, and achieved model FLOP rate vs the dense
matmul rate measured in the same process (and, on a GPU, MFU against the GPU's peak bf16 rate).

    python bench/train_throughput.py                              # CPU, default model shape from params.yaml
    python bench/train_throughput.py --device cuda --preset gpu-100m   # GPU: bf16, fused AdamW, torch.compile
    python bench/train_throughput.py --steps 3 --tiny             # smoke run

On CUDA the step is the pipeline's: bf16 autocast, fused AdamW, `torch.compile` when the params ask for it
(the presets do), flash attention through SDPA. MFU = model FLOPs (sparsecl.cost.train_flops: 3 forward
passes of 2 per matmul weight plus attention) per second / the peak dense bf16 rate of the GPU
(`--peak-tflops`, or known for A100/H100/H200). Prints figures only; it asserts nothing about time.
"""
from __future__ import annotations

import time

import torch
from common import bench_params, bench_parser, train_step

from sparsecl.cost import train_flops
from sparsecl.device import resolve_device
from sparsecl.model import GPT, config_from_params
from sparsecl.topology.store import make_masks
from sparsecl.train.loop import make_optimizer

# Peak dense bf16 tensor-core rates in TFLOP/s (vendor data sheets, without sparsity), by device name.
PEAK_BF16_TFLOPS = {"A100": 312, "H100 PCIe": 756, "H100": 989, "H200": 989}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_training(model: GPT, params: dict, steps: int, device: torch.device) -> float:
    """Seconds per optimizer step (after warm-up steps, which also compile on CUDA)."""
    model.to(device)
    opt = make_optimizer(model, params["train"], device)
    step_fn = torch.compile(model) if params["train"]["compile"] and device.type == "cuda" else model
    bs, T = params["train"]["batch_size"], model.cfg.block_size
    x = torch.randint(0, model.cfg.vocab_size, (bs, T + 1), device=device)
    warmup = 3 if device.type == "cuda" else 2
    for i in range(steps + warmup):
        if i == warmup:
            synchronize(device)
            t0 = time.perf_counter()
        train_step(step_fn, model, opt, x, params["train"]["grad_clip"], device)
    synchronize(device)
    return (time.perf_counter() - t0) / steps


def matmul_rate(n: int, repeats: int, device: torch.device) -> float:
    """FLOP/s of an n x n matmul: fp32 on CPU, bf16 on CUDA (the precision training runs in)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s, for MFU")
    args = ap.parse_args()
    params = bench_params(args)
    device = resolve_device(args.device)
    cfg = config_from_params(params, args.vocab)
    tokens_per_step = params["train"]["batch_size"] * cfg.block_size
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, model {params['model']}, "
          f"batch {params['train']['batch_size']}x{cfg.block_size}, compile {params['train']['compile']}")
    rows = {}
    for topology in ("dense", "random"):
        torch.manual_seed(0)
        model = GPT(cfg, masks=make_masks(params, topology, 0))
        sec = time_training(model, params, args.steps, device)
        rows[topology] = (sec, model.cpu())
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"{topology:>7}: {tokens_per_step / sec:10,.0f} tokens/s  ({sec * 1e3:.1f} ms/step)")
    dense_sec, dense_model = rows["dense"]
    print(f"masked sparse (density {params['density']}) / dense throughput: {dense_sec / rows['random'][0]:.3f}")
    n = 256 if args.tiny else (8192 if device.type == "cuda" else 1024)
    matmul = matmul_rate(n, 3 if args.tiny else 20, device)
    achieved = train_flops(dense_model) * tokens_per_step / dense_sec
    print(f"dense matmul rate: {matmul / 1e9:.1f} GFLOP/s; dense model FLOP rate (sparsecl.cost): "
          f"{achieved / 1e9:.1f} GFLOP/s = {achieved / matmul:.1%} of matmul")
    peak = peak_tflops(device, args.peak_tflops)
    if peak:
        print(f"MFU (dense, bf16): {achieved / (peak * 1e12):.1%} of {peak:g} TFLOP/s peak")
    elif device.type == "cuda":
        print("MFU: unknown peak for this GPU; pass --peak-tflops")


if __name__ == "__main__":
    main()
