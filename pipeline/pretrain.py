"""Stage `pretrain`: train one (topology, seed) arm on the first domain of data.order."""
from sparsecl import stage
from sparsecl.io import write_json
from sparsecl.train import distributed
from sparsecl.train.run import pretrain


def main(params, args):
    arm = f"{args.topology}-s{args.seed}"
    out = f"models/pretrain/{arm}"
    summary = pretrain(params, args.topology, args.seed, "data/tokens", f"data/masks/{arm}.pt",
                       f"lr_search/{args.topology}", out, f"dvclive/pretrain/{arm}")
    if distributed.is_main():
        write_json(f"timing/pretrain/{arm}.json", summary.pop("timing"))
        write_json(f"{out}/train_summary.json", summary)


if __name__ == "__main__":
    stage.run(main, "topology", "seed", data_parallel=True)
