"""The confirm phase: the search's best architectures again, on fresh seeds, unpruned.

The top-K are ranked on the search's objective values (non-dominated first, then the first
objective) and race on shared seeds from `CONFIRM_SEED_BASE` (`nas.search.race`): round 1
runs `confirm.repeats` seeds each, later rounds one more seed for those not yet
significantly worse than another. Afterwards only the first confirm seed's weights of each
architecture are kept (what `nas export` writes): a fixed seed, so the exported weights'
accuracy is one unselected draw, not the best of several.
"""

from __future__ import annotations

from nas.config.experiment import ExperimentSpec
from nas.db import Store
from nas.db.schema import Phase, TrialStatus
from nas.models.arch import ArchConfig
from nas.search.race import CONFIRM_SEED_BASE, Race, race_metric, stored_race
from nas.stats import pareto_ranks
from nas.trials.plan import TrialPlan

# CONFIRM_SEED_BASE lives with the race; it is here too, where the ablation and the seeded
# dashboard store have always found it
__all__ = ["CONFIRM_SEED_BASE", "confirm_plans", "confirm_race", "keep_first_seed_weights", "top_architectures"]


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


def confirm_race(top: list[ArchConfig], spec: ExperimentSpec, store: Store, experiment_id: int) -> Race:
    """The race of `top` as the store holds it: decided rounds, and the runs the next one needs."""
    metric = race_metric([o.metric for o in spec.search.objectives])
    return stored_race(store, experiment_id, spec.confirm, metric, [arch.hash for arch in top])


def confirm_plans(race: Race, top: list[ArchConfig]) -> list[TrialPlan]:
    """The runs `race` needs next, seed-major (each seed's architectures together, so a round
    cut short leaves whole seeds paired), weights kept for `nas export`."""
    by_hash = {arch.hash: arch for arch in top}
    return [TrialPlan(arch=by_hash[h], seed=seed, phase=Phase.CONFIRM, save_weights=True)
            for h, seed in race.to_run]


def keep_first_seed_weights(store: Store, experiment_id: int) -> None:
    """Of each confirmed architecture, keep the weights of its first completed confirm seed
    only: chosen by its seed, not its accuracy (the most accurate of 5 seeds is on average
    about 1.2 seed-sds above the architecture's mean, and the export would claim it)."""
    kept = set(store.trials_with_weights(experiment_id))
    first: dict[str, tuple[int, int]] = {}
    for trial in store.trials(experiment_id=experiment_id, phase=Phase.CONFIRM, status=TrialStatus.COMPLETED):
        if trial.id in kept and (trial.arch_hash not in first or trial.seed < first[trial.arch_hash][0]):
            first[trial.arch_hash] = (trial.seed, trial.id)
    store.delete_weights(sorted(kept - {trial_id for _, trial_id in first.values()}))
