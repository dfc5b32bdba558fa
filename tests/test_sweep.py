"""Gathering sweeps from `dvc.api.exp_show()`, on hand-made rows (tests/dvc_rows.py; the real command runs on
a real repository in test_pipeline.py)."""
import pytest
from dvc_rows import exp_rows
from dvc_rows import record as dvc_record

from sparsecl.report import sweep
from sparsecl.report.sweep import choose, gather, markdown, reference_arms

LAMBDA = "mechanism.ewc.lambda"


def record(rev, density, forgetting, name="", state=None):
    headline = {f"metrics/headline/{t}-none-s0.json": {"forgetting": f, "bwt": -f, "final_avg_loss": 4.0 + f}
                for t, f in (("dense", 1.0), ("random", forgetting))}
    return dvc_record(rev, {"density": density}, headline, name, state, deps={"data/tokens": "0" * 32 + ".dir"})


def test_gather_keeps_finished_records_once_and_skips_the_rest():
    queued = dvc_record("q1", {"density": 0.3}, {}, "queued-one", "Queued")  # no metrics yet
    failed = record("f1", 0.2, 0.5, name="broken", state="Failed")
    running = record("r1", 0.3, 0.1, name="busy", state="Running")
    tree = exp_rows(record("workspace", 0.1, 0.6),  # repeats the experiment `amber-fox`: dropped
                    record("main", 0.05, 0.8),  # the baseline commit, by its branch's name
                    record("e1e1e1e", 0.1, 0.6, name="amber-fox"), queued, failed, running)
    rows = gather(tree)
    assert [(r["experiment"], r["density"], r["topology"]) for r in rows] == [
        ("main", 0.05, "dense"), ("main", 0.05, "random"), ("amber-fox", 0.1, "dense"), ("amber-fox", 0.1, "random")]
    assert rows[1]["forgetting"] == 0.8 and rows[1]["seed"] == 0 and rows[1]["rev"] == "main"
    assert rows[1]["plasticity"] is None  # an older record without it: a gap, not a zero
    table = markdown(rows)
    assert "| 0.05 | 1.0000 | 0.8000 |" in table and "| 0.1 | 1.0000 | 0.6000 |" in table
    assert "## Plasticity" not in table  # no record has it
    assert reference_arms(rows, ("density",)) == {"dense-none"}  # its metrics do not move with density


def test_a_record_with_one_arm_has_bare_metric_columns_read_as_that_arms():
    """With one headline file DVC heads its columns `forgetting`, ...: the arm is the one the params name."""
    params = {"density": 0.1, "topologies": ["random"], "mechanisms": ["none"], "seeds": [3]}
    rows = exp_rows(dvc_record("abc1234", params, {"metrics/headline/random-none-s3.json": {"forgetting": 0.5}}))
    assert "forgetting" in rows[0] and rows[0]["seeds"] == "[3]"
    assert [(r["topology"], r["seed"], r["forgetting"]) for r in gather(rows)] == [("random", 3, 0.5)]


# A lambda sweep: `none` does not read the key (the same metrics in every record), EWC forgets less as lambda
# grows and learns worse; 1000 forgets least but learns 0.05 nats worse than the best, beyond the margin.
EWC = {  # lambda: (forgetting of dense-ewc seed 0, seed 1, random-ewc seed 0), plasticity of both ewc arms
    0.1: ((1.0, 1.2, 0.8), 3.00), 10: ((0.5, 0.7, 0.4), 3.01), 100: ((0.3, 0.5, 0.2), 3.015),
    1000: ((0.1, 0.1, 0.05), 3.05)}


def lambda_record(rev, lam, arms, mechanisms=("none", "ewc")):
    summary = {arm: {"forgetting": f, "plasticity": p, "bwt": -f, "final_avg_loss": p + f, "core_forgetting": f}
               for arm, (f, p) in arms.items()}
    params = {"density": 0.05, "mechanisms": list(mechanisms), "mechanism": {"ewc": {"lambda": lam, "gamma": 1.0}}}
    return dvc_record(rev, params, {f"metrics/headline/{arm}.json": m for arm, m in summary.items()}, f"exp-{rev}")


def lambda_records():
    exps = []
    for i, (lam, ((d0, d1, r0), p)) in enumerate(EWC.items()):
        arms = {"dense-none-s0": (1.5, 2.9), "random-none-s0": (1.1, 3.1),
                "dense-ewc-s0": (d0, p), "dense-ewc-s1": (d1, p), "random-ewc-s0": (r0, p + 0.1)}
        exps.append(lambda_record(f"{i}" * 7, lam, arms))
    # The baseline commit at lambda 1 (written as an integer: the same point as 1.0) with `none` only.
    base = lambda_record("b" * 7, 1, {"dense-none-s0": (1.5, 2.9), "random-none-s0": (1.1, 3.1)}, ["none"])
    return [base, *exps]


