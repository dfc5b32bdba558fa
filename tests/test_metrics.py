import math

import numpy as np
import pytest

from sparsecl.metrics.continual import (average_forgetting, backward_transfer, crossover, final_summary,
                                        forgetting_per_domain, forward_transfer, seen_mean_loss)

# Three phases over three domains; row j = after phase j, column i = evaluated on domain i.
L = np.array([[2.0, 5.0, 6.0],
              [2.5, 3.0, 5.5],
              [3.5, 3.4, 2.8]])
UNTRAINED = [7.0, 7.0, 7.0]


def test_forgetting_by_hand():
    # domain 0: final 3.5, best of phases 0..1 = 2.0 -> 1.5; domain 1: final 3.4, best of phase 1 = 3.0 -> 0.4
    assert forgetting_per_domain(L).tolist() == pytest.approx([1.5, 0.4])
    assert average_forgetting(L) == pytest.approx(0.95)


def test_forgetting_uses_best_earlier_loss_not_the_first():
    M = np.array([[3.0, 9.0, 9.0], [2.0, 4.0, 9.0], [2.5, 3.0, 2.0]])
    assert forgetting_per_domain(M).tolist() == pytest.approx([0.5, -1.0])


def test_bwt_by_hand():
    # ((2.0 - 3.5) + (3.0 - 3.4)) / 2
    assert backward_transfer(L) == pytest.approx(-0.95)


def test_fwt_by_hand():
    # ((7 - 5.0) + (7 - 5.5)) / 2
    assert forward_transfer(L, UNTRAINED) == pytest.approx(1.75)


def test_summary_by_hand():
    s = final_summary(L, UNTRAINED)
    assert s["final_avg_loss"] == pytest.approx((3.5 + 3.4 + 2.8) / 3)
    assert s["final_ppl_geomean"] == pytest.approx(math.exp((3.5 + 3.4 + 2.8) / 3))
    assert s["core_forgetting"] == pytest.approx(1.5)
    assert seen_mean_loss(L).tolist() == pytest.approx([2.0, 2.75, (3.5 + 3.4 + 2.8) / 3])


def test_crossover_clean_crossing_is_interpolated():
    # difference goes +1 -> -1 between points 1 and 2: crossing at 1.5
    assert crossover([5, 4, 2, 1], [4, 3, 3, 3]) == pytest.approx(1.5)


def test_crossover_that_reverts_is_not_counted_but_a_later_one_is():
    assert crossover([5, 2, 4, 4], [4, 3, 3, 3]) is None
    assert crossover([5, 2, 4, 2], [4, 3, 3, 3]) == pytest.approx(2.5)


def test_crossover_never_and_from_the_start():
    assert crossover([5, 5, 5], [4, 4, 4]) is None
    assert crossover([3, 3, 3], [4, 4, 4]) == 0.0


def test_crossover_persistence():
    assert crossover([5, 5, 2], [4, 4, 4], persist=2) is None
    assert crossover([5, 5, 2], [4, 4, 4], persist=1) is not None


def test_seen_mean_loss_of_a_matrix_with_more_domains_than_phases():
    L = np.arange(6.0).reshape(2, 3)  # two phases, three domains: the third is never trained
    assert seen_mean_loss(L).tolist() == [0.0, 3.5]
