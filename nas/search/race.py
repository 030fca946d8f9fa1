"""The confirm race: the search's best architectures on shared seeds, in rounds, the
significantly worse eliminated, until the leader separates or the budget ends.

    round 1: every architecture runs seeds CONFIRM_SEED_BASE + 0 .. repeats - 1
    after each round with at least MIN_SEEDS seeds (a planned look, `race_looks`), over the
    seeds each pair of remaining architectures has results for:
        every pair: paired t-test; an architecture some other remaining one beats with a p
        at or below the look's boundary is eliminated ("worse")
        leader = the best mean accuracy (the first accuracy objective; val, else test)
    round r + 1: the remaining ones run one more seed, CONFIRM_SEED_BASE + repeats + r - 1
    the race ends when only the leader is left ("separated"), at `max_repeats` seeds, or
    once `max_seconds` of training (summed over the confirm trials) are spent; without
    `until_separated` after round 1 (the confirm phase before the race)

The boundaries (`nas.sequential`) keep the chance of any false `worse` over the whole race,
all rounds and all pairs, at ALPHA: every pair is in the family (the leader is chosen on the
same seeds, so testing only against it would be biased), and alpha is spent over the planned
looks (the power family alpha * tau^10), the last look spending the rest.

The race is a function of the results per (architecture, seed) (`replay`), nothing else:
the driver derives it from the store before each round, so a launch stopped anywhere
continues where it stopped and never re-runs a finished (architecture, seed). The same
replay answers the question (`Race.groups`): the leader is `best`; whoever it could not
separate from is `not separated`, with its p and the difference the race could have detected
(80% power at the observed seed spread); an eliminated one is `worse` (with the p it was
eliminated on). Two architectures whose seeds cannot tell them apart are reported as such,
not ranked by a difference within the noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nas.db.schema import Phase
from nas.sequential import MIN_SEEDS, Looks, detectable_difference, pairwise
from nas.trials.plan import RESULTS, judged_accuracy

if TYPE_CHECKING:
    from nas.config.experiment import ConfirmSettings
    from nas.db import Store

CONFIRM_SEED_BASE = 10_000  # confirm seeds differ from search seeds: the search seed helped select the winner
BEST, TIED, WORSE = "best", "not separated", "worse"
GROUP_ORDER = {BEST: 0, TIED: 1, WORSE: 2}  # `nas export --rank` order: the best, the not separated, the worse

Results = Mapping[str, Mapping[int, "float | None"]]  # arch hash -> seed -> value (None: no accuracy)


def confirm_seeds(n: int) -> list[int]:
    """The first `n` confirm seeds; every architecture runs the same ones (paired)."""
    return [CONFIRM_SEED_BASE + i for i in range(n)]


def race_looks(settings: ConfirmSettings, archs: int) -> Looks | None:
    """The looks a race of `archs` plans: every round from MIN_SEEDS seeds (and from
    `repeats`) to `max_repeats`, or round 1 alone without `until_separated`; None: no test
    (fewer than 2 architectures, or no round reaches MIN_SEEDS)."""
    first = max(settings.repeats, MIN_SEEDS)
    last = settings.max_repeats if settings.until_separated else settings.repeats
    if archs < 2 or last < first:
        return None
    return Looks(arms=archs, seeds=tuple(range(first, last + 1)))


# ----------------------------------------------------------------------------- the decisions


@dataclass(frozen=True)
class Group:
    """Where an architecture ended up: best, not separated from the best, or worse."""

    decision: str  # best | not separated | worse
    p: float  # its verdict's p over the race (nan: best, or no test)
    round: int  # the round that decided it (the last decided one for best and not separated)
    # not separated: the spread of its differences to the best, their seeds, the round's boundary
    spread: float = math.nan
    pairs: int = 0
    boundary: float = math.nan

    @property
    def detectable(self) -> float:
        """The difference (fraction) the race finds at 80% power at the observed seed spread;
        nan unless not separated after a test."""
        return detectable_difference(self.spread, self.pairs, self.boundary) if self.decision == TIED else math.nan

    def text(self) -> str:
        return decision_text(self.decision, self.p, self.detectable)


def decision_text(decision: str, p: float, detectable: float = math.nan) -> str:
    """``best``, ``not separated (p=0.41; could detect >= 1.9 pts)``, ``worse (p=0.003)``;
    "" for no decision."""
    if decision in ("", BEST):
        return decision
    return f"{decision} {verdict_detail(decision, p, detectable)}"


def verdict_detail(decision: str, p: float, detectable: float = math.nan) -> str:
    """``(p=0.41; could detect >= 1.9 pts)`` (not separated), ``(p=0.003)`` (worse)."""
    could = f"; could detect >= {100 * detectable:.1f} pts" if decision == TIED and math.isfinite(detectable) else ""
    return f"({p_text(p)}{could})"


def p_text(p: float) -> str:
    """``p=0.41``, ``p=0.003``; nan (fewer than MIN_SEEDS paired seeds: no test) says so."""
    return f"p={p:.2g}" if math.isfinite(p) else f"untested: under {MIN_SEEDS} paired seeds"


@dataclass(frozen=True)
class Round:
    """One decided round: every remaining architecture ran `seeds`."""

    number: int  # from 1
    seeds: tuple[int, ...]  # run by every architecture of the round
    archs: tuple[str, ...]  # the remaining architectures at its start
    paired: tuple[int, ...]  # the seeds all of them have an accuracy for: the leader's means
    leader: str
    means: dict[str, float]  # mean accuracy over `paired`
    difference: dict[str, float]  # mean of (architecture - leader) over their shared seeds, all but the leader
    spread: dict[str, float]  # sd of those differences over the seeds (nan under 2)
    pairs: dict[str, int]  # seeds each shares with the leader
    p: dict[str, float]  # the verdict's p (nas.sequential stagewise), all but the leader; nan: no test
    eliminated: tuple[str, ...]  # significantly worse than another remaining one
    boundary: float = math.nan  # the per-pair p at or below which a pair separated this round (nan: no test)


@dataclass(frozen=True)
class Race:
    """The race as the results so far leave it."""

    rounds: tuple[Round, ...]  # the decided rounds
    remaining: tuple[str, ...]  # architectures not eliminated
    round: int  # the round to run next (or being run); after the end, the last decided one + 1
    to_run: tuple[tuple[str, int], ...]  # (arch, seed) that round still needs, seed-major; () when over
    stop: str = ""  # why it ended: separated | max_repeats | max_seconds | single round; "" while on

    @property
    def leader(self) -> str | None:
        return self.rounds[-1].leader if self.rounds else None

    def groups(self) -> dict[str, Group]:
        """best / not separated / worse per architecture decided so far (none before round 1 is done)."""
        if not self.rounds:
            return {}
        out = {h: Group(WORSE, r.p[h], r.number) for r in self.rounds for h in r.eliminated}
        last = self.rounds[-1]
        for h in self.remaining:
            if h == last.leader:
                out[h] = Group(BEST, math.nan, last.number)
            elif h in last.p:
                out[h] = Group(TIED, last.p[h], last.number, last.spread[h], last.pairs[h], last.boundary)
        return out


def replay(accuracy: Results, archs: Sequence[str], settings: ConfirmSettings,
           seconds: Results | None = None) -> Race:
    """The race over `archs` given the results so far: the decided rounds and what runs next.

    Args:
        accuracy: per architecture, per finished confirm seed, its accuracy (None or nan: the
            run ended without one; it counts as run, and is left out of the comparisons).
        archs: the architectures in the race (the search's top-K).
        settings: the experiment's confirm section (repeats, until_separated, max_repeats,
            max_seconds).
        seconds: per architecture and seed, train seconds (for `max_seconds`); None: none spent.
    """
    remaining = tuple(dict.fromkeys(archs))
    looks = race_looks(settings, len(remaining))
    rounds: list[Round] = []
    number = 1
    while remaining:
        seeds = tuple(confirm_seeds(settings.repeats + number - 1))
        to_run = tuple((h, s) for s in seeds for h in remaining if s not in accuracy.get(h, {}))
        if to_run:
            return Race(tuple(rounds), remaining, number, to_run)
        # the last round is known before its results are read: its look spends the rest of alpha
        final = bool(_last_round(settings, len(seeds), _spent(seconds, archs, seeds)))
        decided = decide(number, seeds, remaining, accuracy, looks, final)
        rounds.append(decided)
        remaining = tuple(h for h in remaining if h not in decided.eliminated)
        stop = _stop(settings, remaining, len(seeds), _spent(seconds, archs, seeds))
        if stop:
            return Race(tuple(rounds), remaining, number + 1, (), stop)
        number += 1
    return Race((), (), 1, (), "no architectures")


def decide(number: int, seeds: Sequence[int], archs: Sequence[str], accuracy: Results,
           looks: Looks | None, final: bool = False) -> Round:
    """Round `number`'s decision once every one of `archs` has run `seeds`: under `looks`
    (None: no test), at the look of len(seeds) seeds if one is planned; `final` spends the
    rest of alpha there."""
    values = np.array([[_value(accuracy[h].get(s)) for s in seeds] for h in archs])
    complete = np.isfinite(values).all(axis=0)
    paired = tuple(s for s, ok in zip(seeds, complete) if ok)
    means = {h: (float(values[i, complete].mean()) if paired else math.nan) for i, h in enumerate(archs)}
    # ties broken by hash, so every reader of the same results names the same leader
    leader = min(archs, key=lambda h: (-means[h] if math.isfinite(means[h]) else math.inf, h))
    lead = archs.index(leader)
    tests = pairwise(values)
    look = looks.index(len(seeds)) if looks is not None else None
    boundary = looks.boundary(look, final) if look is not None else math.nan
    p, eliminated = {}, []
    for i, h in enumerate(archs):
        if h == leader:
            continue
        # its smallest p against one it trails (a pair it leads cannot make it worse)
        trails = [tests.p[j, i] for j in range(len(archs)) if j != i and tests.mean[j, i] > 0
                  and math.isfinite(tests.p[j, i])]
        smallest = min(trails, default=math.nan if look is None or tests.n[lead, i] < MIN_SEEDS else 1.0)
        p[h] = looks.p_value(look, smallest) if look is not None else math.nan
        if look is not None and math.isfinite(smallest) and smallest <= boundary:
            eliminated.append(h)
    others = [i for i, h in enumerate(archs) if h != leader]
    return Round(number=number, seeds=tuple(seeds), archs=tuple(archs), paired=paired, leader=leader, means=means,
                 difference={archs[i]: float(tests.mean[i, lead]) for i in others},
                 spread={archs[i]: float(tests.sd[i, lead]) for i in others},
                 pairs={archs[i]: int(tests.n[i, lead]) for i in others},
                 p=p, eliminated=tuple(eliminated), boundary=boundary)


def repeat_groups(accuracy: Results, seeds: Sequence[int]) -> dict[str, Group]:
    """best / not separated / worse among the architectures with a result on every one of
    `seeds` (a search with seed repeats: each architecture ran the same seeds), decided as
    the race's one look would be: every pair, one look at len(seeds) spending all of alpha.
    Empty under 2 architectures; no test (p nan) under MIN_SEEDS seeds."""
    archs = sorted(h for h in accuracy if all(_finite(accuracy[h].get(s)) for s in seeds))
    if len(archs) < 2 or not seeds:
        return {}
    looks = Looks(arms=len(archs), seeds=(len(seeds),)) if len(seeds) >= MIN_SEEDS else None
    race = Race((decided := decide(1, seeds, archs, accuracy, looks, final=True),), tuple(
        h for h in archs if h not in decided.eliminated), 2, (), "single round")
    return race.groups()


def _stop(settings: ConfirmSettings, remaining: Sequence[str], seeds: int, spent: float) -> str:
    """Why the race ends after a round with `seeds` seeds, or "" to run another."""
    if not settings.until_separated:
        return "single round"
    if len(remaining) <= 1:
        return "separated"
    return _last_round(settings, seeds, spent)


def _last_round(settings: ConfirmSettings, seeds: int, spent: float) -> str:
    """Why a round with `seeds` seeds is the race's last whatever its results, or ""."""
    if not settings.until_separated:
        return "single round"
    if seeds >= settings.max_repeats:
        return "max_repeats"
    if settings.max_seconds is not None and spent >= settings.max_seconds:
        return "max_seconds"
    return ""


