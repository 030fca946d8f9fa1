"""The confirm race: the search's best architectures on shared seeds, in rounds, the
significantly worse eliminated, until the leader separates or the budget ends.

    round 1: every architecture runs seeds CONFIRM_SEED_BASE + 0 .. repeats - 1
    after each round, over the seeds every remaining architecture has a result for:
        leader = the best mean accuracy (the first accuracy objective; val, else test)
        each other one against the leader: paired t-test (`nas.stats.paired_difference`),
        Holm-adjusted over the round's comparisons (`nas.stats.holm_adjust`);
        adjusted p < ALPHA with a negative mean difference -> eliminated ("worse")
    round r + 1: the remaining ones run one more seed, CONFIRM_SEED_BASE + repeats + r - 1
    the race ends when only the leader is left ("separated"), at `max_repeats` seeds, or
    once `max_seconds` of training (summed over the confirm trials) are spent; without
    `until_separated` after round 1 (the confirm phase before the race)

The race is a function of the results per (architecture, seed) (`replay`), nothing else:
the driver derives it from the store before each round, so a launch stopped anywhere
continues where it stopped and never re-runs a finished (architecture, seed). The same
replay answers the question (`Race.groups`): the leader is `best`; whoever it could not
separate from is `tied` (with the Holm-adjusted p of that comparison); an eliminated one is
`worse` (with the p it was eliminated on). Ties are honest: two architectures whose seeds
cannot tell them apart are reported as such, not ranked by a difference within the noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nas.db.schema import Phase
from nas.stats import holm_adjust, paired_difference
from nas.trials.plan import RESULTS, judged_accuracy

if TYPE_CHECKING:
    from nas.config.experiment import ConfirmSettings
    from nas.db import Store

ALPHA = 0.05  # family-wise error rate of one round's eliminations (Holm)
CONFIRM_SEED_BASE = 10_000  # confirm seeds differ from search seeds: the search seed helped select the winner
BEST, TIED, WORSE = "best", "tied", "worse"
GROUP_ORDER = {BEST: 0, TIED: 1, WORSE: 2}  # `nas export --rank` order: the best, the tied, the worse

Results = Mapping[str, Mapping[int, "float | None"]]  # arch hash -> seed -> value (None: no accuracy)


def confirm_seeds(n: int) -> list[int]:
    """The first `n` confirm seeds; every architecture runs the same ones (paired)."""
    return [CONFIRM_SEED_BASE + i for i in range(n)]


# ----------------------------------------------------------------------------- the decisions


@dataclass(frozen=True)
class Group:
    """Where an architecture ended up: best, tied with the best, or worse."""

    decision: str  # best | tied | worse
    p: float  # Holm-adjusted p of its comparison with the leader (nan: best, or too few seeds)
    round: int  # the round that decided it (the last decided one for best and tied)

    def text(self) -> str:
        return decision_text(self.decision, self.p)


def decision_text(decision: str, p: float) -> str:
    """``best``, ``tied (p=0.41)``, ``worse (p=0.003)``; "" for no decision."""
    if decision in ("", BEST):
        return decision
    return f"{decision} ({p_text(p)})"


def p_text(p: float) -> str:
    """``p=0.41``, ``p=0.003``; nan (fewer than 2 paired seeds: no test) says so."""
    return f"p={p:.2g}" if math.isfinite(p) else "untested: under 2 paired seeds"


@dataclass(frozen=True)
class Round:
    """One decided round: every remaining architecture ran `seeds`."""

    number: int  # from 1
    seeds: tuple[int, ...]  # run by every architecture of the round
    archs: tuple[str, ...]  # the remaining architectures at its start
    paired: tuple[int, ...]  # the seeds all of them have an accuracy for: the ones compared
    leader: str
    means: dict[str, float]  # mean accuracy over `paired`
    difference: dict[str, float]  # mean of (architecture - leader) over `paired`, all but the leader
    p: dict[str, float]  # Holm-adjusted p of the paired t-test against the leader, all but the leader
    eliminated: tuple[str, ...]  # significantly worse than the leader


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
        """best / tied / worse per architecture decided so far (none before round 1 is done)."""
        if not self.rounds:
            return {}
        out = {h: Group(WORSE, r.p[h], r.number) for r in self.rounds for h in r.eliminated}
        last = self.rounds[-1]
        for h in self.remaining:
            if h == last.leader:
                out[h] = Group(BEST, math.nan, last.number)
            elif h in last.p:
                out[h] = Group(TIED, last.p[h], last.number)
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
    rounds: list[Round] = []
    number = 1
    while remaining:
        seeds = tuple(confirm_seeds(settings.repeats + number - 1))
        to_run = tuple((h, s) for s in seeds for h in remaining if s not in accuracy.get(h, {}))
        if to_run:
            return Race(tuple(rounds), remaining, number, to_run)
        decided = decide(number, seeds, remaining, accuracy)
        rounds.append(decided)
        remaining = tuple(h for h in remaining if h not in decided.eliminated)
        stop = _stop(settings, remaining, len(seeds), _spent(seconds, archs, seeds))
        if stop:
            return Race(tuple(rounds), remaining, number + 1, (), stop)
        number += 1
    return Race((), (), 1, (), "no architectures")


def decide(number: int, seeds: Sequence[int], archs: Sequence[str], accuracy: Results) -> Round:
    """Round `number`'s decision once every one of `archs` has run `seeds`."""
    paired = tuple(s for s in seeds if all(_finite(accuracy[h].get(s)) for h in archs))
    means = {h: (sum(accuracy[h][s] for s in paired) / len(paired) if paired else math.nan) for h in archs}
    # ties broken by hash, so every reader of the same results names the same leader
    leader = min(archs, key=lambda h: (-means[h] if math.isfinite(means[h]) else math.inf, h))
    others = [h for h in archs if h != leader]
    diffs = {h: paired_difference([accuracy[h][s] for s in paired], [accuracy[leader][s] for s in paired])
             for h in others}
    adjusted = dict(zip(others, holm_adjust([diffs[h].p_value for h in others])))
    eliminated = tuple(h for h in others if math.isfinite(adjusted[h]) and adjusted[h] < ALPHA
                       and diffs[h].mean < 0)
    return Round(number=number, seeds=tuple(seeds), archs=tuple(archs), paired=paired, leader=leader,
                 means=means, difference={h: diffs[h].mean for h in others}, p=adjusted, eliminated=eliminated)


