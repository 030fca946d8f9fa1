"""Pareto dominance and non-dominated sorting, which decide what the confirm phase re-runs,
checked against fronts worked out by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def test_front_share_is_one_for_a_clear_front_and_splits_between_two_within_noise():
    from nas.stats import front_share

    directions = ["maximize", "minimize"]
    seeds = range(6)
    clear = {s: [0.60, 1.0] for s in seeds}  # most accurate and cheapest: on every resample's front
    dominated = {s: [0.40, 2.0] for s in seeds}  # never
    # two at the same cost whose accuracies cross seed by seed: each leads about half the resamples
    a = {s: [0.50 + (0.01 if s % 2 else -0.01), 3.0] for s in seeds}
    b = {s: [0.50 + (-0.01 if s % 2 else 0.01), 3.0] for s in seeds}
    shares = front_share([clear, dominated, a, b], directions)
    assert shares[0] == 1.0 and shares[1] == 0.0
    # a and b are dominated by `clear` (more accurate and cheaper) on every resample, so 0 too;
    # without it, they share the front
    assert shares[2] == shares[3] == 0.0
    alone = front_share([a, b], directions)
    assert 0.3 < alone[0] < 0.7 and 0.3 < alone[1] < 0.7 and alone[0] + alone[1] >= 1.0
    assert front_share([a, b], directions) == alone  # seeded


def test_front_share_of_a_single_seed_each_is_the_front_itself():
    from nas.stats import front_share

    shares = front_share([{0: [0.5, 1.0]}, {0: [0.4, 2.0]}], ["maximize", "minimize"])
    assert shares == [1.0, 0.0]


@given(st.lists(st.tuples(st.sampled_from([0.1, 0.2, 0.3, NAN]), st.sampled_from([1.0, 2.0, 3.0, NAN])),
                min_size=1, max_size=9))
def test_the_bootstraps_front_is_the_front_pareto_ranks_computes(points):
    import numpy as np

    from nas.stats import _on_front

    directions = ["maximize", "minimize"]
    expected = [rank == 0 for rank in pareto_ranks([list(p) for p in points], directions)]
    assert _on_front(np.array(points, dtype=float) * np.array([-1.0, 1.0])).tolist() == expected
