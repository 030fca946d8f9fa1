"""Per-architecture results of an experiment, read from the store.

One `ArchResult` per architecture and phase: its seeds' final metrics summarised with a
95% CI (nas.stats), and its Pareto rank among the architectures of that phase. Confirmed
architectures also carry the confirm race's answer (`nas.search.race`): best, not separated
from the best, or worse, with its p over the whole race; they are listed
in that order (the order of `nas export --rank`), by Pareto rank within each group. A
search with seed repeats (a grid study such as page_post4) gets the same answer for its
architectures, from the seeds they all ran (`search_groups`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

from nas.db import Architecture, Store, Trial
from nas.db.schema import Phase, TrialStatus
from nas.search.race import GROUP_ORDER, Group, decision_text, race_metric, repeat_groups, stored_race
from nas.stats import (
    ImageDifference,
    SeedSummary,
    front_share,
    image_difference,
    mean_binomial_se,
    pareto_ranks,
    summarize,
    unpack_correct,
)
from nas.trials.plan import judged_accuracy


FRONT_SHARE_MAX = 200  # architectures of a phase up to which the front's bootstrap is drawn (quadratic)


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
    rank: int = -1  # Pareto rank among this phase's architectures (0 = front, as nas.stats.pareto_ranks)
    # mean over seeds of the FLOPs per image with early exits at the arch's exit threshold
    # (the trials' exit curves); the full forward FLOPs for a net without early exits
    mean_inference_flops: float = math.nan
    # confirm: the race's decision, best | not separated | worse ("" undecided, or another
    # phase), its p over the whole race (nas.sequential; nan for best), and for not separated
    # the difference (fraction) the race could have detected at 80% power
    group: str = ""
    group_p: float = math.nan
    group_detectable: float = math.nan
    # evaluation noise: the images the accuracy was measured on (the fewest over the seeds; None
    # when unknown: a store from before they were recorded) and the mean over the seeds of each
    # trial's binomial SE of its accuracy (nas.stats.binomial_se; nan when unknown)
    eval_images: int | None = None
    eval_se: float = math.nan
    # how sure its Pareto rank is: the share of seed bootstraps in which it is on the front
    # (nas.stats.front_share); nan with one seed each, or over FRONT_SHARE_MAX architectures
    front_share: float = math.nan

    @property
    def pareto_front(self) -> int:
        """The Pareto front it is on, numbered from 1 (1 = the front, 2 = the front without it,
        ...): how tables, frames and the dashboard show `rank` to people."""
        return self.rank + 1

    @property
    def decision(self) -> str:
        """``best``, ``not separated (p=0.41; could detect >= 1.9 pts)``, ``worse (p=0.003)``,
        or "" (no decision)."""
        return decision_text(self.group, self.group_p, self.group_detectable)


def objectives_of(store: Store, experiment_name: str) -> list[tuple[str, str]]:
    """(metric, direction) pairs of an experiment, from its stored config."""
    experiment = store.get_experiment(experiment_name)
    if experiment is None or not experiment.config_json:
        return [("val_acc", "maximize"), ("train_seconds", "minimize")]
    config = json.loads(experiment.config_json)
    return [(o["metric"], o["direction"]) for o in config["search"]["objectives"]]


def accuracy_objective(store: Store, experiment_name: str) -> str:
    """The experiment's first objective that is an accuracy (what pruning watches and the
    confirm race compares), val_acc by default."""
    return race_metric([metric for metric, _ in objectives_of(store, experiment_name)])


def arch_results(store: Store, experiment_name: str, phase: Phase | str) -> list[ArchResult]:
    """Completed trials of one phase grouped by architecture, best Pareto rank first (confirm,
    and a search with seed repeats: the best, then the not separated, then the worse, by Pareto rank
    within each)."""
    experiment = store.get_experiment(experiment_name)
    if experiment is None:
        return []
    groups = defaultdict(list)
    for trial in store.trials(experiment_id=experiment.id, phase=phase, status=TrialStatus.COMPLETED):
        groups[trial.arch_hash].append(trial)
    rows, per_seed = [], []
    objectives = objectives_of(store, experiment_name)
    for arch_hash, trials in groups.items():
        arch = store.get_architecture(arch_hash)
        accuracy = [judged_accuracy(t.final_val_acc, t.final_test_acc) for t in trials]
        rows.append(ArchResult(
            arch_hash=arch_hash, short_name=arch.short_name, phase=phase, seeds=len(trials),
            accuracy=summarize(accuracy), test_acc=summarize([t.final_test_acc for t in trials]),
            train_seconds=summarize([t.train_seconds for t in trials]),
            params=arch.params, flops=arch.flops,
            mean_inference_flops=_mean_inference_flops(store, arch, trials),
            **_eval_noise(trials, accuracy),
        ))
        per_seed.append({t.seed: [_trial_metric(t, acc, rows[-1], metric) for metric, _ in objectives]
                         for t, acc in zip(trials, accuracy)})
    if not rows:
        return []
    directions = [direction for _, direction in objectives]
    points = [[_metric(row, metric) for metric, _ in objectives] for row in rows]
    ranks = pareto_ranks(points, directions)
    shares = front_share(per_seed, directions) if len(rows) <= FRONT_SHARE_MAX and any(
        row.seeds >= 2 for row in rows) else [math.nan] * len(rows)
    rows = [replace(row, rank=rank, front_share=share) for row, rank, share in zip(rows, ranks, shares)]
    decided = {Phase.CONFIRM: confirm_groups, Phase.SEARCH: search_groups}.get(Phase(phase))
    groups = decided(store, experiment_name) if decided else {}
    if groups:
        rows = [replace(row, group=(g := groups[row.arch_hash]).decision, group_p=g.p, group_detectable=g.detectable)
                if row.arch_hash in groups else row for row in rows]
    first_sign = -1.0 if objectives[0][1] == "maximize" else 1.0
    return sorted(rows, key=lambda r: (GROUP_ORDER.get(r.group, len(GROUP_ORDER)), r.rank,
                                       first_sign * _metric(r, objectives[0][0]), r.arch_hash))


def confirm_groups(store: Store, experiment_name: str) -> dict[str, Group]:
    """The confirm race's answer per architecture (best, not separated or worse, with its p), replayed
    from the experiment's confirm results under its stored confirm settings; empty before
    round 1 is complete."""
    from nas.config.experiment import ConfirmSettings
    from nas.config.validate import Source, build
    from nas.errors import ConfigError

    experiment = store.get_experiment(experiment_name)
    if experiment is None:
        return {}
    config = json.loads(experiment.config_json) if experiment.config_json else {}
    # fields a config stored before the race lacks take their defaults (one round, as then);
    # a config this version cannot read gives the defaults too: a table, not a crash
    try:
        settings = build(ConfirmSettings, config.get("confirm"), Source(), ("confirm",))
    except ConfigError:
        settings = ConfirmSettings()
    metric = accuracy_objective(store, experiment_name)
    return stored_race(store, experiment.id, settings, metric).groups()


def search_groups(store: Store, experiment_name: str) -> dict[str, Group]:
    """With seed repeats (search.repeats >= 2), best / not separated / worse among the search's
    architectures that completed every one of the search seeds (search.seed, +1, ...: the seeds
    every architecture runs first); the others (pruned, failed, unfinished) are not compared.
    Empty without repeats."""
    experiment = store.get_experiment(experiment_name)
    config = json.loads(experiment.config_json) if experiment is not None and experiment.config_json else {}
    search = config.get("search", {})
    repeats, first = int(search.get("repeats", 1)), int(search.get("seed", 0))
    if repeats < 2:
        return {}
    metric = accuracy_objective(store, experiment_name)
    accuracy: dict[str, dict[int, float | None]] = defaultdict(dict)
    for trial in store.trials(experiment_id=experiment.id, phase=Phase.SEARCH, status=TrialStatus.COMPLETED):
        value = trial.final_test_acc if metric == "test_acc" else judged_accuracy(trial.final_val_acc,
                                                                                   trial.final_test_acc)
        accuracy[trial.arch_hash].setdefault(trial.seed, value)
    return repeat_groups(accuracy, list(range(first, first + repeats)))


def image_differences(store: Store, experiment_name: str, rows: list[ArchResult]) -> dict[str, ImageDifference]:
    """Each of `rows` but the first (the best, as `arch_results` orders a decided phase) against
    the first, on the seeds both ran and their stored per-image correctness (val, else test:
    what the race compares): the difference with the image sample's noise beside the seeds'
    (`nas.stats.image_difference`). Leaves out an architecture with no such pair of seeds
    (stores from before revision 0009, the simulated trainer)."""
    experiment = store.get_experiment(experiment_name)
    if experiment is None or len(rows) < 2:
        return {}
    wanted = {row.arch_hash for row in rows}
    trials = [t for t in store.trials(experiment_id=experiment.id, phase=rows[0].phase, status=TrialStatus.COMPLETED)
              if t.arch_hash in wanted]
    split = "test" if accuracy_objective(store, experiment_name) == "test_acc" else "val"
    bits = store.correct([t.id for t in trials], split)
    by_seed: dict[str, dict[int, Any]] = defaultdict(dict)
    for trial in trials:
        if trial.id in bits:
            by_seed[trial.arch_hash].setdefault(trial.seed, unpack_correct(*bits[trial.id]))
    best = by_seed.get(rows[0].arch_hash, {})
    out = {}
    for row in rows[1:]:
        own = by_seed.get(row.arch_hash, {})
        seeds = sorted(s for s in set(own) & set(best) if len(own[s]) == len(best[s]))
        if seeds:
            out[row.arch_hash] = image_difference([own[s] for s in seeds], [best[s] for s in seeds])
    return out


@dataclass(frozen=True)
class PrunedTrial:
    """A pruned search trial and why (`nas.search.pruning.PruneReason`; None: stored without one)."""

    trial_id: int
    short_name: str
    seed: int
    epochs_done: int
    reason: Any


def pruned_trials(store: Store, experiment_id: int) -> list[PrunedTrial]:
    """The experiment's pruned search trials, in the order they ran, with the stored reason."""
    from sqlalchemy import select

    from nas.search.pruning import PruneReason

    query = (select(Trial.id, Architecture.short_name, Trial.seed, Trial.epochs_done, Trial.prune_reason)
             .join(Architecture, Architecture.hash == Trial.arch_hash)
             .where(Trial.experiment_id == experiment_id, Trial.phase == Phase.SEARCH,
                    Trial.status == TrialStatus.PRUNED).order_by(Trial.id))
    with store.engine.connect() as connection:
        return [PrunedTrial(i, name, seed, done, PruneReason.from_json(reason))
                for i, name, seed, done, reason in connection.execute(query)]


