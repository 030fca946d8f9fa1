"""Pareto dominance and non-dominated sorting, which decide what the confirm phase re-runs,
checked against fronts worked out by hand."""

from __future__ import annotations

import pytest

from nas.stats import dominates, pareto_front, pareto_ranks

ACC_TIME = ("maximize", "minimize")  # (val_acc, train_seconds), the default objectives


@pytest.mark.parametrize(("a", "b", "expected"), [
    ((0.9, 10.0), (0.8, 20.0), True),  # better on both
    ((0.9, 20.0), (0.8, 20.0), True),  # better on one, equal on the other
    ((0.9, 30.0), (0.8, 20.0), False),  # a trade-off: neither dominates
    ((0.8, 20.0), (0.8, 20.0), False),  # equal points do not dominate each other
    ((0.8, 20.0), (0.9, 10.0), False),  # worse on both
])
def test_dominates_reads_each_objective_in_its_direction(a, b, expected):
    assert dominates(a, b, ACC_TIME) is expected


def test_dominates_flips_with_the_direction():
    assert dominates((1.0, 1.0), (2.0, 2.0), ("minimize", "minimize"))
    assert not dominates((1.0, 1.0), (2.0, 2.0), ("maximize", "maximize"))
    assert dominates((2.0, 2.0), (1.0, 1.0), ("maximize", "maximize"))


def test_dominates_needs_one_direction_per_objective():
    with pytest.raises(ValueError):
        dominates((1.0, 2.0), (1.0, 2.0), ("maximize",))


def test_pareto_ranks_peel_fronts_as_worked_by_hand():
    # accuracy up, seconds down:
    #   A (0.94, 80)  B (0.92, 50)  C (0.90, 30)   front 0: nothing beats them on both
    #   D (0.91, 60)  dominated by B only -> front 1
    #   E (0.89, 70)  dominated by B, C, D -> front 2 (D is front 1)
    #   F (0.90, 30)  equal to C: not dominated by it -> front 0
    points = [(0.94, 80), (0.92, 50), (0.90, 30), (0.91, 60), (0.89, 70), (0.90, 30)]
    assert pareto_ranks(points, ACC_TIME) == [0, 0, 0, 1, 2, 0]
    assert pareto_front(points, ACC_TIME) == [0, 1, 2, 5]


def test_a_single_objective_ranks_in_order_with_ties_sharing_a_rank():
    assert pareto_ranks([(0.5,), (0.7,), (0.6,), (0.7,)], ("maximize",)) == [2, 0, 1, 0]


def test_three_objectives_and_empty_input():
    directions = ("maximize", "minimize", "minimize")
    points = [(0.9, 10, 5), (0.9, 10, 6), (0.8, 5, 6)]
    # the second is dominated by the first (more FLOPs, nothing better); the third trades off
    assert pareto_ranks(points, directions) == [0, 1, 0]
    assert pareto_ranks([], directions) == []


NAN = float("nan")


@pytest.mark.parametrize("missing", [NAN, None])
def test_a_missing_accuracy_is_the_worst_never_a_tie(missing):
    directions = ["maximize", "minimize"]
    # a diverged run (no accuracy) at the same cost does not dominate one at 45%; the reverse holds
    assert not dominates([missing, 1.0], [0.45, 1.0], directions)
    assert dominates([0.45, 1.0], [missing, 1.0], directions)
    # a missing cost is the worst cost too
    assert dominates([0.5, 2.0], [0.5, missing], directions) and not dominates([0.5, missing], [0.5, 2.0], directions)
    # two missing values tie
    assert not dominates([missing, 1.0], [missing, 1.0], directions)
    assert pareto_ranks([[missing, 1.0], [0.45, 1.0], [0.5, 2.0]], directions) == [1, 0, 0]


def test_a_paired_test_needs_three_seeds():
    from nas.stats import paired_difference, paired_t_pvalue

    # two seeds with one difference repeated: before, p ~ 1e-15 and an elimination
    two = paired_difference([0.50, 0.52], [0.49, 0.51])
    assert two.n == 2 and two.mean == pytest.approx(0.01) and two.p_value != two.p_value  # nan
    assert paired_t_pvalue([0.50, 0.52], [0.49, 0.51]) != paired_t_pvalue([0.50, 0.52], [0.49, 0.51])
    three = paired_difference([0.50, 0.52, 0.53], [0.49, 0.51, 0.515])
    assert 0.0 < three.p_value < 0.05
