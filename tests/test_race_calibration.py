"""The race's verdicts hold their stated error: simulated races through the real decision code.

Every shipped YAML's confirm settings (each budget too) and every search with seed repeats
(`repeat_groups`) are played on simulated paired results (`nas.search.race_calibration`):
with no true differences, the share of races with any `worse` is at most 0.05 within Monte
Carlo error; with one architecture ahead, the race keeps at least 0.85 of the power of one
fixed-size test at its most seeds with the same family of comparisons (what it gives up for
stopping early). Seeded, so a failure is a real change, not a bad draw.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from nas.config.experiment import ConfirmSettings, load_experiment
import nas.search.race as race_module
from nas.search.race import replay
from nas.search.race_calibration import fixed_size, simulate
from nas.sequential import ALPHA, MIN_SEEDS, Looks

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
ARCHS = (2, 3, 4, 8, 11)
NULL_RACES = 2000  # Monte Carlo s.e. of a 0.05 share: 0.0049
POWER_RACES = 600


def shipped() -> list[ConfirmSettings | int]:
    """The distinct confirm settings of every shipped YAML and budget, and each search's seed
    repeats (an int) where it has them."""
    found: dict[object, ConfirmSettings | int] = {}
    for path in sorted(SPACES.glob("*.yaml")):
        for budget in [None, *yaml.safe_load(path.read_text()).get("budgets", {})]:
            spec = load_experiment(path, budget)
            c = spec.confirm
            if c.until_separated:
                found[("race", c.repeats, c.max_repeats)] = ConfirmSettings(
                    top_k=c.top_k, repeats=c.repeats, until_separated=True, max_repeats=c.max_repeats)
            else:
                found[("round", c.repeats)] = ConfirmSettings(top_k=c.top_k, repeats=c.repeats)
            if spec.search.repeats >= 2:
                found[("repeats", spec.search.repeats)] = spec.search.repeats
    return list(found.values())


SETTINGS = shipped()


def _label(setting) -> str:
    if isinstance(setting, int):
        return f"search-repeats-{setting}"
    if setting.until_separated:
        return f"race-{setting.repeats}to{setting.max_repeats}"
    return f"round-{setting.repeats}"


def test_the_shipped_settings_include_races_single_rounds_and_search_repeats():
    labels = {_label(s) for s in SETTINGS}
    assert {"race-3to6", "race-5to10", "round-5", "search-repeats-10"} <= labels


@pytest.mark.parametrize("archs", ARCHS)
@pytest.mark.parametrize("setting", SETTINGS, ids=_label)
def test_with_no_true_difference_any_worse_is_at_most_alpha(setting, archs):
    (null,) = simulate([setting], archs, effect=0.0, races=NULL_RACES, seed=archs)
    assert null.share <= ALPHA + 3 * null.se, f"false-worse rate {null.share:.3f} (s.e. {null.se:.3f})"
    # and not a race that never decides: the error it is allowed is mostly used
    assert null.share >= 0.02, f"false-worse rate {null.share:.3f}: far below {ALPHA}, the race is too timid"


@pytest.mark.parametrize(("archs", "effect"), [(2, 1.0), (2, 2.0), (3, 2.0), (4, 2.0), (8, 4.0), (11, 5.0)])
@pytest.mark.parametrize("setting", [s for s in SETTINGS if not isinstance(s, int) and s.until_separated],
                         ids=_label)
def test_a_race_keeps_most_of_the_power_of_one_test_at_its_most_seeds(setting, archs, effect):
    race, fixed = simulate([setting, fixed_size(setting)], archs, effect, POWER_RACES, seed=100 + archs)
    if fixed.share < 0.1:
        pytest.skip(f"one test at {fixed_size(setting).repeats} seeds separates {archs} architectures "
                    f"{effect} sd apart in {fixed.share:.3f} of races: too rare to compare powers")
    assert race.share >= 0.85 * fixed.share, f"race {race.share:.3f} vs fixed {fixed.share:.3f}"
    assert race.mean_seeds <= fixed.mean_seeds  # it stops early, never late


def test_a_clear_leader_ends_the_race_before_its_most_seeds():
    setting = ConfirmSettings(repeats=5, until_separated=True, max_repeats=10)
    race, fixed = simulate([setting, fixed_size(setting)], 2, effect=3.0, races=200, seed=5)
    assert race.share > 0.95 and race.mean_seeds < 0.85 * fixed.mean_seeds


def test_the_check_fails_a_race_that_tests_every_round_at_full_alpha(monkeypatch):
    """The check can fail: a race whose every look spends all of alpha (the rule before
    `nas.sequential`) is far over 0.05 on the same simulated races."""
    setting = ConfirmSettings(repeats=3, until_separated=True, max_repeats=6)
    (honest,) = simulate([setting], 4, 0.0, 1000, seed=1)
    monkeypatch.setattr(race_module, "race_looks", lambda settings, archs: _FullAlphaEveryLook(archs, (3, 4, 5, 6)))
    (naive,) = simulate([setting], 4, 0.0, 1000, seed=1)
    assert honest.share <= ALPHA + 3 * honest.se < naive.share


class _FullAlphaEveryLook:
    """Looks that test each round as if it were the only one."""

    def __init__(self, archs: int, seeds: tuple[int, ...]):
        self.single = {n: Looks(arms=archs, seeds=(n,)) for n in seeds}

    def index(self, seeds: int) -> int | None:
        return seeds if seeds in self.single else None

    def boundary(self, look: int, final: bool = False) -> float:
        return self.single[look].boundary(0, True)

    def p_value(self, look: int, p: float) -> float:
        return self.single[look].p_value(0, p)


def test_a_round_under_min_seeds_tests_nothing():
    accuracy = {"a": {10_000: 0.9, 10_001: 0.91}, "b": {10_000: 0.5, 10_001: 0.52}}
    race = replay(accuracy, ["a", "b"], ConfirmSettings(repeats=2))
    groups = race.groups()
    assert groups["a"].decision == "best" and groups["b"].decision == "not separated"
    assert math.isnan(groups["b"].p) and f"under {MIN_SEEDS} paired seeds" in groups["b"].text()


def test_a_family_too_large_to_simulate_takes_the_union_bound_and_still_holds_alpha(monkeypatch):
    import nas.sequential as sequential

    assert type(sequential._null(Looks(arms=40, seeds=tuple(range(3, 11))))).__name__ == "_UnionBound"
    monkeypatch.setattr(sequential, "MAX_SIMULATED", 0)  # every plan through the union bound
    setting = ConfirmSettings(repeats=3, until_separated=True, max_repeats=6)
    (null,) = simulate([setting], 4, 0.0, 1000, seed=3)
    assert null.share <= ALPHA + 3 * null.se  # valid for any dependence: conservative
    looks = Looks(arms=4, seeds=(3, 4, 5, 6))
    last = len(looks.seeds) - 1
    boundary = looks.boundary(last)
    # worse <=> its p over the race is at most alpha, at the last look as at any
    assert looks.p_value(last, boundary) == pytest.approx(ALPHA) and looks.separates(last, boundary)
    assert not looks.separates(last, boundary * 1.01)
