"""Sweeps, gathered from DVC's own records of finished experiments: any swept params key against forgetting,
plasticity and final average loss, per arm.

    dvc exp run --queue -S density=0.01,0.05,0.1,0.2,0.3 && dvc queue start     # experiment 1
    python -m sparsecl.report.sweep                                             # density (the default key)

    dvc exp run --queue $(python -m sparsecl.presets sweep-ewc-lambda) && dvc queue start
    python -m sparsecl.report.sweep --preset sweep-ewc-lambda --choose          # its swept keys, and the pick
    python -m sparsecl.report.sweep --key mechanism.ewc.lambda                  # the same table, by key

Reads `dvc.api.exp_show()`'s rows (the workspace, the baseline commit and its experiments; `--all-commits`
for every first-parent commit's) into pandas and keeps each record that has every swept key in params.yaml
and metrics/headline/. Queued, running and failed experiments are skipped (by their executor's state, or an
error, or no headline metrics); the workspace is skipped when it only repeats an experiment (as it does after
`dvc exp run`). One row per (record, arm): `<out>/<keys>_forgetting.csv` (`density_forgetting.csv` for the
default); means over seeds and repeated records per swept value and arm: `.md` and `.png`. An arm whose
metrics are the same at every swept value does not read the key (dense under a density sweep, `none`
under a mechanism's) and is drawn as a dashed reference line.

`--choose` adds the tuning rule's pick (see `choose`): the value with the least forgetting among those at
which every swept arm learns each new domain within `--margin` nats of the best plasticity it reached in
the sweep. It is read on whatever records the sweep ran; docs/EXPERIMENTS.md says which seeds to tune on.
"""
from __future__ import annotations

import argparse
import ast
import itertools
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sparsecl import presets
from sparsecl.io import write_text
from sparsecl.names import arm_name, parse_arm
from sparsecl.report import plots  # first: it selects the Agg backend
from sparsecl.report.analyze import HEADLINE, VERDICT_FIGURES
import matplotlib.pyplot as plt  # noqa: E402  isort: skip

HEADLINE_DIR = "metrics/headline/"  # the declared metrics: <arm>.json each
VALUES = ("forgetting", "plasticity", "bwt", "final_avg_loss", "core_forgetting")
SHOWN = (("forgetting", "Forgetting"), ("plasticity", "Plasticity"), ("final_avg_loss", "Final average loss"))
MARGIN = 0.02  # nats: about one seed-to-seed sd of a loss difference at these sizes (params.yaml `analysis`)
_MISSING = object()
META = ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")  # exp_show's own columns
NOT_FINISHED = ("Queued", "Running", "Failed")  # an executor's state
METRIC_KEYS = {*HEADLINE, *VERDICT_FIGURES, "tests"}  # the declared metrics' keys (a bare column is one of them)
_GAPS = ("None", "-", "!", "")
_DEP_HASH = re.compile(r"[0-9a-f]{32}(\.dir)?")  # a stage dependency's column holds its md5


def exp_show(all_commits: bool = False) -> list[dict]:
    """`dvc.api.exp_show()`: one row per record (the workspace, the baseline commit and its experiments; with
    `all_commits`, every first-parent commit before HEAD too)."""
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        return dvc.api.exp_show(num=-1 if all_commits else 1)
    except DvcException as e:
        raise SystemExit(f"error: dvc.api.exp_show failed: {e}") from e


@dataclass
class Record:
    """One finished record of `exp_show`: its label (the experiment's name, else its rev), its rev, its
    params (flat dotted keys) and {arm: its headline metrics}."""
    experiment: str
    rev: str
    params: dict[str, object]
    arms: dict[str, dict]


