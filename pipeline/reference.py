"""Stage `reference`: the joint (multitask) and from-scratch references of one (topology, seed) base."""
from sparsecl import stage
from sparsecl.io import write_json
from sparsecl.names import base_name
from sparsecl.train.run import references


def main(params, args):
    base = base_name(args.topology, args.seed)
    refs = references(params, args.topology, args.seed, "data/tokens", f"data/masks/{base}.pt",
                      f"lr_search/{args.topology}/chosen.json", f"models/pretrain/{base}/init.pt")
    write_json(f"references/{base}.json", refs)
    print(f"[reference] {base}: joint " + " ".join(f"{d}={v:.3f}" for d, v in refs["joint"].items()))


if __name__ == "__main__":
    stage.run(main, "topology", "seed")