def _spent(seconds: Results | None, archs: Sequence[str], seeds: Sequence[int]) -> float:
    """Train seconds of the race's runs on `seeds` (those of the rounds so far): the same
    sum on every replay, so whether a round was due never changes once it has started."""
    if seconds is None:
        return 0.0
    upto = set(seeds)
    return sum(v for h in archs for s, v in seconds.get(h, {}).items() if s in upto and _finite(v))


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _value(value: float | None) -> float:
    return float(value) if _finite(value) else math.nan


# ----------------------------------------------------------------------------- from the store


def race_metric(objectives: Sequence[str]) -> str:
    """The accuracy the race compares: the first objective that is one (val_acc, the default,
    reads val, else test)."""
    return next((m for m in objectives if m in ("val_acc", "test_acc")), "val_acc")


def stored_results(store: Store, experiment_id: int, metric: str = "val_acc") -> tuple[dict, dict, list[str]]:
    """(accuracy, seconds, archs) of an experiment's finished confirm runs, for `replay`:
    by architecture and seed; archs in the order they first ran."""
    accuracy: dict[str, dict[int, float | None]] = {}
    seconds: dict[str, dict[int, float | None]] = {}
    trials = store.trials(experiment_id=experiment_id, phase=Phase.CONFIRM)
    for trial in sorted(trials, key=lambda t: t.id):
        if trial.status not in RESULTS or trial.seed in accuracy.get(trial.arch_hash, {}):
            continue
        value = trial.final_test_acc if metric == "test_acc" else judged_accuracy(trial.final_val_acc,
                                                                                   trial.final_test_acc)
        accuracy.setdefault(trial.arch_hash, {})[trial.seed] = value
        seconds.setdefault(trial.arch_hash, {})[trial.seed] = trial.train_seconds
    return accuracy, seconds, list(accuracy)


