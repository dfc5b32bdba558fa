"""Sweeps, gathered from DVC's own records of finished experiments: any swept params key against forgetting,
plasticity and final average loss, per arm.

    dvc exp run --queue -S density=0.01,0.05,0.1,0.2,0.3 && dvc queue start     # experiment 1
    python -m sparsecl.report.sweep                                             # density (the default key)

    dvc exp run --queue $(python -m sparsecl.presets sweep-ewc-lambda) && dvc queue start
    python -m sparsecl.report.sweep --preset sweep-ewc-lambda --choose          # its swept keys, and the pick
    python -m sparsecl.report.sweep --key mechanism.ewc.lambda                  # the same table, by key

Reads `dvc exp show --json` (the workspace, the baseline commit and its experiments; `--all-commits`
for every commit's) and keeps each record that has every swept key in params.yaml and
metrics/headline/. Queued, running and failed experiments are skipped (by their executor's state, or an
error, or no summary metrics); the workspace is skipped when it only repeats an experiment (as it does after
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
import itertools
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from sparsecl import presets
from sparsecl.io import write_text
from sparsecl.names import parse_arm
from sparsecl.report import plots  # first: it selects the Agg backend
from sparsecl.report.analyze import csv_text
import matplotlib.pyplot as plt  # noqa: E402  isort: skip

HEADLINE_DIR = "metrics/headline/"  # the declared metrics: <arm>.json each
VALUES = ("forgetting", "plasticity", "bwt", "final_avg_loss", "core_forgetting")
SHOWN = (("forgetting", "Forgetting"), ("plasticity", "Plasticity"), ("final_avg_loss", "Final average loss"))
MARGIN = 0.02  # nats: about one seed-to-seed sd of a loss difference at these sizes (params.yaml `analysis`)
_MISSING = object()


def exp_show(all_commits: bool = False) -> list:
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[2:])} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout)


def records(node):
    """Every row of `dvc exp show --json` at any depth: baselines, and their experiments' revisions, except
    experiments whose executor is not done (a running one can show the metrics files it started from)."""
    if isinstance(node, list):
        for item in node:
            yield from records(item)
    elif isinstance(node, dict):
        executor = node.get("executor")
        if isinstance(executor, dict) and executor.get("state") in ("queued", "running", "failed"):
            return
        if isinstance(node.get("data"), dict):
            yield node
        for key in ("experiments", "revs"):
            yield from records(node.get(key))


def headline_arms(data: dict) -> dict[str, dict]:
    """{arm: its headline metrics} of one `dvc exp show --json` record, from metrics/headline/<arm>.json."""
    return {path[len(HEADLINE_DIR):-len(".json")]: (entry or {}).get("data") or {}
            for path, entry in (data.get("metrics") or {}).items() if path.startswith(HEADLINE_DIR)}


def _file_data(data: dict, kind: str, path: str) -> dict:
    entry = (data.get(kind) or {}).get(path) or {}
    return entry.get("data") or {}


def _lookup(params: dict, key: str):
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


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
        section = parts[:depth]
        nearby = sorted({k for p in all_params
                         if isinstance(node := (_lookup(p, ".".join(section)) if section else p), dict)
                         for k in node})
        if nearby:
            where = f"under {'.'.join(section)!r}" if section else "at the top level"
            return SystemExit(f"error: no record in `dvc exp show` has the params key {key!r} in params.yaml "
                              f"({where} it has: {', '.join(nearby)})")
    return SystemExit(f"error: no record in `dvc exp show` has the params key {key!r} (no params.yaml at all)")


def gather(exp_json: list, keys: tuple[str, ...] = ("density",)) -> list[dict]:
    """One row per (finished record, arm): experiment, rev, each swept key's value, topology, mechanism, seed,
    metrics. A key no record has (finished or not) fails, naming it."""
    finished, all_params = [], []
    for rec in records(exp_json):
        params = _file_data(rec["data"], "params", "params.yaml")
        all_params.append(params)
        summary = headline_arms(rec["data"])
        values = [_lookup(params, k) for k in keys]
        if rec.get("error") or _MISSING in values or not summary:
            continue
        finished.append((rec, tuple(_swept_value(k, v) for k, v in zip(keys, values)), summary))
    for key in keys:
        if all(_lookup(p, key) is _MISSING for p in all_params):
            raise _unknown_key(key, all_params)
    # The workspace last, so a workspace that repeats an experiment is the copy that is dropped.
    finished.sort(key=lambda f: f[0].get("rev") == "workspace")
    rows, seen = [], set()
    for rec, point, summary in finished:
        dedup = json.dumps([point, summary], sort_keys=True)
        if dedup in seen:
            continue
        seen.add(dedup)
        rev = str(rec.get("rev") or "")
        for arm, m in summary.items():
            if not isinstance(m, dict) or "forgetting" not in m:
                continue
            name = parse_arm(arm)
            rows.append({"experiment": rec.get("name") or rev[:7], "rev": rev[:7], **dict(zip(keys, point)),
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


def means(rows: list[dict], keys: tuple[str, ...], value: str) -> dict[tuple[str, tuple], float]:
    """(topology-mechanism, swept point) -> mean over seeds and records."""
    groups = defaultdict(list)
    for r in rows:
        if r[value] is not None:
            groups[(arm_of(r), point_of(r, keys))].append(r[value])
    return {k: float(np.mean(v)) for k, v in groups.items()}


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


def varying_params(exp_json: list, rows: list[dict], keys: tuple[str, ...]) -> dict[str, list]:
    """Params keys, besides the swept ones, that differ between the records the rows came from: the means
    are taken over them, so the table says which."""
    revs = {r["rev"] for r in rows}
    values = defaultdict(set)
    for rec in records(exp_json):
        if str(rec.get("rev") or "")[:7] in revs:
            for k, v in presets.flatten(_file_data(rec["data"], "params", "params.yaml")).items():
                values[k].add(json.dumps(v))
    return {k: sorted(v) for k, v in values.items() if len(v) > 1 and k not in keys}


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
    parser.add_argument("--all-commits", action="store_true", help="records of every commit, not only HEAD's")
    args = parser.parse_args(argv)
    if args.preset:
        keys = tuple(presets.sweep_of(presets.load(args.preset)))
        if not keys:
            raise SystemExit(f"error: preset {args.preset!r} has no `{presets.SWEEP}` section")
    else:
        keys = tuple(args.key or ["density"])
    exp_json = exp_show(args.all_commits)
    rows = gather(exp_json, keys)
    if not rows:
        raise SystemExit(f"error: no finished experiment with {', '.join(keys)} and metrics/headline/ in `dvc exp show`")
    choice = choose(rows, keys, args.margin) if args.choose else None
    if args.choose and choice is None:
        print("note: no pick: the rule needs a swept arm at two values or more", file=sys.stderr)
    out, stem = Path(args.out), "+".join(keys) + "_forgetting"
    write_text(out / f"{stem}.csv", csv_text(rows))
    text = markdown(rows, keys, choice, varying_params(exp_json, rows, keys))
    write_text(out / f"{stem}.md", text)
    plot(rows, out / f"{stem}.png", keys)
    print(text)
    print(f"wrote {out}/{stem}.csv, .md and .png")


if __name__ == "__main__":
    main()