def _cell(value):
    """A cell back as a value: DVC's rows give a number as a float and anything else as its str (a list or a
    mapping as Python writes it); a missing value is None, "None", "-" or "!" (an unreadable file)."""
    if not isinstance(value, str):
        return value
    if value in _GAPS:
        return None
    if value in ("True", "False"):
        return value == "True"
    if value[:1] in "[{":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def records(rows: list[dict]) -> list[Record]:
    """The finished records of `exp_show` rows: queued, running and failed experiments (by their executor's
    state) are left out, and so are records without headline metrics (not run yet, or an error).

    A row's columns: DVC's own (META), `<metrics file>:<key>` (the bare key where only one file has it:
    then the only arm that the record's params name), params by their dotted key (`params.yaml:<key>` where a
    metric has the same name) and each stage dependency by its path, valued by its hash (not a param)."""
    deps = _dep_columns(rows)
    out = []
    for row in rows:
        if row.get("State") in NOT_FINISHED:
            continue
        params, arms = _parse(row, deps)
        if arms:
            rev = str(row.get("rev") or "")
            out.append(Record(row.get("Experiment") or rev, rev, params, arms))
    return out


def _dep_columns(rows: list[dict]) -> set[str]:
    return {k for r in rows for k, v in r.items() if isinstance(v, str) and _DEP_HASH.fullmatch(v)}


def _parse(row: dict, deps: set[str]) -> tuple[dict, dict]:
    """One row's params and {arm: its headline metrics} (arms whose every figure is missing left out)."""
    params, arms, bare = {}, defaultdict(dict), {}
    for column, value in row.items():
        path, _, key = column.rpartition(":")
        if column in META or column in deps or path not in ("", "params.yaml") and not path.startswith(HEADLINE_DIR):
            continue
        value = _cell(value)
        if path.startswith(HEADLINE_DIR):
            arms[path[len(HEADLINE_DIR):-len(".json")]][key] = value
        elif not path and key in METRIC_KEYS:
            bare[key] = value
        elif "/" not in key:
            params[key] = value
    if any(v is not None for k, v in bare.items() if k in HEADLINE):
        arms[_only_arm(params)] = {k: v for k, v in bare.items() if k in HEADLINE}
    return params, {a: m for a, m in arms.items() if any(v is not None for v in m.values())}


def _only_arm(params: dict) -> str:
    """The one arm a record's params name (its topologies x mechanisms x seeds)."""
    lists = [params.get(k) or [] for k in ("topologies", "mechanisms", "seeds")]
    if any(len(v) != 1 for v in lists):
        raise SystemExit("error: `dvc exp show` gives headline metrics without their arm's file, and the record's "
                         f"params name {' x '.join(str(len(v)) for v in lists)} topologies x mechanisms x seeds")
    return arm_name(*(v[0] for v in lists))


def _lookup(params: dict, key: str):
    """A flat params key's value; a section (keys below it) as a mapping, as params.yaml has it."""
    if key in params:
        return params[key]
    below = {k[len(key) + 1:]: v for k, v in params.items() if k.startswith(f"{key}.")}
    return below or _MISSING


def _swept_value(key: str, value):
    """A number (as float, so 1 and 1.0 are one point) or a string; a list or section cannot be an axis."""
    if isinstance(value, (list, dict)) or value is None:
        raise SystemExit(f"error: params key {key!r} is {value!r}, not a number or a name: it cannot be swept "
                         "on an axis (sweep a key below it)")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _unknown_key(key: str, all_params: list[dict]) -> SystemExit:
    """Names the key and what params.yaml has beside it (the keys of its deepest existing section)."""
    parts = key.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        section = ".".join(parts[:depth])
        nearby = sorted({k[len(section) + 1 if section else 0:].split(".")[0] for p in all_params for k in p
                         if not section or k.startswith(f"{section}.")})
        if nearby:
            where = f"under {section!r}" if section else "at the top level"
            return SystemExit(f"error: no record in `dvc exp show` has the params key {key!r} in params.yaml "
                              f"({where} it has: {', '.join(nearby)})")
    return SystemExit(f"error: no record in `dvc exp show` has the params key {key!r} (no params.yaml at all)")


