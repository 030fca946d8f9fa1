"""`nas ablate`, the contribution table: each variant against the reference on paired seeds.

A variant "matters" when its Holm-adjusted paired t-test p-value is below 0.05: its
difference to the reference is beyond seed noise even after testing every variant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nas.db import Store
from nas.db.schema import Phase, TrialStatus
from nas.stats import (
    PairedDifference,
    SeedSummary,
    holm_adjust,
    paired_difference,
    summarize,
)
from nas.trials.experiment import require_experiment
from nas.trials.plan import judged_accuracy

ALPHA = 0.05  # family-wise error rate of the "matters" mark (Holm)
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
    accuracy: PairedDifference  # variant - reference, fraction (val accuracy, else test)
    holm_p: float  # the paired t-test p-value, Holm-adjusted over the table's variants
    train_seconds: float  # mean paired difference of training wall seconds (nan: none)
    params: int  # variant - reference
    flops: int  # variant - reference, per image

    @property
    def matters(self) -> bool:
        """The difference is beyond seed noise: Holm-adjusted p below ALPHA (so the 95% CI
        excludes 0 too)."""
        return math.isfinite(self.holm_p) and self.holm_p < ALPHA


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
    confirm and ablation); the accuracy difference gets a paired t 95% CI and p-value, and
    the p-values are Holm-adjusted across the variants. Rows are sorted by the mean
    accuracy difference, most harmful first (variants with fewer than two pairs last).
    Reads only: the dashboard calls it too.
    """
    found = require_experiment(store, experiment)
    results = _results(store, found.id)
    reference = store.get_architecture(reference_hash)
    ref_by_seed = results.get(reference_hash, {})
    drafts = []
    used_seeds: set[int] = set()
    for link in store.ablation_variants(found.id, reference_hash):
        arch = store.get_architecture(link.arch_hash)
        var_by_seed = results.get(link.arch_hash, {})
        seeds = tuple(sorted(set(var_by_seed) & set(ref_by_seed)))
        used_seeds.update(seeds)
        accuracy = paired_difference([_acc(var_by_seed[s]) for s in seeds], [_acc(ref_by_seed[s]) for s in seeds])
        seconds = paired_difference(
            [var_by_seed[s].train_seconds for s in seeds], [ref_by_seed[s].train_seconds for s in seeds]
        ).mean
        drafts.append(dict(
            change=link.change, key=link.key, move=link.move, arch_hash=link.arch_hash,
            short_name=arch.short_name, seeds=seeds, accuracy=accuracy, train_seconds=seconds,
            params=arch.params - reference.params, flops=arch.flops - reference.flops,
        ))
    adjusted = holm_adjust([d["accuracy"].p_value for d in drafts])
    rows = [Contribution(**d, holm_p=p) for d, p in zip(drafts, adjusted)]
    rows.sort(key=lambda r: (r.accuracy.n < 2 or not math.isfinite(r.accuracy.mean),
                             r.accuracy.mean if math.isfinite(r.accuracy.mean) else 0.0, r.change))
    ref_trials = [ref_by_seed[s] for s in sorted(used_seeds or ref_by_seed)]
    return AblationReport(
        experiment=experiment, reference_hash=reference_hash, reference_name=reference.short_name,
        reference_accuracy=summarize([_acc(t) for t in ref_trials]),
        reference_seconds=summarize([t.train_seconds for t in ref_trials]),
        reference_params=reference.params, reference_flops=reference.flops, rows=tuple(rows),
    )


def _results(store: Store, experiment_id: int) -> dict[str, dict[int, Any]]:
    """Completed trials by architecture and seed; a confirm result wins over an ablation one."""
    out: dict[str, dict[int, Any]] = {}
    for phase in RESULT_PHASES:
        for trial in store.trials(experiment_id=experiment_id, phase=phase, status=TrialStatus.COMPLETED):
            out.setdefault(trial.arch_hash, {}).setdefault(trial.seed, trial)
    return out


def _acc(trial) -> float | None:
    return judged_accuracy(trial.final_val_acc, trial.final_test_acc)
