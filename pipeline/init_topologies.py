"""Stage `init_topologies`: the fixed masks of one (topology, seed) base and their diagnostics."""
from sparsecl import stage
from sparsecl.io import write_json
from sparsecl.names import base_name
from sparsecl.topology.store import diagnostics, make_masks, save_masks


def main(params, args):
    base = base_name(args.topology, args.seed)
    masks = make_masks(params, args.topology, args.seed)
    save_masks(f"data/masks/{base}.pt", masks, args.topology, args.seed)
    diag = diagnostics(masks, params)
    # Per-layer detail in its own file: as metrics it would add hundreds of columns to `dvc metrics show`.
    write_json(f"metrics/topology/{base}.json", {"summary": diag["summary"]})
    write_json(f"metrics/topology/layers/{base}.json", diag["layers"])
    print(f"[init_topologies] {base}: {diag['summary']}")


if __name__ == "__main__":
    stage.run(main, "topology", "seed")
