"""A batch of trials of one experiment, as the driver sees it: where their plans come from,
what they train with, what is decided about them, and how each is recorded.

`nas.trials.tune.run_batch` runs one through Ray Tune. The batch knows nothing of Optuna: a
search gives it a pruning rule (`should_stop`) and hears of each finished trial
(`on_finished`); the confirm phase and `nas ablate` give neither.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from nas.config.experiment import Resources
from nas.data.config import DataConfig
from nas.db import Store
from nas.db.schema import TrialStatus
from nas.db.write_behind import WriteBehind
from nas.training.recipe import Recipe
from nas.trials.artifacts import WIRE_KEY, TrialSetup, decode_artifacts
from nas.trials.costs import CostCounter
from nas.trials.plan import TrialPlan
from nas.trials.recorder import TrialRecorder
from nas.trials.runner import trial_config


@dataclass
class TrialBatch:
    """Trials of one experiment, run through one Ray Tune Tuner."""

    store: Store
    experiment_id: int
    name: str  # the experiment's name: Ray's run folder is named after it
    recipe: Recipe
    data_cfg: DataConfig  # its root absolute: Tune runs each trial in a folder of its own
    resources: Resources  # of one trial, and how many run at once
    next_plan: Callable[[], TrialPlan | None]  # None: no more trials
    costs: CostCounter = field(default_factory=CostCounter)
    should_stop: Callable[[TrialPlan, dict[str, Any]], bool] | None = None  # a pruner; None: none
    on_finished: Callable[[TrialPlan, TrialStatus], None] = lambda plan, status: None
    plans: dict[str, TrialPlan] = field(default_factory=dict)  # by Ray Tune trial id
    # the Ray Tune trainable class that runs each trial; None: nas.trials.tune.TrialTrainable
    # (nas.trials.simulated's stand-in replaces only the training, to measure the driver at scale)
    trainable: Any = None
    writes: WriteBehind | None = None  # where the recorders queue their writes; None: written at once

    def __post_init__(self) -> None:
        if self.data_cfg.root is not None:
            self.data_cfg = replace(self.data_cfg, root=os.path.abspath(os.path.expanduser(self.data_cfg.root)))

    def setup(self, plan: TrialPlan) -> TrialSetup:
        return TrialSetup(arch=plan.arch, recipe=self.recipe, data_cfg=self.data_cfg, seed=plan.seed,
                          save_weights=plan.save_weights)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next plan's Ray Tune config, or None when there is none."""
        plan = self.next_plan()
        if plan is None:
            return None
        self.plans[trial_id] = plan
        cpus = self.resources.cpus_per_trial or float(os.cpu_count() or 1)  # None: every core here
        return trial_config(self.setup(plan), plan.phase, cpus=cpus, gpus=self.resources.gpus_per_trial)

    # -- what the Ray glue reports, recorded --

    def result(self, trial_id: str, result: dict[str, Any]) -> None:
        """One epoch's result (the last one also carries the trial's artefacts)."""
        plan = self.plans[trial_id]
        wire = result.pop(WIRE_KEY, None)  # pop: Ray keeps the last result in memory
        plan.last = result
        recorder = self._recorder(plan, device=result.get("device", ""), started_at=result.get("started_at"))
        if wire is not None:
            recorder.artifacts(decode_artifacts(wire))
        recorder.epoch(result)

    def stop(self, trial_id: str, result: dict[str, Any]) -> bool:
        """Whether to stop the trial after this result (the pruning rule said so)."""
        plan = self.plans.get(trial_id)
        if plan is None or self.should_stop is None or not self.should_stop(plan, result):
            return False
        plan.pruned = True
        return True

    def complete(self, trial_id: str) -> None:
        # A finished trial's plan (its recorder, its last result) is dropped: Tune reports
        # nothing after a trial's end, and kept, 10,000 of them grew the driver (issue 26 D9)
        plan = self.plans.pop(trial_id)
        if plan.pruned:
            status = TrialStatus.PRUNED
        elif plan.last.get("diverged"):
            status = TrialStatus.DIVERGED
        else:
            status = TrialStatus.COMPLETED
        recorder = self._recorder(plan)
        with self._trial_end():
            self.on_finished(plan, status)
            recorder.finish(status, train_seconds=plan.last.get("cumulative_seconds"),
                            prune_reason=plan.prune_reason if plan.pruned else None)

    def error(self, trial_id: str, error: str) -> None:
        plan = self.plans.pop(trial_id)
        recorder = self._recorder(plan)
        with self._trial_end():
            self.on_finished(plan, TrialStatus.FAILED)
            recorder.finish(TrialStatus.FAILED, error=error)

    def _trial_end(self):
        """A trial's end, one transaction: its Optuna trial(s) told and stored, and its row
        finished, commit together or not at all (a crash leaves neither half)."""
        return self.writes.together() if self.writes is not None else self.store.transaction()

    def costs_of(self, plan: TrialPlan) -> tuple[int, int]:
        """(params, FLOPs) of the plan's architecture: as its worker counted them (every result
        carries them), else counted here (a trial that failed before its first result)."""
        if isinstance(plan.last.get("params"), int) and isinstance(plan.last.get("flops"), int):
            return plan.last["params"], plan.last["flops"]
        return self.costs(plan.arch)

    def _recorder(self, plan: TrialPlan, device: str = "", started_at: float | None = None) -> TrialRecorder:
        # From the first result on; a trial that ends before reporting still gets its row.
        if plan.recorder is None:
            plan.recorder = TrialRecorder(self.store, self.experiment_id, self.setup(plan), plan.phase,
                                          costs=self.costs_of(plan), device=device,
                                          started_at=_worker_start(started_at), writes=self.writes)
        return plan.recorder


def _worker_start(started_at: float | None) -> datetime | None:
    """The worker's start time (epoch seconds) as an aware UTC datetime, never later than the
    driver's now (a worker clock running ahead would put the start in the future); None: unknown
    (an older worker, or no result), and the row takes the time it is written."""
    if not isinstance(started_at, (int, float)) or isinstance(started_at, bool) or not math.isfinite(started_at):
        return None
    return min(datetime.fromtimestamp(started_at, timezone.utc), datetime.now(timezone.utc))
