"""Stage `sequential`: one phase per later domain, from the pretrained arm, with one mechanism."""
from sparsecl import stage
from sparsecl.io import write_json
from sparsecl.names import arm_name, base_name
from sparsecl.train import distributed
from sparsecl.train.run import sequential


def main(params, args):
    base, arm = base_name(args.topology, args.seed), arm_name(args.topology, args.mechanism, args.seed)
    out = f"models/sequential/{arm}"
    result = sequential(params, args.topology, args.mechanism, args.seed, "data/tokens", f"data/masks/{base}.pt",
                        f"lr_search/{args.topology}/chosen.json", f"models/pretrain/{base}", out,
                        f"dvclive/sequential/{arm}")
    if distributed.is_main():
        write_json(f"metrics/mechanism/{arm}.json", result.metrics)
        write_json(f"timing/sequential/{arm}.json", result.timing())
        write_json(f"{out}/train_summary.json", result.phases)

if __name__ == "__main__":
    stage.run(main, "topology", "mechanism", "seed", data_parallel=True)
