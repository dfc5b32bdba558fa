"""The experiments table (`python -m sparsecl.report.exps`) on a hand-made `dvc exp show --json` record tree."""
import pytest

from sparsecl.report.exps import rows, table


def record(rev, name, density, forgetting, executor=None):
    arms = {f"metrics/headline/{t}-none-s0.json": {"data": {"forgetting": f + forgetting, "final_avg_loss": 6.0}}
            for t, f in (("dense", 0.0), ("narrow", 0.1), ("random", 0.2))}
    return {"rev": rev, "name": name, "executor": executor,
            "data": {"rev": rev, "params": {"params.yaml": {"data": {"density": density, "seeds": [0]}}},
                     "metrics": {**arms, "metrics/verdicts/H1_random.json": {"data": {"diff": 0.3}}}}}


def exp_tree():
    baseline = {**record("a" * 40, "main", 0.05, 2.0),
                "experiments": [{"revs": [record("b" * 40, "exp-one", 0.1, 1.5)]},
                                {"revs": [record("c" * 40, "queued", 0.2, 9.9, executor={"state": "queued"})]}]}
    return [record("workspace", None, 0.1, 1.5), baseline]


def test_one_row_per_finished_record_with_the_varying_params_and_each_arms_headline():
    text = table(rows(exp_tree()))
    head, rule, *lines = text.splitlines()
    assert head.split() == ["experiment", "density", "forgetting:", "dense", "narrow", "random", "final_avg_loss:",
                            "dense", "narrow", "random"]  # seeds do not vary: not a column
    assert [line.split()[:2] for line in lines] == [["workspace", "0.1"], ["aaaaaaa", "main"], ["bbbbbbb", "exp-one"]]
    assert lines[1].split()[2:] == ["0.05", "2.000", "2.100", "2.200", "6.000", "6.000", "6.000"]
    assert lines[2].split()[3:6] == ["1.500", "1.600", "1.700"] and "9.9" not in text  # the queued one is left out
    assert all(len(line) <= 160 for line in text.splitlines())


def test_unknown_metric_and_no_records_fail_naming_what_is_wrong():
    with pytest.raises(SystemExit, match="--metric accuracy: not a headline metric"):
        table(rows(exp_tree()), ("forgetting", "accuracy"))
    with pytest.raises(SystemExit, match="no finished experiment with metrics/headline/"):
        table(rows([]))