def gather(exp_rows: list[dict], keys: tuple[str, ...] = ("density",)) -> list[dict]:
    """One row per (finished record, arm): experiment, rev, each swept key's value, topology, mechanism, seed,
    metrics. A key no record has (finished or not) fails, naming it."""
    deps = _dep_columns(exp_rows)
    all_params = [_parse(r, deps)[0] for r in exp_rows]
    for key in keys:
        if all(_lookup(p, key) is _MISSING for p in all_params):
            raise _unknown_key(key, all_params)
    finished = []
    for rec in records(exp_rows):
        values = [_lookup(rec.params, k) for k in keys]
        if _MISSING not in values:
            finished.append((rec, tuple(_swept_value(k, v) for k, v in zip(keys, values))))
    # The workspace last, so a workspace that repeats an experiment is the copy that is dropped.
    finished.sort(key=lambda f: f[0].rev == "workspace")
    rows, seen = [], set()
    for rec, point in finished:
        dedup = json.dumps([point, rec.arms], sort_keys=True)
        if dedup in seen:
            continue
        seen.add(dedup)
        for arm, m in rec.arms.items():
            if m.get("forgetting") is None:
                continue
            name = parse_arm(arm)
            rows.append({"experiment": rec.experiment, "rev": rec.rev[:7], **dict(zip(keys, point)),
                         "topology": name.topology, "mechanism": name.mechanism, "seed": name.seed,
                         **{v: m.get(v) for v in VALUES}})  # None: an older record without it
    return sorted(rows, key=lambda r: (*_order(point_of(r, keys)), r["topology"], r["mechanism"], r["seed"]))


def _order(point: tuple) -> tuple:
    # Numbers before names, so a mixed axis still sorts.
    return tuple((isinstance(v, str), v) for v in point)


def point_of(row: dict, keys: tuple[str, ...]) -> tuple:
    return tuple(row[k] for k in keys)


def arm_of(row: dict) -> str:
    return f"{row['topology']}-{row['mechanism']}"


def frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as a table, with each row's arm (topology-mechanism) and its metrics as numbers (None: NaN)."""
    df = pd.DataFrame(rows)
    df["arm"] = df["topology"] + "-" + df["mechanism"]
    for v in VALUES:
        df[v] = pd.to_numeric(df[v], errors="coerce")
    return df


def means(rows: list[dict], keys: tuple[str, ...], value: str) -> dict[tuple[str, tuple], float]:
    """(topology-mechanism, swept point) -> mean over seeds and records (without the records lacking it)."""
    if not rows:
        return {}
    df = frame(rows)
    # sort=False: an axis may mix numbers and names, which do not sort together
    m = df.groupby(["arm", *keys], sort=False)[value].mean().dropna()
    return {(idx[0], tuple(idx[1:])): float(v) for idx, v in m.items()}


def reference_arms(rows: list[dict], keys: tuple[str, ...]) -> set[str]:
    """Arms present at two or more swept points whose every (seed's) metrics are identical at all of them."""
    seen = defaultdict(lambda: defaultdict(set))  # arm -> seed -> {metrics}
    points = defaultdict(set)
    for r in rows:
        seen[arm_of(r)][r["seed"]].add(tuple(r[v] for v in VALUES))
        points[arm_of(r)].add(point_of(r, keys))
    return {a for a, by_seed in seen.items() if len(points[a]) > 1 and all(len(m) == 1 for m in by_seed.values())}


