"""`nas launch`: Ray Tune runs the trials; Optuna, in the driver, samples and prunes them.

    YAML -> ExperimentSpec -> Optuna ask (driver) -> TrialPlan (architecture, seed)
         -> Ray Tune trial (worker, on its main thread): build, train, one result per epoch
         -> driver: store rows + Optuna report/should_prune -> STOP when pruned
         -> confirm: the top-K architectures race on fresh shared seeds, unpruned, round by
            round (nas.search.race), until the leader separates or the budget ends

Only the driver writes: the store rows (through `nas.trials.recorder`) and the Optuna
studies (same database), in order, from a thread of its own (`nas.db.write_behind`). Calling
`launch` again on the same experiment resumes it (what survives a kill: `nas.search.resume`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import optuna

from nas.config.experiment import ExperimentSpec
from nas.db import Store
from nas.db.lease import Lease
from nas.db.schema import ExperimentStatus, Phase, TrialStatus
from nas.db.write_behind import WriteBehind
from nas.models.arch import ArchConfig
from nas.search.ahead import AskAhead, ahead_depth
from nas.search.confirm import (
    confirm_plans,
    confirm_race,
    keep_first_seed_weights,
    top_architectures,
)
from nas.search.controller import SearchController
from nas.search.race import Race, decision_line, round_line
from nas.search.resume import resume
from nas.trials.batch import TrialBatch
from nas.trials.costs import CostCounter, known_costs
from nas.trials.experiment import open_experiment
from nas.trials.plan import FINISHED, TrialPlan


@dataclass
class Launched:
    """What `launch` ran: the experiment's id and its search controller."""

    experiment_id: int
    controller: SearchController


def trial_line(where: str, plan: TrialPlan, status: str, epochs: int) -> str:
    """One finished trial, as `nas launch` prints it; the accuracy with its binomial SE
    (evaluation noise, `nas.stats.binomial_se`) when the result says how many images it scored."""
    from math import isfinite

    from nas.stats import binomial_se

    acc = plan.accuracy
    images = plan.last.get("val_images" if plan.last.get("val_acc") is not None else "test_images")
    se = binomial_se(acc, images)
    acc_text = "   -   " if acc is None else f"{acc:6.2%}" + (f" ±{se:.2%}" if isfinite(se) else "")
    done = int(plan.last.get("epoch", -1)) + 1
    return (f"[{where}] {plan.arch.short_name():<30} seed {plan.seed:<5} epoch {done:>2}/{epochs}"
            f"  acc {acc_text}  {status:<9} {plan.last.get('cumulative_seconds', 0.0):6.1f} s")


def launch(spec: ExperimentSpec, *, store: Store, db_url: str, data_root: str,
           log: Callable[[str], None] = print, trainable: Any = None, write_behind: bool = True,
           executor: Callable[[TrialBatch, int], None] | None = None) -> Launched:
    """Search, then confirm. Safe to call again on the same experiment: it resumes.

    `trainable` is the Ray Tune trainable that runs each trial (None: the real training,
    `nas.trials.tune.TrialTrainable`; `nas.trials.simulated.SimulatedTrainable` for benchmarks).
    The trials' rows and Optuna trials are written in order by a thread of their own
    (`nas.db.write_behind`); `write_behind=False` writes them in the callbacks, as they come.
    `executor(batch, trials)` runs each batch (None: Ray Tune, `nas.trials.tune.run_batch`;
    replays of recorded results run them in this process, `nas.trials.inline.run_inline`).

    Holds the experiment's lease throughout (`nas.db.lease`): a second writer is refused; a
    killed driver's stale lease is taken over, and its running trials marked interrupted.

    Raises:
        ExperimentBusy: another live process writes this experiment.
    """
    with Lease(store, spec.name, "nas launch") as lease, closing(CostCounter(known_costs(store))) as costs:
        if lease.taken_over is not None:
            log(f"took over the lease of {lease.taken_over.describe()}: that driver stopped")
        with WriteBehind(store) if write_behind else nullcontext() as writes:  # written before the lease goes
            return _launch(spec, store=store, db_url=db_url, data_root=data_root, log=log, trainable=trainable,
                           costs=costs, writes=writes, executor=executor)


