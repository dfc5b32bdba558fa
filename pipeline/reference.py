"""Stage `reference`: the joint (multitask) and from-scratch references of one (topology, seed) arm."""
from sparsecl import stage
from sparsecl.io import write_json
from sparsecl.train.run import references


def main(params, args):
    arm = f"{args.topology}-s{args.seed}"
    refs = references(params, args.topology, args.seed, "data/tokens", f"data/masks/{arm}.pt",
                      f"lr_search/{args.topology}/chosen.json", f"models/pretrain/{arm}/init.pt")
    write_json(f"references/{arm}.json", refs)
    print(f"[reference] {arm}: joint " + " ".join(f"{d}={v:.3f}" for d, v in refs["joint"].items()))


if __name__ == "__main__":
    stage.run(main, "topology", "seed")
