"""The search's Optuna studies: worked on in memory, each finished trial mirrored to the
store's database.

Optuna's RDB storage reads the study back on every call that needs its trials (each
suggestion, each pruning decision) and writes every parameter, user attribute and
intermediate value in a transaction of its own; the sampler and the pruners then walk every
trial. At 10,000 trials that cost the driver seconds per trial (`benchmarks/driver_scale.py`).
So the driver asks, reports, prunes and tells on an in-memory copy, and writes each trial to
the database study once, complete, when it finishes: one transaction of a few bulk inserts
into Optuna's own tables (`_insert_trial`). `Study.add_trial` would write the same rows, but
with a query and an insert per parameter, attribute and intermediate value (about 50
statements for a search trial and its pruning twin, the driver's largest cost per trial on
PostgreSQL: `benchmarks/driver_scale.py`).

The database study stays the record that `optuna.load_study(..., storage=URL)` and
optuna-dashboard open; a resumed launch rebuilds the in-memory copy from it. It holds finished
trials only: a trial still running when the driver is killed is not there (its row in the
nas store is marked interrupted; a grid point that did not finish is enqueued again, a
sampler asks anew). Stores written by an older nas hold asked trials as RUNNING: they are
failed there, and their parameters are returned for the caller to run again.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from functools import partial

import optuna
from optuna.distributions import distribution_to_json
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.storages._rdb import models
from optuna.study import StudyDirection
from optuna.trial import TrialState
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session


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
        self.storage = storage
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

    def record(self, trial: optuna.Trial, write: Callable[[Callable[[], object]], None] | None = None) -> None:
        """Write `trial`, finished in the in-memory study, to the stored study (one transaction):
        now, or by `write` (the launch's queued writes: `nas.db.write_behind`)."""
        frozen = self.study._storage.get_trial(trial._trial_id)  # the in-memory study's own copy
        if not frozen.state.is_finished():
            raise ValueError(f"trial {trial.number} is {frozen.state.name}; only finished trials are stored.")
        if isinstance(self.storage, RDBStorage):
            job = partial(_insert_trial, self.storage, self.stored._study_id, frozen)
        else:
            job = partial(self.stored.add_trial, frozen)
        job() if write is None else write(job)


def _insert_trial(storage: RDBStorage, study_id: int, trial: optuna.trial.FrozenTrial) -> None:
    """Store a finished trial as `Study.add_trial` does, row for row, in one transaction of
    bulk inserts. Skipped from add_trial: the check that each
    parameter's distribution agrees with the study's, which the in-memory study (holding
    every stored trial) made when the parameter was suggested."""
    trial._validate()
    with Session(storage.engine) as session, session.begin():
        # Optuna's own lock and numbering: the study row locked, the trial numbered after the
        # trials stored before it (its model's setters store the datetimes as Optuna does)
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        number = session.scalar(select(func.count(models.TrialModel.trial_id))
                                .where(models.TrialModel.study_id == study_id))
        row = models.TrialModel(study_id=study_id, number=number, state=trial.state,
                                datetime_start=trial.datetime_start, datetime_complete=trial.datetime_complete)
        session.add(row)
        session.flush()
        trial_id = row.trial_id
        value_repr = models.TrialValueModel.value_to_stored_repr
        step_repr = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
        children = {
            models.TrialValueModel: [
                dict(trial_id=trial_id, objective=i, **dict(zip(("value", "value_type"), value_repr(v))))
                for i, v in enumerate(trial.values or [])],
            models.TrialParamModel: [
                dict(trial_id=trial_id, param_name=name, param_value=trial.distributions[name].to_internal_repr(value),
                     distribution_json=distribution_to_json(trial.distributions[name]))
                for name, value in trial.params.items()],
            models.TrialUserAttributeModel: [
                dict(trial_id=trial_id, key=key, value_json=json.dumps(value)) for key, value in trial.user_attrs.items()],
            models.TrialSystemAttributeModel: [
                dict(trial_id=trial_id, key=key, value_json=json.dumps(value))
                for key, value in trial.system_attrs.items()],
            models.TrialIntermediateValueModel: [
                dict(trial_id=trial_id, step=step,
                     **dict(zip(("intermediate_value", "intermediate_value_type"), step_repr(value))))
                for step, value in trial.intermediate_values.items()],
        }
        for model, rows in children.items():
            if rows:
                session.execute(insert(model), rows)


def _name_metrics(study: optuna.Study, names: list[str]) -> None:
    """Label the objectives, so optuna-dashboard's plots say val_acc, train_seconds, ..."""
    if study.metric_names != names:
        with warnings.catch_warnings():  # set_metric_names is experimental in Optuna 4-5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)

