"""Ray Tune glue: a `TrialBatch` run by one Tuner. Imported only where trials run (it
imports Ray), never by `import nas`.

    PlanSearcher.suggest -> the batch's next plan, as a trial config
    TrialTrainable (worker, main thread) -> a TrialRun, one epoch per step
    PlanScheduler.on_trial_result -> the batch's pruning rule: CONTINUE or STOP
    PlanScheduler.choose_trial_to_run -> the earliest waiting trial, among the live ones
    RecordingCallback -> the batch records every result, end and error (the driver writes)

Ray's stock OptunaSearch cannot be used: it hard-codes NopPruner, and a trial stopped by a
scheduler reaches it as COMPLETE with a truncated value.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
from typing import Any

from ray import tune
from ray.tune import PlacementGroupFactory
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from nas.trials.batch import TrialBatch
from nas.trials.runner import TrialRun


class TrialTrainable(tune.Trainable):
    """Trains a TrialRun, one epoch per step, on the actor's main thread.

    Not a function trainable: Tune runs those in a side thread, where glibc's malloc maps
    and faults in every large block again whatever its settings (`nas.malloc` has the
    measurements, from `benchmarks/cpu_malloc.py`). A stopped (pruned) trial simply gets
    no further step; `reset_config` starts the next trial in the same worker
    (reuse_actors). Its resources come from the trial's config, so its processes are
    named for it (``ray::TrialTrainable``).
    """

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]):
        return PlacementGroupFactory([{"CPU": config["cpus"], "GPU": config["gpus"]}])

    def setup(self, config: dict[str, Any]) -> None:
        self.run = TrialRun(config)

    def step(self) -> dict[str, Any]:
        return self.run.next_result()

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.run.close()
        self.run = TrialRun(new_config)
        return True

    def cleanup(self) -> None:
        self.run.close()


class _InProcess:
    """Ray pickles the Tuner's parts for its own restore; ours hold the live batch (store,
    Optuna study) and only ever run in this process, so they pickle empty."""

    def __getstate__(self):
        return {}


class PlanSearcher(_InProcess, Searcher):
    """Hands Ray Tune the batch's plans, one per suggested trial."""

    def __init__(self, batch: TrialBatch) -> None:
        super().__init__()
        self.batch = batch

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str):
        config = self.batch.suggest(trial_id)
        return Searcher.FINISHED if config is None else config

    def on_trial_complete(self, trial_id, result=None, error=False) -> None:
        pass  # RecordingCallback closes trials: it sees pruning, divergence and errors

    def save(self, checkpoint_path: str) -> None:
        pass  # the store and the Optuna study are the checkpoint; resume reads them

    def restore(self, checkpoint_path: str) -> None:
        pass


class PlanScheduler(_InProcess, FIFOScheduler):
    """Stops a trial when the batch's pruning rule says so after one of its results, and
    starts the trial added last, looking only at the live ones (`choose_trial_to_run` says why).

    Ray's FIFOScheduler finds the next trial to start by walking every trial of the run,
    finished ones included, on each step of Tune's loop: at 5,000 finished trials that walk
    was 14% of the driver's CPU (py-spy on `benchmarks/driver_scale.py`). The live trials
    (pending, running, paused) are at most a few times the trials at once.
    """

    def __init__(self, batch: TrialBatch) -> None:
        super().__init__()
        self.batch = batch
        self._order: dict[Trial, int] = {}  # live trials, by when they were added
        self._added = itertools.count()

    def on_trial_add(self, tune_controller, trial):
        self._order[trial] = next(self._added)

    def on_trial_complete(self, tune_controller, trial, result):
        self._order.pop(trial, None)

    def on_trial_error(self, tune_controller, trial):
        self._order.pop(trial, None)

    def on_trial_remove(self, tune_controller, trial):
        self._order.pop(trial, None)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        # The newest first. Tune calls this first in each step, just after adding the trial
        # the searcher gave (the only pending trial with no actor yet: the step goes on to
        # request a new actor for every pending trial), and gives the chosen trial the actor
        # of a trial that just finished, if one is cached. Chosen oldest first (FIFO), that
        # trial already had a new actor starting, which Tune then killed; the added trial
        # requested another: with trials shorter than a worker's start, every trial started
        # a worker process that never ran one (benchmarks/driver_scale.py, 64 at once)
        live = tune_controller.get_live_trials()
        for status in (Trial.PENDING, Trial.PAUSED):  # FIFOScheduler's preference
            waiting = [trial for trial in live if trial.status == status]
            if waiting:
                return max(waiting, key=lambda trial: self._order.get(trial, -1))
        return None

    def on_trial_result(self, tune_controller, trial, result):
        return TrialScheduler.STOP if self.batch.stop(trial.trial_id, result) else TrialScheduler.CONTINUE


class RecordingCallback(_InProcess, tune.Callback):
    """Every trial's results, end and error reach the batch's recorders as they happen."""

    def __init__(self, batch: TrialBatch) -> None:
        self.batch = batch

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.batch.result(trial.trial_id, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.batch.complete(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.batch.error(trial.trial_id, _read_error(trial))


def _read_error(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        if path and os.path.exists(path):
            with open(path) as f:
                return f.read()[-4000:]
    except OSError:
        pass
    return "the trial raised an error (see the Ray logs)"


def run_batch(batch: TrialBatch, num_samples: int) -> None:
    """Run up to `num_samples` of the batch's plans through one Ray Tune Tuner."""
    if num_samples <= 0:
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files per trial
    # ...so Ray's end-of-run metrics fetch finds no files: its warning per trial is noise.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # Tune's experiment state (every trial, as JSON; rewritten as often as 5% of the loop's
    # time allows, so its cost per trial grows with the run) is never read: the store is the
    # record and the folder is deleted below. Written at the start and end only.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "86400")
    storage = tempfile.mkdtemp(prefix="nas-ray-")  # Ray's own bookkeeping; the store is the record
    try:
        tuner = tune.Tuner(
            batch.trainable or TrialTrainable,  # its resources: the trial config's cpus and gpus
            tune_config=tune.TuneConfig(
                search_alg=PlanSearcher(batch),
                scheduler=PlanScheduler(batch),  # without a pruning rule it only starts trials
                num_samples=num_samples,
                max_concurrent_trials=batch.resources.max_concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                storage_path=storage, name=batch.name.replace(":", "_"),
                failure_config=tune.FailureConfig(max_failures=batch.resources.max_failures),
                # no Tune checkpoints: a retried trial starts again; the store keeps results
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                callbacks=[RecordingCallback(batch)], verbose=0,
            ),
        )
        tuner.fit()
    finally:
        shutil.rmtree(storage, ignore_errors=True)
