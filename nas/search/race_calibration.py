"""The race's error and power, measured by simulation through its own code (`replay`).

Races are played on simulated paired results: architecture h's accuracy on seed s is
    true_mean[h] + seed_effect[s] + sd * N(0, 1)
(the seed effect hits every architecture alike and is paired away; the noise is each run's
own). With every true mean equal, any `worse` is false: the share of races with one is the
race's realised family-wise error. With one architecture `effect` seed-sds ahead of the
others (equal among themselves), the share of races that end with it alone, as `best`, is
its power to separate. The same races against one fixed-size test at the race's most seeds
with the same family (all pairs, alpha 0.05) show what stopping early costs.

Used by tests/test_race_calibration.py (asserted) and benchmarks/race_calibration.py (the
table in docs/statistics.md). Seeded: the same call gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from nas.search.race import BEST, WORSE, Group, confirm_seeds, repeat_groups, replay

if TYPE_CHECKING:
    from nas.config.experiment import ConfirmSettings

SD = 0.01  # seed sd of one run's accuracy (1 point); the race is free of its scale
SEED_SD = 0.02  # spread of the effect a seed has on every architecture alike


@dataclass(frozen=True)
class Measured:
    """A share of simulated races with its Monte Carlo standard error, and their seeds."""

    races: int
    share: float  # of races with the event (any worse; or separated)
    mean_seeds: float  # seeds run per architecture, mean over races

    @property
    def se(self) -> float:
        return math.sqrt(max(self.share * (1 - self.share), 1e-12) / self.races)


def fixed_size(settings: ConfirmSettings) -> ConfirmSettings:
    """One round at the race's most seeds: the fixed-size test the race is compared with."""
    return replace(settings, repeats=most_seeds(settings), until_separated=False, max_seconds=None)


def most_seeds(settings: ConfirmSettings | int) -> int:
    """The most seeds an architecture runs: a race's max_repeats (repeats without the race);
    an int stands for a search with that many seed repeats (`repeat_groups`)."""
    if isinstance(settings, int):
        return settings
    return settings.max_repeats if settings.until_separated else settings.repeats


def simulate(settings: Sequence[ConfirmSettings | int], archs: int, effect: float, races: int,
             seed: int = 0) -> list[Measured]:
    """`races` races of `archs` architectures under each of `settings` (an int: a search with
    that many seed repeats, judged by `repeat_groups`), all on the same simulated results
    (common random numbers: their differences are not simulation noise). `effect` 0: the
    share with any false `worse`; else the first architecture is `effect` seed-sds ahead and
    the share is of races that end with it alone as `best`."""
    most = max(map(most_seeds, settings))
    names = [f"a{i:02d}" for i in range(archs)]
    rng = np.random.default_rng([seed, archs, most, round(effect * 1000)])
    truth = np.zeros(archs)
    truth[0] = effect * SD
    hits, seeds_run = np.zeros(len(settings)), np.zeros(len(settings))
    for _ in range(races):
        values = 0.5 + truth[:, None] + SEED_SD * rng.standard_normal(most)[None, :] \
            + SD * rng.standard_normal((archs, most))
        for i, setting in enumerate(settings):
            groups, seeds_run_now = _judge(setting, names, values)
            if effect == 0:
                hits[i] += any(g.decision == WORSE for g in groups.values())
            else:
                hits[i] += groups[names[0]].decision == BEST and all(
                    g.decision == WORSE for h, g in groups.items() if h != names[0])
            seeds_run[i] += seeds_run_now
    return [Measured(races, hits[i] / races, seeds_run[i] / races) for i in range(len(settings))]


def _judge(setting: ConfirmSettings | int, names: list[str], values: np.ndarray) -> tuple[dict[str, Group], float]:
    """The verdicts on `values` (architectures x seeds) and the seeds each ran, on average."""
    if isinstance(setting, int):
        seeds = list(range(setting))
        return repeat_groups({h: dict(zip(seeds, map(float, row[:setting]))) for h, row in zip(names, values)},
                             seeds), float(setting)
    seeds = confirm_seeds(values.shape[1])
    race = replay({h: dict(zip(seeds, map(float, row))) for h, row in zip(names, values)}, names, setting)
    # an architecture ran the seeds of the last round it was in
    ran = {h: len(r.seeds) for r in race.rounds for h in r.archs}
    return race.groups(), sum(ran.values()) / len(names)