def _launch(spec: ExperimentSpec, *, store: Store, db_url: str, data_root: str,
            log: Callable[[str], None], trainable: Any, costs: CostCounter,
            writes: WriteBehind | None, executor: Callable[[TrialBatch, int], None] | None) -> Launched:
    if executor is None:
        from nas.trials.tune import run_batch as executor  # imports Ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    experiment_id = open_experiment(store, spec)
    # Before the stale rows are marked: their seeds stay used (their params re-run on them).
    controller = SearchController(spec, store, experiment_id, db_url, costs)
    resume(controller, store, experiment_id, writes, log)  # what a killed driver left (nas.search.resume)
    live = None
    if spec.tracking.mlflow:  # exported from a thread of its own: a trial's end only wakes it
        from nas.mlflow_export import LiveExport

        live = LiveExport(db_url, spec.name, spec.tracking.mlflow, log)
    try:
        return _search_and_confirm(spec, store, experiment_id, controller, data_root, log, trainable, costs,
                                   writes, executor, live)
    finally:
        if live is not None:
            live.close()


def _search_and_confirm(spec: ExperimentSpec, store: Store, experiment_id: int, controller: SearchController,
                        data_root: str, log: Callable[[str], None], trainable: Any, costs: CostCounter,
                        writes: WriteBehind | None, executor: Callable[[TrialBatch, int], None], live) -> Launched:
    target = controller.target()
    done = [t for t in store.trials(experiment_id=experiment_id, phase=Phase.SEARCH) if t.status in FINISHED]
    left = max(0, target - len(done))
    counter = {"n": target - left}
    started = time.perf_counter()

    def finished(plan: TrialPlan, status: TrialStatus) -> None:
        controller.tell(plan, status)
        if live is not None:
            live.poke()
        if plan.phase == Phase.SEARCH:
            counter["n"] += 1
            where = f"search {counter['n']:>3}/{target}"
        else:
            where = Phase.CONFIRM.value
        log(trial_line(where, plan, status, spec.recipe.epochs))

    batch = TrialBatch(
        store=store, experiment_id=experiment_id, name=spec.name, recipe=spec.recipe,
        data_cfg=replace(spec.dataset, root=data_root), resources=spec.resources,
        next_plan=controller.ask, costs=costs, on_finished=finished,
        should_stop=controller.should_prune if controller.prunes else None, trainable=trainable, writes=writes,
    )

    def run(batch: TrialBatch, trials: int) -> None:
        executor(batch, trials)
        if writes is not None:
            writes.flush()  # what follows reads the store
    if left:
        log(f"search: {left} of {target} trials to run ({spec.search.sampler} sampler, "
            f"{spec.search.pruner.kind} pruner)")
        # asked ahead while the driver waits on Ray (nas.search.ahead); begins during Ray's start
        ahead = AskAhead(controller.ask, depth=ahead_depth(spec.resources.max_concurrent), budget=left,
                         discard=controller.discard)
        try:
            run(replace(batch, next_plan=ahead), left)
        finally:
            ahead.close()
    top = top_architectures(controller.completed_values(), spec, store, spec.confirm.top_k)

    def run_round(plans: list[TrialPlan]) -> None:  # unpruned: a confirm run is a result
        run(replace(batch, next_plan=partial(next, iter(plans), None), should_stop=None, plans={}), len(plans))

    run_race(top, spec, store, experiment_id, run_round, log)
    keep_first_seed_weights(store, experiment_id)
    store.finish_experiment(experiment_id, ExperimentStatus.FINISHED)
    log(f"done in {time.perf_counter() - started:.0f} s")
    return Launched(experiment_id, controller)


def run_race(top: list[ArchConfig], spec: ExperimentSpec, store: Store, experiment_id: int,
             run: Callable[[list[TrialPlan]], None], log: Callable[[str], None] = print) -> Race | None:
    """The confirm race of `top`, round by round: each round one batch (`run`) of the
    (architecture, seed) runs it still needs, then the store decides the next.

    Everything comes from the store, so a launch stopped mid-race continues it. A run that
    ended without a result (failed after its retries) is not run again by this launch: the
    same round would ask for it forever; the next launch retries it.
    """
    if not top:
        return None
    names = {arch.hash: arch.short_name() for arch in top}
    tried: set[tuple[str, int]] = set()
    while True:
        race = confirm_race(top, spec, store, experiment_id)
        if not race.to_run:
            break
        again = tried & set(race.to_run)
        if again:
            log(f"confirm stopped in round {race.round}: {len(again)} run(s) ended without a result; "
                "launch again to retry them")
            break
        tried |= set(race.to_run)
        log(round_line(race, names))
        run(confirm_plans(race, top))
    log(decision_line(race, names))
    return race
