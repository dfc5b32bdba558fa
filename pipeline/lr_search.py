"""Stage `lr_search`: one point of a topology's lr grid, scored on domain A's validation split only."""
from sparsecl import stage
from sparsecl.io import write_json
from sparsecl.train.run import lr_grid_point


def main(params, args):
    # The folder is named by the factor as DVC wrote it into the command (as select_lr names it: str of the value).
    out = f"lr_search/points/{args.topology}-x{args.factor}"
    point = lr_grid_point(params, args.topology, float(args.factor), "data/tokens", out)
    write_json(f"{out}/point.json", point)
    print(f"[lr_search] {args.topology} lr {point['lr']:g}: " + (
        "diverged" if point["diverged"] else f"domain A val loss {point['val_loss']:.4f}"))


if __name__ == "__main__":
    stage.run(main, "topology", "factor")