def stored_race(store: Store, experiment_id: int, settings: ConfirmSettings, metric: str = "val_acc",
                archs: Sequence[str] | None = None) -> Race:
    """The race of an experiment as its store holds it; `archs` None: every confirmed one."""
    accuracy, seconds, found = stored_results(store, experiment_id, metric)
    return replay(accuracy, found if archs is None else archs, settings, seconds)


# ----------------------------------------------------------------------------- in words


def round_line(race: Race, names: Mapping[str, str]) -> str:
    """``confirm round 2: 3 architectures x seed 10002 (leader R:L3 w=0.25; eliminated: X:L1 (p=0.01))``."""
    seeds = sorted({s for _, s in race.to_run})
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
    full = len(race.remaining) * len(seeds)
    left = "" if len(race.to_run) == full else f", {len(race.to_run)} of {full} runs left"
    line = f"confirm round {race.round}: {len(race.remaining)} architectures x {seed_text}{left}"
    if not race.rounds:
        return line
    last = race.rounds[-1]
    out = "; eliminated: " + ", ".join(f"{names.get(h, h)} ({p_text(last.p[h])})" for h in last.eliminated) \
        if last.eliminated else ""
    return f"{line} (leader {names.get(last.leader, last.leader)}{out})"


STOP_WORDS = {
    "separated": "the leader separated",
    "max_repeats": "max_repeats reached",
    "max_seconds": "max_seconds spent",
    "single round": "one round: until_separated is off",
}


def decision_line(race: Race, names: Mapping[str, str]) -> str:
    """``confirm decision after 4 seeds (the leader separated): best A; not separated: B (p=0.41; could
    detect >= 1.9 pts); worse: C (p=0.003)``."""
    groups = race.groups()
    if not groups:
        return "confirm decision: none yet (round 1 is not complete)"
    parts = []
    for decision in (BEST, TIED, WORSE):
        members = [h for h in groups if groups[h].decision == decision]
        if members:
            label = f"{decision} " if decision == BEST else f"{decision}: "
            parts.append(label + ", ".join(names.get(h, h) + ("" if decision == BEST else " " + verdict_detail(
                decision, groups[h].p, groups[h].detectable)) for h in members))
    seeds = len(race.rounds[-1].seeds)
    why = STOP_WORDS.get(race.stop, race.stop or "stopped")
    return f"confirm decision after {seeds} seeds ({why}): " + "; ".join(parts)
