"""Experiment 1: density vs forgetting, gathered from DVC's own records of finished experiments.

    dvc exp run --queue -S density=0.01,0.05,0.1,0.2,0.3 && dvc queue start     # the sweep
    python -m sparsecl.report.sweep                                             # table and plot

Reads `dvc exp show --json` (the workspace, the baseline commit and its experiments; `--all-commits`
for every commit's) and keeps each record that has params.yaml's `density` and metrics/headline/.
Queued, running and failed experiments are skipped (by their executor's state, or an error, or no
summary metrics); the workspace is skipped
when it only repeats an experiment (as it does after `dvc exp run`). One row per (record, arm):
`<out>/density_forgetting.csv`; means over seeds and repeated records per density and arm:
`<out>/density_forgetting.md` and `.png`, with the dense arm as a reference line (dense masks do
not depend on density).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from sparsecl.io import write_text
from sparsecl.report import plots  # first: it selects the Agg backend
from sparsecl.report.analyze import csv_text
import matplotlib.pyplot as plt  # noqa: E402  isort: skip

HEADLINE_DIR = "metrics/headline/"  # the declared metrics: <arm>.json each
VALUES = ("forgetting", "bwt", "final_avg_loss", "core_forgetting")


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


def gather(exp_json: list) -> list[dict]:
    """One row per (finished record, arm): experiment, rev, density, topology, mechanism, seed, metrics."""
    finished = []
    for rec in records(exp_json):
        params = _file_data(rec["data"], "params", "params.yaml")
        summary = headline_arms(rec["data"])
        if rec.get("error") or "density" not in params or not summary:
            continue
        finished.append((rec, params["density"], summary))
    # The workspace last, so a workspace that repeats an experiment is the copy that is dropped.
    finished.sort(key=lambda f: f[0].get("rev") == "workspace")
    rows, seen = [], set()
    for rec, density, summary in finished:
        key = json.dumps([density, summary], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        rev = str(rec.get("rev") or "")
        for arm, m in summary.items():
            if not isinstance(m, dict) or "forgetting" not in m:
                continue
            topology, mechanism, seed = arm.rsplit("-", 2)
            rows.append({"experiment": rec.get("name") or rev[:7], "rev": rev[:7], "density": density,
                         "topology": topology, "mechanism": mechanism, "seed": int(seed.removeprefix("s")),
                         **{v: m[v] for v in VALUES if v in m}})
    return sorted(rows, key=lambda r: (r["density"], r["topology"], r["mechanism"], r["seed"]))


def _means(rows: list[dict], value: str) -> dict[tuple[str, float], float]:
    """(topology-mechanism, density) -> mean over seeds and records."""
    groups = defaultdict(list)
    for r in rows:
        if value in r:
            groups[(f"{r['topology']}-{r['mechanism']}", r["density"])].append(r[value])
    return {k: float(np.mean(v)) for k, v in groups.items()}


def markdown(rows: list[dict]) -> str:
    densities = sorted({r["density"] for r in rows})
    lines = ["# Density sweep", "",
             f"{len({r['rev'] for r in rows})} finished records from `dvc exp show`; each cell is the mean over "
             "seeds and records, in nats (forgetting > 0 = forgot). The dense arm is the reference: its mask "
             "does not depend on density.", ""]
    for value, title in (("forgetting", "Forgetting"), ("final_avg_loss", "Final average loss")):
        means = _means(rows, value)
        arms = sorted({a for a, _ in means})
        lines += [f"## {title}", "", "| density | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
        lines += [f"| {d:g} | " + " | ".join(f"{means[a, d]:.4f}" if (a, d) in means else "-" for a in arms) + " |"
                  for d in densities]
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    densities = sorted({r["density"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for ax, value, title in zip(axes, ("forgetting", "final_avg_loss"), ("forgetting", "final average loss")):
        means = _means(rows, value)
        for arm in sorted({a for a, _ in means}):
            points = sorted((d, v) for (a, d), v in means.items() if a == arm)
            if arm.startswith("dense-"):
                ax.axhline(np.mean([v for _, v in points]), ls="--", color="k", lw=1, label=f"{arm} (reference)")
            else:
                ax.plot(*zip(*points), marker="o", label=arm)
        ax.set_xscale("log")
        ax.set_xticks(densities, [f"{d:g}" for d in densities], minor=False)
        ax.minorticks_off()
        ax.set_xlabel("density")
        ax.set_ylabel(f"{title} (nats)")
        ax.set_title(f"{title} vs density")
    axes[0].legend(fontsize=7)
    plots.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="sweep", help="output folder (default: sweep)")
    parser.add_argument("--all-commits", action="store_true", help="records of every commit, not only HEAD's")
    args = parser.parse_args(argv)
    rows = gather(exp_show(args.all_commits))
    if not rows:
        raise SystemExit("error: no finished experiment with metrics/headline/ in `dvc exp show`")
    out = Path(args.out)
    write_text(out / "density_forgetting.csv", csv_text(rows))
    text = markdown(rows)
    write_text(out / "density_forgetting.md", text)
    plot(rows, out / "density_forgetting.png")
    print(text)
    print(f"wrote {out}/density_forgetting.csv, .md and .png")


if __name__ == "__main__":
    main()
