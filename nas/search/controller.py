"""The Optuna side of a search, in the driver: the studies, ask, prune, tell.

Pruning rule: Optuna's pruners are single-objective, so they watch one curve, the first
objective that is an accuracy (val_acc or test_acc), reported at steps 0, 1, ... (epochs).
In a multi-objective search every trial has a twin in a companion study named
``<experiment>:pruning`` that holds that curve; its pruner decides, and the main study
records the trial as PRUNED while its sampler optimises all objectives.

The controller never runs or records a trial: `nas.search.launch` gives its `ask`,
`should_prune` and `tell` to a `nas.trials.batch.TrialBatch`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.config.experiment import ExperimentSpec, Objective, SearchSettings
from nas.db import Store, optuna_storage
from nas.db.schema import Phase, TrialStatus
from nas.db.write_behind import WriteBehind
from nas.models.arch import ArchConfig
from nas.search.curves import IndexedPercentilePruner, indexed
from nas.search.history import BoundedHistory
from nas.search.pruning import NoiseMargin, PruneReason, pilot_size, pruning_gate, with_warmup
from nas.search.studies import MirroredStudy, record
from nas.trials.plan import FINISHED, TrialPlan

CURVE_METRICS = ("val_acc", "test_acc")  # metrics reported every epoch, so prunable


@dataclass
class SearchPlan(TrialPlan):
    """A search trial: a plan with the Optuna trial(s) it reports to."""

    optuna_trial: optuna.Trial | None = None  # in the main study
    prune_trial: optuna.Trial | None = None  # the trial whose curve the pruner watches
    curve: dict[int, float] = field(default_factory=dict)  # what it reported, by epoch


def grid_points(spec: ExperimentSpec) -> dict[str, list[dict[str, Any]]]:
    """The grid's points by the architecture they build, in the grid's order."""
    points: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for point in spec.space.grid():
        points[spec.space.suggest(optuna.trial.FixedTrial(point)).hash].append(point)
    return points


def planned_architectures(spec: ExperimentSpec) -> int:
    """The architectures a search plans: a grid's distinct ones, a sampler's `n_trials`."""
    return len(grid_points(spec)) if spec.search.sampler == "grid" else spec.search.n_trials


def prune_objective(search: SearchSettings) -> Objective | None:
    """The objective a pruner watches: the first accuracy objective, if any."""
    return next((o for o in search.objectives if o.metric in CURVE_METRICS), None)


class SearchController:
    """Samples, prunes and closes the search trials of one experiment in its Optuna studies.

    Args:
        spec: the experiment.
        store: read for the seeds each architecture has used.
        experiment_id: its id in the store.
        db_url: the store's URL; the studies live in the same database.
        costs: (params, FLOPs) of an architecture, for cost objectives.
    """

    def __init__(self, spec: ExperimentSpec, store: Store, experiment_id: int, db_url: str,
                 costs: Callable[[ArchConfig], tuple[int, int]]) -> None:
        search = spec.search
        self.spec = spec
        self.store = store  # the finished trials' Optuna mirror joins its transactions (same database)
        self.costs = costs
        self.prune_metric = prune_objective(search)
        # Never inside the LR warm-up, unless the YAML says from when (nas.search.pruning).
        self.prune_from = pruning_gate(search.pruner, spec.recipe)
        margin = NoiseMargin.of(search.pruner)
        pruner = with_warmup(search.pruner, spec.recipe)
        storage = optuna_storage(db_url)
        # In memory, each finished trial written to the database study (nas.search.studies); TPE
        # sees a bounded history (nas.search.history); the median/percentile pruner and the
        # margin decide from an index of the curves (nas.search.curves): flat costs per trial.
        sampler = search.build_sampler()
        if isinstance(sampler, optuna.samplers.TPESampler):
            sampler = BoundedHistory(sampler)
        self.main = MirroredStudy(spec.name, storage, search.directions, sampler=sampler,
                                  pruner=indexed(pruner.build(), margin if len(search.objectives) == 1 else None),
                                  metric_names=[o.metric for o in search.objectives])
        self.study = self.main.study
        self.pruning: MirroredStudy | None = None
        self.prune_study: optuna.Study | None = None
        if len(search.objectives) > 1 and self.prune_metric is not None and search.pruner.kind != "none":
            self.pruning = MirroredStudy(f"{spec.name}:pruning", storage, [self.prune_metric.direction],
                                         pruner=indexed(pruner.build(), margin),
                                         metric_names=[self.prune_metric.metric])
            self.prune_study = self.pruning.study
        # the launch's queued writes (nas.db.write_behind), in order with the trials' rows; None: at once
        self.writes: WriteBehind | None = None
        self.used_seeds: dict[str, set[int]] = defaultdict(set)
        self.finished: dict[str, int] = defaultdict(int)  # search trials that need no re-run, by architecture
        self.finished_seeds: dict[str, set[int]] = defaultdict(set)
        for trial in store.trials(experiment_id=experiment_id, phase=Phase.SEARCH):
            if trial.status != TrialStatus.INTERRUPTED:
                self.used_seeds[trial.arch_hash].add(trial.seed)
            if trial.status in FINISHED:
                self.finished[trial.arch_hash] += 1
                self.finished_seeds[trial.arch_hash].add(trial.seed)
        # the pilot (nas.search.pruning): the first architectures also run a second seed, so the
        # pruner's margin knows the seed noise; those a killed driver already ran count
        architectures = len(self._grid_points) if search.sampler == "grid" else search.n_trials
        self.pilot = min(pilot_size(search.pruner, search.repeats, architectures), architectures) if self.prunes else 0
        self.piloted = {arch for arch, seeds in self.used_seeds.items() if len(seeds) > 1}

    @property
    def prunes(self) -> bool:
        return self.spec.search.pruner.kind != "none"

    def recover_interrupted(self) -> None:
        """After a driver death: the trials an older nas stored as RUNNING (failed by
        `MirroredStudy`) run again with their params. This nas stores finished trials only:
        the grid's unfinished points are enqueued again (`enqueue_grid`), a sampler asks anew."""
        for trial in self.main.stale:
            if trial.params and self.spec.search.sampler != "grid":
                self.study.enqueue_trial(trial.params, user_attrs={"seed": trial.user_attrs.get("seed")})

    def target(self) -> int:
        """Search trials the experiment runs in all (grid: every point x repeats)."""
        search = self.spec.search
        if search.sampler == "grid":
            return sum(map(len, self._grid_points.values())) * search.repeats + self.pilot
        return search.n_trials * search.repeats + self.pilot

    def enqueue_grid(self) -> None:
        """Put the grid's points in the study as often as they still need to run: `repeats`
        per point, less the architecture's finished trials in the store, each on a seed of
        its plan that has not finished (an architecture runs seeds `search.seed`, +1, ...):
        a trial cut short by a crash runs again on its own seed, so the architectures stay
        paired seed by seed. The pilot's architectures (the grid's first) run one seed more,
        right after their first."""
        if self.spec.search.sampler != "grid":
            return
        points = self._grid_points
        first = self.spec.search.seed
        for k, (arch_hash, same) in enumerate(points.items()):  # two points may build one network (one hash)
            planned = len(same) * self.spec.search.repeats + (1 if k < self.pilot else 0)
            missing = planned - self.finished[arch_hash]
            unfinished = [s for s in range(first, first + planned) if s not in self.finished_seeds[arch_hash]]
            for i in range(max(0, missing)):
                seed = {"seed": unfinished[i]} if i < len(unfinished) else None  # else: the next unused
                self.study.enqueue_trial(same[i % len(same)], user_attrs=seed)

    @cached_property
    def _grid_points(self) -> dict[str, list[dict[str, Any]]]:
        """`grid_points`, built once: a large grid's networks take a while to describe."""
        return grid_points(self.spec)

    def settle(self, store: Store, experiment_id: int) -> int:
        """Close the search rows a killed driver left `running` although their Optuna trials
        were told (an older nas told a trial first, then finished its row; now both are one
        transaction: nas.search.resume); how many. Before `mark_interrupted`, so that they are
        not run again."""
        told = {(t.user_attrs.get("arch_hash"), t.user_attrs.get("seed")): t.state
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))}
        settled = 0
        for trial in store.trials(experiment_id=experiment_id, phase=Phase.SEARCH, status=TrialStatus.RUNNING):
            state = told.get((trial.arch_hash, trial.seed))
            if state is None:
                continue
            epochs = store.epochs(trial.id)
            store.finish_trial(trial.id, TrialStatus.COMPLETED if state == TrialState.COMPLETE else TrialStatus.PRUNED,
                               train_seconds=epochs[-1].cumulative_seconds if epochs else None)
            self.finished[trial.arch_hash] += 1
            settled += 1
        return settled

    def ask(self) -> SearchPlan:
        trial = self.study.ask()
        arch = self.spec.space.suggest(trial)
        seed = trial.user_attrs.get("seed")
        if seed is None:
            seed = self._next_seed(arch)
        self.used_seeds[arch.hash].add(seed)
        if self.spec.search.sampler != "grid" and len(self.piloted) < self.pilot and arch.hash not in self.piloted:
            self.piloted.add(arch.hash)  # its second seed, asked next
            twin = self._next_seed(arch)
            self.used_seeds[arch.hash].add(twin)
            self.study.enqueue_trial(trial.params, user_attrs={"seed": twin})
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("arch_hash", arch.hash)
        prune_trial = trial if len(self.spec.search.objectives) == 1 else None
        if self.prune_study is not None:
            prune_trial = self.prune_study.ask()
            prune_trial.set_user_attr("seed", seed)
            prune_trial.set_user_attr("arch_hash", arch.hash)  # the noise margin pools seeds by architecture
        return SearchPlan(arch=arch, seed=seed, phase=Phase.SEARCH, optuna_trial=trial, prune_trial=prune_trial)

    def discard(self, plan: SearchPlan) -> None:
        """A plan asked but never run (asked ahead, nas.search.ahead): its Optuna trials end as
        FAIL in memory, and are not stored."""
        self.study.tell(plan.optuna_trial, state=TrialState.FAIL)
        if self.prune_study is not None:
            self.prune_study.tell(plan.prune_trial, state=TrialState.FAIL)

    def _next_seed(self, arch: ArchConfig) -> int:
        # A re-sampled architecture gets a fresh seed: every trial is a distinct (arch, seed).
        seed = self.spec.search.seed
        while seed in self.used_seeds[arch.hash]:
            seed += 1
        return seed

    def should_prune(self, plan: TrialPlan, result: dict[str, Any]) -> bool:
        """Report this epoch's value to the pruner's trial; whether the pruner stops it."""
        if not isinstance(plan, SearchPlan) or plan.prune_trial is None or self.prune_metric is None:
            return False
        if int(result["epoch"]) >= self.spec.recipe.epochs - 1:
            return False  # the last epoch is done: stopping now would save nothing
        value = result.get(self.prune_metric.metric)
        if value is None or not math.isfinite(value):
            return False
        step = int(result["epoch"])
        if plan.curve and step <= max(plan.curve):
            # Tune restarted the trial after a crash (max_failures) and it reports an epoch again:
            # Optuna keeps a step's first report, so the dead attempt's curve is what the pruner
            # would judge. Until the retry passes the dead attempt's last epoch, it is not judged
            # (issue 26 D3); its rows (nas_epoch_results) are the retry's.
            return False
        plan.prune_trial.report(value, step=step)
        plan.curve[step] = value
        if step < self.prune_from:
            return False  # reported (other trials' thresholds need it), but not decided on
        if not plan.prune_trial.should_prune():
            return False
        # why (nas.search.pruning): the indexed median/percentile pruner says; another kind's own rule
        pruner = (self.prune_study or self.study).pruner
        reasons = pruner.reasons if isinstance(pruner, IndexedPercentilePruner) else {}
        maximize = self.prune_metric.direction == "maximize"
        best = max(plan.curve.values()) if maximize else min(plan.curve.values())  # Optuna's too
        reason = reasons.pop(plan.prune_trial.number, None) or PruneReason("optuna", step, best,
                                                                            pruner=type(pruner).__name__)
        plan.prune_reason = reason.to_json()
        return True

    def tell(self, plan: TrialPlan, status: TrialStatus) -> None:
        """Close the plan's Optuna trial(s) with the state its store row gets, in memory and in
        the database studies (one transaction; queued in `writes` when set)."""
        if not isinstance(plan, SearchPlan) or plan.optuna_trial is None:
            return
        if status == TrialStatus.COMPLETED:
            values = self.objective_values(plan)
            self.study.tell(plan.optuna_trial, values if len(values) > 1 else values[0])
            if self.prune_study is not None:
                self.prune_study.tell(plan.prune_trial, plan.last.get(self.prune_metric.metric))
        else:
            state = TrialState.PRUNED if status == TrialStatus.PRUNED else TrialState.FAIL
            self.study.tell(plan.optuna_trial, state=state)
            if self.prune_study is not None:
                self.prune_study.tell(plan.prune_trial, state=state)
        record([(self.main, plan.optuna_trial)] + ([(self.pruning, plan.prune_trial)] if self.pruning else []),
               None if self.writes is None else self.writes.submit, store=self.store)

    def objective_values(self, plan: TrialPlan) -> list[float]:
        params, flops = (plan.last["params"], plan.last["flops"]) if "flops" in plan.last else self.costs(plan.arch)
        last = plan.last
        source = {
            "val_acc": plan.accuracy, "test_acc": last.get("test_acc"),
            "train_seconds": last.get("cumulative_seconds"), "params": params, "flops": flops,
            # at the arch's exit threshold; a net without early exits always runs in full
            "mean_inference_flops": last.get("mean_inference_flops", flops),
        }
        return [float(source[o.metric]) for o in self.spec.search.objectives]

    def completed_values(self) -> dict[str, list[list[float]]]:
        """Objective values of the completed search trials, by architecture hash."""
        by_arch: dict[str, list[list[float]]] = defaultdict(list)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            by_arch[trial.user_attrs["arch_hash"]].append(list(trial.values))
        return by_arch
