"""Per-architecture results of an experiment, read from the store.

One `ArchResult` per architecture and phase: its seeds' final metrics summarised with a
95% CI (nas.stats), and its Pareto rank among the architectures of that phase.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from nas.db import Experiment, Store
from nas.errors import ConfigError
from nas.stats import SeedSummary, pareto_ranks, summarize


@dataclass(frozen=True)
class ArchResult:
    arch_hash: str
    short_name: str
    phase: str
    seeds: int  # completed seeds
    accuracy: SeedSummary  # val accuracy when the data has a val split, else test
    test_acc: SeedSummary
    train_seconds: SeedSummary
    params: int
    flops: int
    rank: int = -1  # Pareto rank among this phase's architectures (0 = front)


def require_experiment(store: Store, name: str) -> Experiment:
    """The experiment called `name`; a ConfigError listing the ones there are otherwise."""
    found = store.get_experiment(name)
    if found is None:
        names = ", ".join(e.name for e in store.experiments()) or "none yet"
        raise ConfigError(f"no experiment named {name!r} in the store; experiments: {names}.")
    return found


def objectives_of(store: Store, experiment_name: str) -> list[tuple[str, str]]:
    """(metric, direction) pairs of an experiment, from its stored config."""
    experiment = store.get_experiment(experiment_name)
    if experiment is None or not experiment.config_json:
        return [("val_acc", "maximize"), ("train_seconds", "minimize")]
    config = json.loads(experiment.config_json)
    return [(o["metric"], o["direction"]) for o in config["search"]["objectives"]]


def arch_results(store: Store, experiment_name: str, phase: str) -> list[ArchResult]:
    """Completed trials of one phase grouped by architecture, best Pareto rank first."""
    experiment = store.get_experiment(experiment_name)
    if experiment is None:
        return []
    groups = defaultdict(list)
    for trial in store.trials(experiment_id=experiment.id, phase=phase, status="completed"):
        groups[trial.arch_hash].append(trial)
    rows = []
    for arch_hash, trials in groups.items():
        arch = store.get_architecture(arch_hash)
        accuracy = [t.final_val_acc if t.final_val_acc is not None else t.final_test_acc for t in trials]
        rows.append(ArchResult(
            arch_hash=arch_hash, short_name=arch.short_name, phase=phase, seeds=len(trials),
            accuracy=summarize(accuracy), test_acc=summarize([t.final_test_acc for t in trials]),
            train_seconds=summarize([t.train_seconds for t in trials]),
            params=arch.params, flops=arch.flops,
        ))
    if not rows:
        return []
    objectives = objectives_of(store, experiment_name)
    points = [[_metric(row, metric) for metric, _ in objectives] for row in rows]
    ranks = pareto_ranks(points, [direction for _, direction in objectives])
    rows = [_with_rank(row, rank) for row, rank in zip(rows, ranks)]
    first_sign = -1.0 if objectives[0][1] == "maximize" else 1.0
    return sorted(rows, key=lambda r: (r.rank, first_sign * _metric(r, objectives[0][0]), r.arch_hash))


def _metric(row: ArchResult, metric: str) -> float:
    return {
        "val_acc": row.accuracy.mean, "test_acc": row.test_acc.mean,
        "train_seconds": row.train_seconds.mean, "params": float(row.params), "flops": float(row.flops),
    }[metric]


def _with_rank(row: ArchResult, rank: int) -> ArchResult:
    from dataclasses import replace

    return replace(row, rank=rank)
