"""Stage `pretrain`: train one (topology, seed) base on the first domain of data.order."""
from sparsecl import stage
from sparsecl.io import write_json
from sparsecl.names import base_name
from sparsecl.train import distributed
from sparsecl.train.run import pretrain


def main(params, args):
    base = base_name(args.topology, args.seed)
    out = f"models/pretrain/{base}"
    result = pretrain(params, args.topology, args.seed, "data/tokens", f"data/masks/{base}.pt",
                      f"lr_search/{args.topology}", out, f"dvclive/pretrain/{base}")
    if distributed.is_main():
        write_json(f"timing/pretrain/{base}.json", result.timing)
        write_json(f"{out}/train_summary.json", result.summary)

if __name__ == "__main__":
    stage.run(main, "topology", "seed", data_parallel=True)
