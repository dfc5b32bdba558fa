"""Stage `select_lr`: a topology's lr, the best point of its grid (what pretrain, sequential and reference use)."""
from sparsecl import stage
from sparsecl.io import read_json, write_json
from sparsecl.train.lr_select import select_lr


def main(params, args):
    points = [read_json(f"lr_search/points/{args.topology}-x{f}.json") for f in params["lr_search"]["factors"]]
    chosen = select_lr(points)
    write_json(f"lr_search/{args.topology}.json", chosen)
    edge = " (at the grid's edge: widen lr_search.factors)" if chosen["at_grid_edge"] else ""
    print(f"[select_lr] {args.topology}: lr {chosen['lr']:g}, val loss {chosen['val_loss']:.4f}{edge}")


if __name__ == "__main__":
    stage.run(main, "topology")