def choose(rows: list[dict], keys: tuple[str, ...], margin: float = MARGIN) -> dict | None:
    """The tuning rule: among the points every swept (non-reference) arm was run at, those where each arm's
    mean plasticity is within `margin` of the lowest (best) it reached over those points; of these, the one
    with the least forgetting averaged over the arms. Returns the point, the arms, and the admissible points;
    None without a swept arm at two points or more."""
    refs = reference_arms(rows, keys)
    arms = sorted({arm_of(r) for r in rows} - refs)
    forgetting, plasticity = means(rows, keys, "forgetting"), means(rows, keys, "plasticity")
    common = set.intersection(*({p for (a, p) in forgetting if a == arm} for arm in arms)) if arms else set()
    common = {p for p in common if all((a, p) in plasticity for a in arms)}
    if len(common) < 2:
        return None
    best = {a: min(plasticity[a, p] for p in common) for a in arms}
    admissible = sorted((p for p in common if all(plasticity[a, p] <= best[a] + margin for a in arms)), key=_order)
    pick = min(admissible, key=lambda p: np.mean([forgetting[a, p] for a in arms]))
    return {"point": pick, "arms": arms, "admissible": admissible, "margin": margin}


def varying_params(exp_rows: list[dict], rows: list[dict], keys: tuple[str, ...]) -> dict[str, list]:
    """Params keys, besides the swept ones, that differ between the records the rows came from: the means
    are taken over them, so the table says which."""
    revs = {r["rev"] for r in rows}
    params = pd.DataFrame([{k: show(v) for k, v in rec.params.items()}
                           for rec in records(exp_rows) if rec.rev[:7] in revs])
    return {k: sorted(params[k].dropna().unique()) for k in params
            if params[k].nunique() > 1 and k not in keys}