def lambda_tree():
    return exp_rows(*lambda_records())


def test_gather_any_swept_key_means_over_seeds_and_references():
    rows = gather(lambda_tree(), (LAMBDA,))
    assert [r[LAMBDA] for r in rows if r["mechanism"] == "ewc" and r["topology"] == "dense"] == [
        0.1, 0.1, 10.0, 10.0, 100.0, 100.0, 1000.0, 1000.0]
    assert {r[LAMBDA] for r in rows} == {0.1, 1.0, 10.0, 100.0, 1000.0}  # the integer 1 read as 1.0
    assert reference_arms(rows, (LAMBDA,)) == {"dense-none", "random-none"}
    table = markdown(rows, (LAMBDA,))
    assert table.startswith("# Sweep of `mechanism.ewc.lambda`")
    assert "| mechanism.ewc.lambda | dense-ewc | dense-none | random-ewc | random-none |" in table
    forgetting, plasticity = (table.split(f"## {t}")[1] for t in ("Forgetting", "Plasticity"))
    assert "| 10 | 0.6000 | 1.5000 | 0.4000 | 1.1000 |" in forgetting  # dense-ewc: mean of 0.5 and 0.7
    assert "| 1 | - | 1.5000 | - | 1.1000 |" in forgetting  # the baseline ran `none` only
    assert "| 1000 | 3.0500 | 2.9000 | 3.1500 | 3.1000 |" in plasticity
    assert "## Final average loss" in table


def test_the_tuning_rule_takes_least_forgetting_within_the_plasticity_margin():
    rows = gather(lambda_tree(), (LAMBDA,))
    pick = choose(rows, (LAMBDA,), margin=0.02)
    # 1000 forgets least but is 0.05 nats less plastic than 0.1; of 0.1, 10 and 100, 100 forgets least.
    assert pick["point"] == (100.0,) and pick["arms"] == ["dense-ewc", "random-ewc"]
    assert pick["admissible"] == [(0.1,), (10.0,), (100.0,)]
    assert choose(rows, (LAMBDA,), margin=0.1)["point"] == (1000.0,)
    assert "## Chosen" in markdown(rows, (LAMBDA,), pick) and "`mechanism.ewc.lambda` = 100:" in markdown(
        rows, (LAMBDA,), pick)
    assert choose(rows[:2], (LAMBDA,)) is None  # only `none` rows: nothing swept to pick for


def test_an_unknown_key_fails_naming_it_and_its_neighbours():
    with pytest.raises(SystemExit, match=r"'mechanism\.ewc\.lamda'.*under 'mechanism\.ewc' it has: gamma, lambda"):
        gather(lambda_tree(), ("mechanism.ewc.lamda",))
    with pytest.raises(SystemExit, match=r"'mechanism\.ewc' is \{.*cannot be swept"):
        gather(lambda_tree(), ("mechanism.ewc",))


def test_a_grid_of_two_keys_has_a_row_per_pair(tmp_path):
    def rec(rev, a, b, f):
        r = lambda_record(rev, 1.0, {"dense-derpp-s0": (f, 3.0)})
        # one headline file: DVC heads its columns by the bare key, and the params name the arm
        r["params"] |= {"mechanism.derpp.alpha": a, "mechanism.derpp.beta": b, "topologies": ["dense"],
                        "mechanisms": ["derpp"], "seeds": [0]}
        return r
    tree = exp_rows(rec("1" * 7, 0.1, 0.5, 0.9), rec("2" * 7, 0.1, 1.0, 0.8), rec("3" * 7, 0.3, 0.5, 0.7))
    keys = ("mechanism.derpp.alpha", "mechanism.derpp.beta")
    rows = gather(tree, keys)
    table = markdown(rows, keys)
    assert "| 0.1 | 0.5 | 0.9000 |" in table and "| 0.1 | 1 | 0.8000 |" in table and "| 0.3 | 0.5 | 0.7000 |" in table
    sweep.plot(rows, tmp_path / "grid.png", keys)
    assert (tmp_path / "grid.png").stat().st_size > 1000


def test_the_command_writes_table_plot_and_pick_for_a_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "exp_show", lambda all_commits=False: lambda_tree())
    sweep.main(["--key", LAMBDA, "--choose", "--out", str(tmp_path)])
    csv, md, png = (tmp_path / f"{LAMBDA}_forgetting.{ext}" for ext in ("csv", "md", "png"))
    csv = csv.read_text().splitlines()
    assert csv[0].startswith(f"experiment,rev,{LAMBDA},topology,mechanism,seed,forgetting,plasticity")
    assert "`mechanism.ewc.lambda` = 100:" in md.read_text()
    assert 'averaged over: `mechanisms` (["none", "ewc"], ["none"])' in md.read_text()  # the baseline's: said
    assert png.stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out
