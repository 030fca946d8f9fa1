"""The confirm phase: the search's best architectures again, on fresh seeds, unpruned.

The top-K are ranked on the search's objective values (non-dominated first, then the first
objective); each runs `confirm.repeats` seeds from `CONFIRM_SEED_BASE`, the same seeds for
every architecture, so their results pair. Afterwards only the most accurate seed's weights
of each architecture are kept (what `nas export` writes).
"""

from __future__ import annotations

from nas.config.experiment import ExperimentSpec
from nas.db import Store
from nas.db.schema import Phase, TrialStatus
from nas.models.arch import ArchConfig
from nas.stats import pareto_ranks
from nas.trials.plan import RESULTS, TrialPlan, judged_accuracy

CONFIRM_SEED_BASE = 10_000  # confirm seeds differ from search seeds: the search seed helped select the winner


def top_architectures(values: dict[str, list[list[float]]], spec: ExperimentSpec, store: Store,
                      k: int) -> list[ArchConfig]:
    """The `k` best architectures of the search (`SearchController.completed_values`):
    mean objective values per architecture, Pareto rank first, then the first objective."""
    if not values:
        return []
    hashes = sorted(values)
    means = [[sum(col) / len(col) for col in zip(*values[h])] for h in hashes]
    directions = spec.search.directions
    ranks = pareto_ranks(means, directions)
    sign = -1.0 if directions[0] == "maximize" else 1.0
    order = sorted(range(len(hashes)), key=lambda i: (ranks[i], sign * means[i][0], hashes[i]))
    return [ArchConfig.from_json(store.get_architecture(hashes[i]).config_json) for i in order[:k]]


def confirm_plans(top: list[ArchConfig], spec: ExperimentSpec, store: Store, experiment_id: int) -> list[TrialPlan]:
    """`top` x `confirm.repeats` seeds, minus the (architecture, seed) runs already done."""
    done = {(t.arch_hash, t.seed) for t in store.trials(experiment_id=experiment_id, phase=Phase.CONFIRM)
            if t.status in RESULTS}
    plans = []
    for arch in top:
        for i in range(spec.confirm.repeats):
            seed = CONFIRM_SEED_BASE + i
            if (arch.hash, seed) not in done:
                plans.append(TrialPlan(arch=arch, seed=seed, phase=Phase.CONFIRM, save_weights=True))
    return plans


def keep_best_weights(store: Store, experiment_id: int) -> None:
    """Of each confirmed architecture, keep the weights of its most accurate seed only."""
    kept = set(store.trials_with_weights(experiment_id))
    best: dict[str, tuple[float, int]] = {}
    for trial in store.trials(experiment_id=experiment_id, phase=Phase.CONFIRM, status=TrialStatus.COMPLETED):
        if trial.id not in kept:
            continue
        acc = judged_accuracy(trial.final_val_acc, trial.final_test_acc) or 0.0
        if trial.arch_hash not in best or acc > best[trial.arch_hash][0]:
            best[trial.arch_hash] = (acc, trial.id)
    store.delete_weights(sorted(kept - {trial_id for _, trial_id in best.values()}))
