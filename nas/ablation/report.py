"""`nas ablate`, the contribution table: each variant against the reference on paired seeds.

A variant "matters" when its difference to the reference is beyond seed noise with the
study's error stated: the chance that any variant of the study is said to matter when none
changes the accuracy is at most 0.05, over every variant and every round of
`--until-separated` (`nas.sequential`, the family "against the first": each variant against
the reference, two-sided; alpha spent over the study's planned looks, stored with its plan).
Its p is that procedure's (the stagewise-ordered p of the look that decided it, or of its
last look).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nas.db import Store
from nas.db.schema import Phase, TrialStatus
from nas.sequential import AGAINST_FIRST, Looks
from nas.stats import MIN_SEEDS, PairedDifference, SeedSummary, paired_difference, summarize
from nas.trials.experiment import require_experiment
from nas.trials.plan import judged_accuracy

RESULT_PHASES = (Phase.CONFIRM, Phase.ABLATION)  # where a result of (architecture, seed) may come from



@dataclass(frozen=True)
class Contribution:
    """One variant against the reference, over the seeds both have results for."""

    change: str  # e.g. "L1.residual 1 -> 0"
    key: str  # dotted ArchConfig key changed
    move: str  # off | down | up
    arch_hash: str
    short_name: str
    seeds: tuple[int, ...]  # the paired seeds
    accuracy: PairedDifference  # variant - reference, fraction (val accuracy, else test), all paired seeds
    p: float  # over the study: every variant, every look (nas.sequential); nan: no test (under 3 seeds)
    separated: bool  # its p at a look was at or below that look's boundary
    train_seconds: float  # mean paired difference of training wall seconds (nan: none)
    params: int  # variant - reference
    flops: int  # variant - reference, per image

    @property
    def matters(self) -> bool:
        """The difference is beyond seed noise, the study's error held at 0.05."""
        return self.separated


@dataclass(frozen=True)
class AblationReport:
    """The contribution table of one reference: its variants, most harmful change first."""

    experiment: str
    reference_hash: str
    reference_name: str
    reference_accuracy: SeedSummary  # over the seeds any variant is paired on
    reference_seconds: SeedSummary
    reference_params: int
    reference_flops: int
    rows: tuple[Contribution, ...]


def ablation_references(store: Store, experiment: str) -> list[str]:
    """Hashes of the architectures ablated in an experiment, most recent study first."""
    found = store.get_experiment(experiment)
    if found is None:
        return []
    latest: dict[str, Any] = {}
    for link in store.ablation_variants(found.id):
        if link.reference_hash not in latest or link.created_at > latest[link.reference_hash]:
            latest[link.reference_hash] = link.created_at
    return sorted(latest, key=lambda h: latest[h], reverse=True)


def contributions(store: Store, experiment: str, reference_hash: str) -> AblationReport:
    """The contribution table of `reference_hash`'s ablation in `experiment`, read from the store.

    Each variant is paired, seed by seed, with the reference's completed results (phases
    confirm and ablation); the accuracy difference gets a paired t 95% CI, and the verdict
    replays the study's looks (`_verdict`). Rows are sorted by the mean accuracy difference,
    most harmful first (variants with fewer than two pairs last). Reads only: the dashboard
    calls it too.
    """
    found = require_experiment(store, experiment)
    results = _results(store, found.id)
    reference = store.get_architecture(reference_hash)
    ref_by_seed = results.get(reference_hash, {})
    rows = []
    used_seeds: set[int] = set()
    links = store.ablation_variants(found.id, reference_hash)
    for link in links:
        arch = store.get_architecture(link.arch_hash)
        var_by_seed = results.get(link.arch_hash, {})
        seeds = tuple(sorted(set(var_by_seed) & set(ref_by_seed)))
        used_seeds.update(seeds)
        accuracy = paired_difference([_acc(var_by_seed[s]) for s in seeds], [_acc(ref_by_seed[s]) for s in seeds])
        seconds = paired_difference(
            [var_by_seed[s].train_seconds for s in seeds], [ref_by_seed[s].train_seconds for s in seeds]
        ).mean
        p, separated = _verdict([_acc(var_by_seed[s]) for s in seeds], [_acc(ref_by_seed[s]) for s in seeds],
                                len(links) + 1, (link.first_look, link.last_look))
        rows.append(Contribution(
            change=link.change, key=link.key, move=link.move, arch_hash=link.arch_hash,
            short_name=arch.short_name, seeds=seeds, accuracy=accuracy, p=p, separated=separated,
            train_seconds=seconds, params=arch.params - reference.params, flops=arch.flops - reference.flops,
        ))
    rows.sort(key=lambda r: (r.accuracy.n < 2 or not math.isfinite(r.accuracy.mean),
                             r.accuracy.mean if math.isfinite(r.accuracy.mean) else 0.0, r.change))
    ref_trials = [ref_by_seed[s] for s in sorted(used_seeds or ref_by_seed)]
    return AblationReport(
        experiment=experiment, reference_hash=reference_hash, reference_name=reference.short_name,
        reference_accuracy=summarize([_acc(t) for t in ref_trials]),
        reference_seconds=summarize([t.train_seconds for t in ref_trials]),
        reference_params=reference.params, reference_flops=reference.flops, rows=tuple(rows),
    )


def study_looks(repeats: int, last: int) -> tuple[int, int]:
    """A study's planned (first, last) look in seeds: from `repeats` (and MIN_SEEDS) to `last`
    (`max_repeats` with --until-separated, else `repeats`); first > last: no test planned."""
    return max(repeats, MIN_SEEDS), last


def _verdict(variant: list[float | None], reference: list[float | None], arms: int,
             looks: tuple[int | None, int | None]) -> tuple[float, bool]:
    """(p, separated) of one variant, its results and the reference's on their paired seeds in
    seed order, replaying the study's looks: at each planned look its seeds reach, the paired
    t-test on that many first seeds against the look's boundary; the first that separates
    decides, else the last reached. Looks (None, None), a study stored before they were: one
    look at the seeds it has."""
    first, last = looks
    if first is None or last is None:
        first = last = len(variant)
    if first > last or len(variant) < first or first < MIN_SEEDS:
        return math.nan, False
    plan = Looks(arms=arms, seeds=tuple(range(first, last + 1)), family=AGAINST_FIRST)
    p = math.nan
    for look, n in enumerate(plan.seeds):
        if n > len(variant):
            break
        raw = paired_difference(variant[:n], reference[:n]).p_value
        p = plan.p_value(look, raw)
        if plan.separates(look, raw):
            return p, True
    return p, False


def _results(store: Store, experiment_id: int) -> dict[str, dict[int, Any]]:
    """Completed trials by architecture and seed; a confirm result wins over an ablation one."""
    out: dict[str, dict[int, Any]] = {}
    for phase in RESULT_PHASES:
        for trial in store.trials(experiment_id=experiment_id, phase=phase, status=TrialStatus.COMPLETED):
            out.setdefault(trial.arch_hash, {}).setdefault(trial.seed, trial)
    return out


def _acc(trial) -> float | None:
    return judged_accuracy(trial.final_val_acc, trial.final_test_acc)
