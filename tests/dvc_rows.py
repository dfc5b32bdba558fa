"""Hand-made `dvc.api.exp_show()` rows, written as DVC writes them (dvc/repo/experiments/show.py's tabulate and
dvc/api/experiments.py's postprocessing): one row per record with DVC's own columns, a column per metrics
file key (`<file>:<key>`, the bare key where no other file or param has it), a column per flat params key,
every cell a float where its text reads as one and its text otherwise (a list as Python writes it), a
record without a file None, and a file without the key "None". The real command runs in test_pipeline.py."""
from collections import Counter


def record(rev: str, params: dict, metrics: dict[str, dict], experiment: str = "", state: str | None = None,
           deps: dict[str, str] | None = None) -> dict:
    """One record: `params` params.yaml's (nested), `metrics` {file: its figures}, `deps` {path: hash}."""
    return {"rev": rev, "experiment": experiment, "state": state, "params": flat(params), "metrics": metrics,
            "deps": deps or {}}


def flat(node: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in node.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _cell(value):
    text = str(value)
    try:
        return float(text)
    except ValueError:
        return text


def exp_rows(*records: dict) -> list[dict]:
    names = {}  # file -> its keys, in order
    for r in records:
        for file, figures in r["metrics"].items():
            names.setdefault(file, {}).update(dict.fromkeys(figures))
        names.setdefault("params.yaml", {}).update(dict.fromkeys(r["params"]))
    count = Counter([k for keys in names.values() for k in keys])
    header = {(file, k): k if count[k] == 1 else f"{file}:{k}" for file, keys in names.items() for k in keys}
    deps = list(dict.fromkeys(d for r in records for d in r["deps"]))
    rows = []
    for r in records:
        row = {"Experiment": r["experiment"], "rev": r["rev"], "typ": "baseline" if not r["experiment"] else
               "branch_commit", "Created": None, "parent": None, "State": r["state"], "Executor": None}
        for (file, k), column in header.items():
            data = r["params"] if file == "params.yaml" else r["metrics"].get(file)
            row[column] = None if data is None else _cell(data.get(k))
        row.update({d: r["deps"].get(d) for d in deps})
        rows.append(row)
    return rows
