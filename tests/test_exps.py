"""The experiments table (`python -m sparsecl.report.exps`) on hand-made `dvc.api.exp_show()` rows
(tests/dvc_rows.py)."""
import pytest
from dvc_rows import exp_rows
from dvc_rows import record as dvc_record

from sparsecl.report.exps import rows, table


def record(rev, name, density, forgetting, state=None):
    arms = {f"metrics/headline/{t}-none-s0.json": {"forgetting": f + forgetting, "final_avg_loss": 6.0}
            for t, f in (("dense", 0.0), ("narrow", 0.1), ("random", 0.2))}
    return dvc_record(rev, {"density": density, "seeds": [0]},
                      {**arms, "metrics/verdicts/H1_random.json": {"diff": 0.3}}, name, state)


def exp_tree():
    # The baseline commit by its branch's name ("main"), an experiment by its rev and name, a queued one.
    return exp_rows(record("workspace", "", 0.1, 1.5), record("main", "", 0.05, 2.0),
                    record("b" * 7, "exp-one", 0.1, 1.5), record("c" * 7, "queued", 0.2, 9.9, state="Queued"))


def test_one_row_per_finished_record_with_the_varying_params_and_each_arms_headline():
    text = table(rows(exp_tree()))
    head, rule, *lines = text.splitlines()
    assert head.split() == ["experiment", "density", "forgetting:", "dense", "narrow", "random", "final_avg_loss:",
                            "dense", "narrow", "random"]  # seeds do not vary: not a column
    assert [line.split()[:2] for line in lines] == [["workspace", "0.1"], ["main", "0.05"], ["bbbbbbb", "exp-one"]]
    assert lines[1].split()[1:] == ["0.05", "2.000", "2.100", "2.200", "6.000", "6.000", "6.000"]
    assert lines[2].split()[3:6] == ["1.500", "1.600", "1.700"] and "9.9" not in text  # the queued one is left out
    assert all(len(line) <= 160 for line in text.splitlines())


def test_unknown_metric_and_no_records_fail_naming_what_is_wrong():
    with pytest.raises(SystemExit, match="--metric accuracy: not a headline metric"):
        table(rows(exp_tree()), ("forgetting", "accuracy"))
    with pytest.raises(SystemExit, match="no finished experiment with metrics/headline/"):
        table(rows([]))
