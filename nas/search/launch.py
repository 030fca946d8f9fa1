"""`nas launch`: Ray Tune runs the trials; Optuna, in the driver, samples and prunes them.

    YAML -> ExperimentSpec -> Optuna ask (driver) -> TrialPlan (architecture, seed)
         -> Ray Tune trial (worker, on its main thread): build, train, one result per epoch
         -> driver: store rows + Optuna report/should_prune -> STOP when pruned
         -> confirm: the top-K architectures again with fresh seeds, unpruned

Only the driver writes: the store rows (through `nas.trials.recorder`) and the Optuna
studies (same database). Calling `launch` again on the same experiment resumes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import optuna

from nas.config.experiment import ExperimentSpec
from nas.db import Store
from nas.db.schema import ExperimentStatus, Phase, TrialStatus
from nas.search.confirm import confirm_plans, keep_best_weights, top_architectures
from nas.search.controller import SearchController
from nas.trials.batch import TrialBatch
from nas.trials.costs import CostCounter
from nas.trials.experiment import mark_interrupted, open_experiment
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
           log: Callable[[str], None] = print) -> Launched:
    """Search, then confirm. Safe to call again on the same experiment: it resumes."""
    from nas.trials.tune import run_batch  # imports Ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    experiment_id = open_experiment(store, spec)
    costs = CostCounter()
    # Before the stale rows are marked: their seeds stay used (their params re-run on them).
    controller = SearchController(spec, store, experiment_id, db_url, costs)
    stale = mark_interrupted(store, experiment_id)
    controller.recover_interrupted()
    if stale:
        log(f"resuming {spec.name!r}: {stale} interrupted trial(s) will run again")
    controller.enqueue_grid()
    target = controller.target()
    done = [t for t in store.trials(experiment_id=experiment_id, phase=Phase.SEARCH) if t.status in FINISHED]
    left = max(0, target - len(done))
    counter = {"n": target - left}
    started = time.perf_counter()

    def finished(plan: TrialPlan, status: TrialStatus) -> None:
        controller.tell(plan, status)
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
        should_stop=controller.should_prune if controller.prunes else None,
    )
    if left:
        log(f"search: {left} of {target} trials to run ({spec.search.sampler} sampler, "
            f"{spec.search.pruner.kind} pruner)")
        run_batch(batch, left)
    top = top_architectures(controller.completed_values(), spec, store, spec.confirm.top_k)
    confirm = confirm_plans(top, spec, store, experiment_id)
    if confirm:
        log(f"confirm: {len(confirm)} runs ({spec.confirm.top_k} architectures x {spec.confirm.repeats} seeds)")
        queue = list(confirm)
        run_batch(replace(batch, next_plan=lambda: queue.pop(0) if queue else None, should_stop=None, plans={}),
                  len(confirm))
    keep_best_weights(store, experiment_id)
    store.finish_experiment(experiment_id, ExperimentStatus.FINISHED)
    log(f"done in {time.perf_counter() - started:.0f} s")
    return Launched(experiment_id, controller)