def show(value) -> str:
    """A params value as the tables print it: a number as %g (1 and 1.0 alike), anything else as JSON."""
    return _fmt(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else json.dumps(value)


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _title(keys: tuple[str, ...]) -> str:
    return "Density sweep" if keys == ("density",) else f"Sweep of {' x '.join(f'`{k}`' for k in keys)}"


def markdown(rows: list[dict], keys: tuple[str, ...] = ("density",), choice: dict | None = None,
             others: dict[str, list] | None = None) -> str:
    points = sorted({point_of(r, keys) for r in rows}, key=_order)
    refs = reference_arms(rows, keys)
    lines = [f"# {_title(keys)}", "",
             f"{len({r['rev'] for r in rows})} finished records from `dvc exp show`; each cell is the mean over "
             "seeds and records, in nats, lower is better (forgetting > 0 = forgot; plasticity = loss on each "
             "domain right after its own phase)."]
    if refs:
        lines[-1] += (f" Reference arms (same metrics at every swept value: they do not read the key): "
                      f"{', '.join(sorted(refs))}.")
    if others:
        lines[-1] += (" Also differing between these records, and averaged over: "
                      + "; ".join(f"`{k}` ({', '.join(v)})" for k, v in others.items()) + ".")
    lines.append("")
    for value, title in SHOWN:
        m = means(rows, keys, value)
        if not m:
            continue
        arms = sorted({a for a, _ in m})
        lines += [f"## {title}", "", "| " + " | ".join(keys) + " | " + " | ".join(arms) + " |",
                  "|---" * (len(keys) + len(arms)) + "|"]
        lines += ["| " + " | ".join(map(_fmt, p)) + " | "
                  + " | ".join(f"{m[a, p]:.4f}" if (a, p) in m else "-" for a in arms) + " |" for p in points]
        lines.append("")
    if choice:
        pick = ", ".join(f"`{k}` = {_fmt(v)}" for k, v in zip(keys, choice["point"]))
        lines += ["## Chosen", "",
                  f"{pick}: the least forgetting (mean over {', '.join(choice['arms'])}) among the values at which "
                  f"each of these arms' plasticity is within {choice['margin']:g} nats of the best it reached in "
                  "this sweep (admissible: "
                  + "; ".join(", ".join(map(_fmt, p)) for p in choice["admissible"]) + ").", ""]
    return "\n".join(lines)


def _numeric_log(values: list) -> tuple[bool, bool]:
    numeric = all(isinstance(v, float) for v in values)
    positive = numeric and min(values) > 0
    return numeric, positive and max(values) / min(values) >= 10


def plot(rows: list[dict], path: Path, keys: tuple[str, ...] = ("density",)) -> None:
    """Each metric against the first swept key: a line per arm (and per value of any further key)."""
    xs = sorted({r[keys[0]] for r in rows}, key=lambda v: _order((v,)))
    numeric, log = _numeric_log(xs)
    position = {v: (v if numeric else i) for i, v in enumerate(xs)}
    refs = reference_arms(rows, keys)
    shown = [(v, t) for v, t in SHOWN if any(r[v] is not None for r in rows)]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 3.8), layout="constrained", squeeze=False)
    colors = {t: f"C{i}" for i, t in enumerate(sorted({r["topology"] for r in rows}))}
    for ax, (value, title) in zip(axes[0], shown):
        markers = defaultdict(lambda: itertools.cycle("osD^vP*X"))
        m = means(rows, keys, value)
        lines = defaultdict(list)
        for (arm, p), v in m.items():
            lines[(arm, () if arm in refs else p[1:])].append((position[p[0]], v))
        for (arm, rest), pts in sorted(lines.items()):
            label = arm + "".join(f", {k}={_fmt(v)}" for k, v in zip(keys[1:], rest))
            color = colors[arm.rsplit("-", 1)[0]]  # a topology's arms share a colour, its reference dashed
            if arm in refs:
                ax.axhline(np.mean([v for _, v in pts]), ls="--", color=color, lw=1, label=f"{label} (reference)")
            else:
                ax.plot(*zip(*sorted(pts)), marker=next(markers[color]), color=color, label=label)
        if log:
            ax.set_xscale("log")
        ax.set_xticks([position[v] for v in xs], [_fmt(v) for v in xs], minor=False)
        ax.minorticks_off()
        ax.set_xlabel(keys[0])
        ax.set_ylabel(f"{title.lower()} (nats)")
        ax.set_title(f"{title.lower()} vs {keys[0].rsplit('.', 1)[-1]}")
    axes[0][0].legend(fontsize=7)
    plots.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--key", action="append", help="a swept params key, dotted (repeat for a grid; default: "
                                                      "density)")
    which.add_argument("--preset", help="take the swept keys from presets/<name>.yaml's sweep section")
    parser.add_argument("--choose", action="store_true", help="add the tuning rule's pick to the table")
    parser.add_argument("--margin", type=float, default=MARGIN,
                        help=f"plasticity margin of the rule, in nats (default {MARGIN})")
    parser.add_argument("--out", default="sweep", help="output folder (default: sweep)")
    parser.add_argument("--all-commits", action="store_true",
                        help="records of every commit before HEAD too, not only HEAD's")
    args = parser.parse_args(argv)
    if args.preset:
        keys = tuple(presets.sweep_of(presets.load(args.preset)))
        if not keys:
            raise SystemExit(f"error: preset {args.preset!r} has no `{presets.SWEEP}` section")
    else:
        keys = tuple(args.key or ["density"])
    exp_rows = exp_show(args.all_commits)
    rows = gather(exp_rows, keys)
    if not rows:
        raise SystemExit(f"error: no finished experiment with {', '.join(keys)} and metrics/headline/ in `dvc exp show`")
    choice = choose(rows, keys, args.margin) if args.choose else None
    if args.choose and choice is None:
        print("note: no pick: the rule needs a swept arm at two values or more", file=sys.stderr)
    out, stem = Path(args.out), "+".join(keys) + "_forgetting"
    # csv.DictWriter's CRLF rows, as every CSV of the project has them
    write_text(out / f"{stem}.csv", pd.DataFrame(rows).to_csv(index=False, lineterminator="\r\n"))
    text = markdown(rows, keys, choice, varying_params(exp_rows, rows, keys))
    write_text(out / f"{stem}.md", text)
    plot(rows, out / f"{stem}.png", keys)
    print(text)
    print(f"wrote {out}/{stem}.csv, .md and .png")


if __name__ == "__main__":
    main()
