"""Gathering the density sweep from `dvc exp show --json`, on a hand-made record tree (the real command
runs on a real repository in test_pipeline.py)."""
from sparsecl.report.sweep import gather, markdown


def record(rev, density, forgetting, name=None, **extra):
    headline = {f"metrics/headline/{t}-none-s0.json": {"data": {"forgetting": f, "bwt": -f, "final_avg_loss": 4.0 + f}}
                for t, f in (("dense", 1.0), ("random", forgetting))}
    return {"rev": rev, "name": name, "error": None, **extra,
            "data": {"params": {"params.yaml": {"data": {"density": density}}},
                     "metrics": headline}}


def test_gather_keeps_finished_records_once_and_skips_the_rest():
    queued = {"rev": "q1", "name": "queued-one", "data": {"params": {"params.yaml": {"data": {"density": 0.3}}},
                                                          "metrics": {}}}  # no metrics yet
    failed = record("f1", 0.2, 0.5, name="broken") | {"error": {"type": "ReproductionError"}}
    running = {"name": "busy", "executor": {"state": "running"}, "revs": [record("r1", 0.3, 0.1, name="busy")]}
    tree = [record("workspace", 0.1, 0.6),  # repeats the experiment `amber-fox`: dropped
            record("abc1234def", 0.05, 0.8, name="main", experiments=[
                {"name": "amber-fox", "executor": None, "revs": [record("e1e1e1e1", 0.1, 0.6, name="amber-fox")]},
                {"name": "queued-one", "executor": {"state": "queued", "name": "dvc-task"}, "revs": [queued]},
                {"name": "broken", "executor": None, "revs": [failed]}, running])]
    rows = gather(tree)
    assert [(r["experiment"], r["density"], r["topology"]) for r in rows] == [
        ("main", 0.05, "dense"), ("main", 0.05, "random"), ("amber-fox", 0.1, "dense"), ("amber-fox", 0.1, "random")]
    assert rows[1]["forgetting"] == 0.8 and rows[1]["seed"] == 0 and rows[1]["rev"] == "abc1234"
    table = markdown(rows)
    assert "| 0.05 | 1.0000 | 0.8000 |" in table and "| 0.1 | 1.0000 | 0.6000 |" in table
