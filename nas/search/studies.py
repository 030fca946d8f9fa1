"""The search's Optuna studies: worked on in memory, each finished trial mirrored to the
store's database.

Optuna's RDB storage reads the study back on every call that needs its trials (each
suggestion, each pruning decision) and writes every parameter, user attribute and
intermediate value in a transaction of its own; the sampler and the pruners then walk every
trial. At 10,000 trials that cost the driver seconds per trial (`benchmarks/driver_scale.py`).
So the driver asks, reports, prunes and tells on an in-memory copy, and writes each trial to
the database study once, complete, when it finishes (`Study.add_trial`: one transaction).

The database study stays the record that `optuna.load_study(..., storage=URL)` and
optuna-dashboard open; a resumed launch rebuilds the in-memory copy from it. It holds finished
trials only: a trial still running when the driver is killed is not there (its row in the
nas store is marked interrupted; a grid point that did not finish is enqueued again, a
sampler asks anew). Stores written by an older nas hold asked trials as RUNNING: they are
failed there, and their parameters are returned for the caller to run again.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
import optuna
from optuna.storages import BaseStorage, InMemoryStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState


class MirroredStudy:
    """An in-memory Optuna study whose finished trials are written to a stored study.

    Args:
        name: the study name in the database.
        storage: the database's Optuna storage (`optuna.storages.RDBStorage`).
        directions: of the objectives.
        sampler, pruner: for the in-memory study (the stored one never samples).
        metric_names: the objectives' names, for optuna-dashboard's plots.
    """

    def __init__(self, name: str, storage: BaseStorage, directions: Sequence[str | StudyDirection], *,
                 sampler: optuna.samplers.BaseSampler | None = None,
                 pruner: optuna.pruners.BasePruner | None = None, metric_names: list[str] | None = None) -> None:
        self.stored = optuna.create_study(study_name=name, storage=storage, directions=directions,
                                          load_if_exists=True)
        self.study = optuna.create_study(study_name=name, storage=InMemoryStorage(), directions=directions,
                                         sampler=sampler, pruner=pruner)
        if metric_names is not None:
            _name_metrics(self.stored, metric_names)
            _name_metrics(self.study, metric_names)
        finished, self.stale = [], []
        for trial in self.stored.get_trials(deepcopy=False):
            if trial.state.is_finished():
                finished.append(trial)
            elif trial.state == TrialState.RUNNING:
                self.stale.append(trial)
            # WAITING: an older nas enqueued the whole grid up front; the caller enqueues what
            # did not finish again (nas.search.controller.SearchController.enqueue_grid)
        self.study.add_trials(finished)
        for trial in self.stale:  # an older nas's asked trial, whose driver died
            self.stored.tell(trial.number, state=TrialState.FAIL)

    def record(self, trial: optuna.Trial) -> None:
        """Write `trial`, finished in the in-memory study, to the stored study (one transaction)."""
        frozen = self.study._storage.get_trial(trial._trial_id)  # the in-memory study's own copy
        if not frozen.state.is_finished():
            raise ValueError(f"trial {trial.number} is {frozen.state.name}; only finished trials are stored.")
        self.stored.add_trial(frozen)


def _name_metrics(study: optuna.Study, names: list[str]) -> None:
    """Label the objectives, so optuna-dashboard's plots say val_acc, train_seconds, ..."""
    if study.metric_names != names:
        with warnings.catch_warnings():  # set_metric_names is experimental in Optuna 4-5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)