def eval_images(trial: Trial) -> int | None:
    """The images a trial's judged accuracy (val, else test) was measured on; None if unknown."""
    return trial.final_val_images if trial.final_val_acc is not None else trial.final_test_images


def _eval_noise(trials: list[Trial], accuracy: list[float | None]) -> dict[str, float | int | None]:
    images = [eval_images(t) for t in trials]
    known = [n for n in images if n is not None]
    return {"eval_images": min(known) if known else None, "eval_se": mean_binomial_se(list(zip(accuracy, images)))}


def _trial_metric(trial: Trial, accuracy: float | None, row: ArchResult, metric: str) -> float:
    """One seed's value of an objective (an architecture's constants for params and FLOPs)."""
    value = {"val_acc": accuracy, "test_acc": trial.final_test_acc, "train_seconds": trial.train_seconds}.get(metric)
    if metric in ("val_acc", "test_acc", "train_seconds"):
        return math.nan if value is None else float(value)
    return _metric(row, metric)


def _metric(row: ArchResult, metric: str) -> float:
    return {
        "val_acc": row.accuracy.mean, "test_acc": row.test_acc.mean,
        "train_seconds": row.train_seconds.mean, "params": float(row.params), "flops": float(row.flops),
        "mean_inference_flops": row.mean_inference_flops,
    }[metric]


def _mean_inference_flops(store: Store, arch: Architecture, trials: list[Trial]) -> float:
    """Mean over `trials` of the exit curve's mean FLOPs at the arch's exit threshold."""
    from nas.models import ArchConfig

    exits = ArchConfig.from_json(arch.config_json).exits
    if not exits.stages:
        return float(arch.flops)
    at = [p.mean_flops for t in trials for p in store.exit_curve(t.id) if p.threshold == exits.threshold]
    return sum(at) / len(at) if at else math.nan

