"""Where a training step's time goes: torch.profiler over a few optimizer steps of the default model (the
work that dominates `dvc repro`), operators by self CPU time with their input shapes.

    python bench/profile_step.py                        # dense, default shapes from params.yaml
    python bench/profile_step.py --topology random      # the masked model at params' density
    python bench/profile_step.py --tiny --steps 1       # smoke run

Prints the profiler's table only; it asserts nothing about time.
"""
from __future__ import annotations

import torch
from common import bench_params, bench_parser, train_step

from sparsecl.model import GPT, config_from_params
from sparsecl.topology.store import make_masks
from sparsecl.train.loop import make_optimizer


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--topology", default="dense")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rows", type=int, default=15, help="operators to list")
    args = ap.parse_args()
    params = bench_params(args)
    cfg = config_from_params(params, args.vocab)
    torch.manual_seed(0)
    model = GPT(cfg, masks=make_masks(params, args.topology, 0))
    opt = make_optimizer(model, params["train"], torch.device("cpu"))
    idx = torch.randint(0, cfg.vocab_size, (params["train"]["batch_size"], cfg.block_size + 1))

    def step():
        train_step(model, model, opt, idx, params["train"]["grad_clip"], torch.device("cpu"))

    step()  # warm-up
    with torch.profiler.profile(record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.topology}, model {params['model']}, "
          f"batch {params['train']['batch_size']}, vocab {args.vocab}, {args.steps} steps")
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=45, max_shapes_column_width=50))


if __name__ == "__main__":
    main()
