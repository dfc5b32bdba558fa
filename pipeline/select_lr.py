"""Stage `select_lr`: a topology's lr, the best point of its grid (what pretrain, sequential and reference use),
with that point's model and step log (pretraining's own when the budgets match)."""
from sparsecl import stage
from sparsecl.io import read_json, write_json
from sparsecl.train.lr_select import copy_point, select_lr


def main(params, args):
    points = {f: read_json(f"lr_search/points/{args.topology}-x{f}/point.json") for f in params["lr_search"]["factors"]}
    chosen = select_lr(list(points.values()))
    out = f"lr_search/{args.topology}"
    factor = next(f for f, p in points.items() if p["factor"] == chosen["factor"])  # as params spells it
    copy_point(f"lr_search/points/{args.topology}-x{factor}", out)
    write_json(f"{out}/chosen.json", chosen)
    edge = " (at the grid's edge: widen lr_search.factors)" if chosen["at_grid_edge"] else ""
    print(f"[select_lr] {args.topology}: lr {chosen['lr']:g}, val loss {chosen['val_loss']:.4f}{edge}")


if __name__ == "__main__":
    stage.run(main, "topology")
