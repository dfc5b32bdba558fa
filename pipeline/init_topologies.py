"""Stage `init_topologies`: the fixed masks of one (topology, seed) arm and their diagnostics."""
from sparsecl import stage
from sparsecl.io import write_json
from sparsecl.topology.store import diagnostics, make_masks, save_masks


def main(params, args):
    arm = f"{args.topology}-s{args.seed}"
    masks = make_masks(params, args.topology, args.seed)
    save_masks(f"data/masks/{arm}.pt", masks, args.topology, args.seed)
    diag = diagnostics(masks, params)
    # Per-layer detail in its own file: as metrics it would add hundreds of columns to `dvc metrics show`.
    write_json(f"metrics/topology/{arm}.json", {"summary": diag["summary"]})
    write_json(f"metrics/topology/layers/{arm}.json", diag["layers"])
    print(f"[init_topologies] {arm}: {diag['summary']}")


if __name__ == "__main__":
    stage.run(main, "topology", "seed")
