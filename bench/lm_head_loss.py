"""The LM head and its next-token loss, forward and backward, in one pass vs in cache-sized chunks of tokens
(what `GPT.forward` does on CPU), and their share of a whole training step, measured side by side
(round-robin) in one process on the default shapes.

    python bench/lm_head_loss.py            # default model shape and batch from params.yaml
    python bench/lm_head_loss.py --tiny     # smoke run

Prints figures only; it asserts nothing about time.
"""
from __future__ import annotations

import torch
from common import bench_params, bench_parser

from sparsecl.model import GPT, config_from_params
from sparsecl.model.gpt import lm_head_loss, loss_chunk_rows
from sparsecl.model.sparse_export import time_calls


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    params = bench_params(args)
    cfg = config_from_params(params, args.vocab)
    n = params["train"]["batch_size"] * cfg.block_size
    chunk = loss_chunk_rows(cfg.vocab_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n} tokens x width {cfg.n_embd} x "
          f"vocab {cfg.vocab_size}; median of {args.repeats} round-robin calls")
    torch.manual_seed(0)
    model = GPT(cfg)
    x = torch.randn(n, cfg.n_embd, requires_grad=True)
    targets = torch.randint(0, cfg.vocab_size, (n,))
    idx = torch.randint(0, cfg.vocab_size, (params["train"]["batch_size"], cfg.block_size + 1))

    def head_and_loss(rows: int):
        def call():
            model.zero_grad(set_to_none=True)
            lm_head_loss(model.lm_head, x, targets, rows)[1].backward()
        return call

    def training_step():
        model.zero_grad(set_to_none=True)
        model(idx[:, :-1], idx[:, 1:], return_logits=False)[1].backward()

    calls = {"one pass": head_and_loss(n), f"chunks of {chunk}": head_and_loss(chunk),
             f"chunks of {4 * chunk}": head_and_loss(4 * chunk), "training step": training_step}
    sec = time_calls(calls, args.repeats)
    for name, s in sec.items():
        print(f"  {name:<18} {s * 1e3:8.2f} ms")
    one, chunked, step = sec["one pass"], sec[f"chunks of {chunk}"], sec["training step"]
    print(f"head + loss: chunked (as GPT.forward on CPU) is {one / chunked:.2f}x the one-pass speed; it is "
          f"{chunked / step:.0%} of a training step (forward + backward), which one pass would make "
          f"{(step - chunked + one) / step:.2f}x as long")


if __name__ == "__main__":
    main()