def repeat_groups(accuracy: Results, seeds: Sequence[int]) -> dict[str, Group]:
    """best / tied / worse among the architectures with a result on every one of `seeds` (a
    search with seed repeats: each architecture ran the same seeds), decided as one race round
    is: each against the leader, paired, Holm-adjusted. Empty under 2 architectures or seeds."""
    archs = sorted(h for h in accuracy if all(_finite(accuracy[h].get(s)) for s in seeds))
    if len(archs) < 2 or len(seeds) < 2:
        return {}
    decided = decide(1, seeds, archs, accuracy)
    groups = {h: Group(WORSE if h in decided.eliminated else TIED, decided.p[h], 1) for h in decided.p}
    groups[decided.leader] = Group(BEST, math.nan, 1)
    return groups


def _stop(settings: ConfirmSettings, remaining: Sequence[str], seeds: int, spent: float) -> str:
    """Why the race ends after a round with `seeds` seeds, or "" to run another."""
    if not settings.until_separated:
        return "single round"
    if len(remaining) <= 1:
        return "separated"
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
    """``confirm decision after 4 seeds (the leader separated): best A; tied: B (p=0.41); worse: C (p=0.003)``."""
    groups = race.groups()
    if not groups:
        return "confirm decision: none yet (round 1 is not complete)"
    parts = []
    for decision in (BEST, TIED, WORSE):
        members = [h for h in groups if groups[h].decision == decision]
        if members:
            label = f"{decision} " if decision == BEST else f"{decision}: "
            parts.append(label + ", ".join(
                names.get(h, h) + ("" if decision == BEST else f" ({p_text(groups[h].p)})") for h in members))
    seeds = len(race.rounds[-1].seeds)
    why = STOP_WORDS.get(race.stop, race.stop or "stopped")
    return f"confirm decision after {seeds} seeds ({why}): " + "; ".join(parts)
