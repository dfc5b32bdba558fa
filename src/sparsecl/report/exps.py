"""`dvc exp show` for this pipeline: experiments as rows, each arm's headline figures as columns.

    python -m sparsecl.report.exps                                  # forgetting and final average loss
    python -m sparsecl.report.exps --metric plasticity --all-commits

DVC's own table heads a column with its metrics file and key (`metrics/headline/random-none-s0.json:
forgetting`, 46 characters), so three arms already overflow a 160-column terminal. This prints the same
records, read from `dvc.api.exp_show()` (the workspace, the baseline commit and its experiments, queued,
running and failed ones left out), with the params that differ between them, then one block of columns per
metric headed by the arms' short names.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from sparsecl.names import parse_arm
from sparsecl.report.analyze import HEADLINE
from sparsecl.report.sweep import exp_show, records, show

DEFAULT_METRICS = ("forgetting", "final_avg_loss")


def rows(exp_rows: list[dict]) -> list[dict]:
    """Per finished record: its label, flat params and {arm: {metric: value}} from metrics/headline/."""
    out = []
    for rec in records(exp_rows):
        named = rec.experiment != rec.rev  # an experiment: its rev and its name; a baseline: its branch or rev
        out.append({"label": f"{rec.rev[:7]} {rec.experiment}" if named else rec.rev,
                    "params": rec.params, "arms": rec.arms})
    return out


def _short(arm: str, arms: list[str]) -> str:
    """`random-none-s0` -> `random` when every arm has mechanism none and seed 0's suffix is the only one."""
    parts, this = [parse_arm(a) for a in arms], parse_arm(arm)
    one_mechanism, one_seed = len({p.mechanism for p in parts}) == 1, len({p.seed for p in parts}) == 1
    return "-".join([this.topology] + ([] if one_mechanism else [this.mechanism])
                    + ([] if one_seed else [f"s{this.seed}"]))


def table(records: list[dict], metrics: tuple[str, ...] = DEFAULT_METRICS) -> str:
    """A fixed-width text table: label, the params that differ between the records, then per metric the arms."""
    if not records:
        raise SystemExit("error: no finished experiment with metrics/headline/ in `dvc exp show` (run dvc repro first)")
    unknown = sorted(set(metrics) - set(HEADLINE))
    if unknown:
        raise SystemExit(f"error: --metric {', '.join(unknown)}: not a headline metric "
                         f"(allowed: {', '.join(HEADLINE)})")
    params = pd.DataFrame([{k: show(v) for k, v in r["params"].items()} for r in records])
    varying = sorted(k for k in params if params[k].nunique(dropna=False) > 1)
    arms = sorted({a for r in records for a in r["arms"]})
    short = [_short(a, arms) for a in arms]
    head = ["experiment", *varying]
    cells = [[r["label"], *(show(r["params"].get(k)).strip('"') for k in varying)] for r in records]
    for m in metrics:
        head += [f"{m}: {s}" if i == 0 else s for i, s in enumerate(short)]
        for r, row in zip(records, cells):
            row += [f"{r['arms'][a][m]:.3f}" if r["arms"].get(a, {}).get(m) is not None else "-" for a in arms]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(head)]
    left = 1 + len(varying)  # text columns; the numbers are right-aligned

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, cells)])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sparsecl.report.exps", description=__doc__.split("\n\n")[0])
    ap.add_argument("--metric", action="append", help=f"a headline metric (repeatable; default: "
                                                      f"{', '.join(DEFAULT_METRICS)})")
    ap.add_argument("--all-commits", action="store_true", help="every commit's experiments, not only HEAD's")
    args = ap.parse_args(argv)
    print(table(rows(exp_show(args.all_commits)), tuple(args.metric or DEFAULT_METRICS)))


if __name__ == "__main__":
    main(sys.argv[1:])
