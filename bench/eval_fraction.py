"""Evaluation time as a fraction of a default run: the `evaluate` stage's work against the training stages'
work, both at rates measured side by side in one process on the model shape of params.yaml.

    python bench/eval_fraction.py              # the run params.yaml describes
    python bench/eval_fraction.py --tiny       # smoke run

Training: every arm's tokens (pretraining per topology and seed, each later phase per arm) at the measured
seconds per optimizer step of plain training (mechanism `none`; the mechanisms' extra work makes training
longer and the fraction smaller). Evaluation: per arm, every checkpoint (untrained, after each phase) on
`data.eval_tokens` tokens of every domain (an upper bound: a domain with a smaller val split is evaluated on
all of it) at the measured forward rate, plus the exported model's latency measurement. Process start-up and
checkpoint loading are not counted in either. Prints figures only; it asserts nothing about time.
"""
from __future__ import annotations

import time

import torch
from common import bench_params, bench_parser
from train_throughput import time_training

from sparsecl.metrics.evaluate import mean_nll
from sparsecl.model import GPT, config_from_params
from sparsecl.model.sparse_export import export_sparse, latency
from sparsecl.topology.store import make_masks
from sparsecl.train.loop import steps_for


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--steps", type=int, default=20, help="training steps timed")
    args = ap.parse_args()
    params = bench_params(args)
    tcfg, order = params["train"], params["data"]["order"]
    cfg = config_from_params(params, args.vocab)
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = GPT(cfg, masks=make_masks(params, "random", 0))

    # Measured: training seconds per step, evaluation seconds per window, the latency measurement.
    step_s = time_training(model, params, args.steps, device)
    windows = torch.randint(0, cfg.vocab_size, (max(1, params["data"]["eval_tokens"] // cfg.block_size),
                                                cfg.block_size + 1))
    t0 = time.perf_counter()
    mean_nll(model, windows, device)
    window_s = (time.perf_counter() - t0) / len(windows)
    t0 = time.perf_counter()
    latency(model, export_sparse(model))
    latency_s = time.perf_counter() - t0

    topologies_x_seeds = len(params["topologies"]) * len(params["seeds"])
    arms = topologies_x_seeds * len(params["mechanisms"])
    train_steps = (topologies_x_seeds * steps_for(params["pretrain"]["tokens"], tcfg, cfg.block_size)
                   + arms * (len(order) - 1) * steps_for(params["phase"]["tokens"], tcfg, cfg.block_size))
    train_s = train_steps * step_s * tcfg["grad_accum"]
    domains = len(dict.fromkeys(order))  # every checkpoint on every distinct domain (pipeline/evaluate.py)
    eval_s = arms * ((len(order) + 1) * domains * len(windows) * window_s + latency_s)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {params['model']}, {arms} arms")
    print(f"training: {train_steps:,} steps x {step_s * 1e3:.1f} ms = {train_s:,.0f} s")
    print(f"evaluation: {arms} arms x {len(order) + 1} checkpoints x {domains} domains x {len(windows)} windows "
          f"x {window_s * 1e3:.2f} ms + latency {latency_s:.2f} s per arm = {eval_s:,.1f} s")
    print(f"evaluation / (training + evaluation): {100 * eval_s / (train_s + eval_s):.3g}%")


if __name__ == "__main__":
    main()
