"""The search's Optuna studies: worked on in memory, each finished trial mirrored to the
store's database.

Optuna's RDB storage reads the study back on every call that needs its trials (each
suggestion, each pruning decision) and writes every parameter, user attribute and
intermediate value in a transaction of its own; the sampler and the pruners then walk every
trial. At 10,000 trials that cost the driver seconds per trial (`benchmarks/driver_scale.py`).
So the driver asks, reports, prunes and tells on an in-memory copy, and writes each trial to
the database study once, complete, when it finishes: six statements into Optuna's own
tables, with its pruning twin's (`_insert_trials`), in the nas store's transaction when the
studies are in its database (`record`); queued, the trials committed together share the six.
`Study.add_trial` would write the same rows, but with a query and an insert per parameter,
attribute and intermediate value (about 50 statements for a search trial and its pruning
twin, the driver's largest cost per trial on PostgreSQL: `benchmarks/driver_scale.py`).

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
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from functools import lru_cache, partial

import optuna
from optuna.distributions import distribution_to_json
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.storages._rdb import models
from optuna.study import StudyDirection
from optuna.trial import TrialState
from sqlalchemy import cast, func, insert, literal, select, union_all
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from nas.db import Store

Write = Callable[..., None]  # write(job, store=...): WriteBehind.submit


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

    def finished(self, trial: optuna.Trial) -> optuna.trial.FrozenTrial:
        """The in-memory study's own copy of `trial`, which must be finished."""
        frozen = self.study._storage.get_trial(trial._trial_id)
        if not frozen.state.is_finished():
            raise ValueError(f"trial {trial.number} is {frozen.state.name}; only finished trials are stored.")
        return frozen


def record(finished: Sequence[tuple[MirroredStudy, optuna.Trial]], write: Write | None = None, *,
           store: Store | None = None) -> None:
    """Write trials finished in their in-memory studies (one per study: a search trial and its
    pruning twin) to their stored studies in one transaction: now, or by
    `write(job, store=...)` (`WriteBehind.submit`).

    `store`: the nas store; when the studies are in its database, the trials are written in its
    transaction (`Store.run_in_transaction`), so queued, they join the store writes queued
    beside them: a commit fewer per trial.
    """
    trials = [(mirrored, mirrored.finished(trial)) for mirrored, trial in finished]
    storages = {id(mirrored.storage) for mirrored, _ in trials}
    if len(storages) != 1 or len({mirrored.stored._study_id for mirrored, _ in trials}) != len(trials):
        raise ValueError("record writes one trial per study, all to one storage.")
    storage, joins = trials[0][0].storage, False
    if isinstance(storage, RDBStorage):
        rows = [(mirrored.stored._study_id, frozen) for mirrored, frozen in trials]
        joins = store is not None and _same_database(store.engine, storage.engine)
        job = _StoreMirror(store, rows) if joins else partial(_in_transaction, storage.engine,
                                                             partial(_insert_trials, trials=rows))
    else:
        def job() -> None:
            for mirrored, frozen in trials:
                mirrored.stored.add_trial(frozen)
    job() if write is None else write(job, store=joins)


class _StoreMirror:
    """Trials written to their stored studies in the nas store's transaction. Queued
    (`nas.db.write_behind`), it commutes with the store's writes (it touches only Optuna's
    tables), and the mirrors queued in one group merge: six statements for all their trials."""

    commutes = True

    def __init__(self, store: Store, trials: list[tuple[int, optuna.trial.FrozenTrial]]) -> None:
        self.store, self.trials = store, trials

    def __call__(self) -> None:
        self.merge([self])

    @staticmethod
    def merge(mirrors: Sequence[_StoreMirror]) -> None:
        """What each of `mirrors` writes, in their order, in one `_insert_trials`."""
        mirrors[0].store.run_in_transaction(partial(_insert_trials, trials=[t for m in mirrors for t in m.trials]))


def _same_database(a: Engine, b: Engine) -> bool:
    """Whether two engines open one database (their drivers may differ)."""
    return _same_url(a.url, b.url)


@lru_cache(maxsize=8)  # asked at every finished trial, for the same two engines
def _same_url(a: URL, b: URL) -> bool:
    def where(url: URL) -> str:
        return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=False)
    return where(a) == where(b)


def _in_transaction(engine: Engine, write: Callable[[Session], None]) -> None:
    with Session(engine) as session, session.begin():
        write(session)


def _insert_trials(session: Session, trials: Sequence[tuple[int, optuna.trial.FrozenTrial]]) -> None:
    """Store finished trials, (study id, trial) in order, as `Study.add_trial` would one
    after the other, row for row, in the session's transaction, in six statements (a round
    trip each on PostgreSQL): the trials' rows, each numbered after the trials stored before
    it in its study, then each child table's rows of them all. Skipped from add_trial: the
    check that each parameter's distribution agrees with the study's, which the in-memory
    study (holding every stored trial) made when the parameter was suggested; and the lock on
    the study's row while numbering, as the experiment's lease (nas.db.lease) makes the driver
    its studies' only writer."""
    table, mapper = models.TrialModel.__table__, sa_inspect(models.TrialModel)
    numbered, earlier = [], Counter()  # earlier: this call's trials of the study before this one
    for study_id, trial in trials:
        trial._validate()
        # the row's columns as Optuna's model sets them (its setters store naive UTC datetimes)
        row = models.TrialModel(study_id=study_id, state=trial.state, datetime_start=trial.datetime_start,
                                datetime_complete=trial.datetime_complete)
        values = [literal(getattr(row, mapper.get_property_by_column(table.c[name]).key), table.c[name].type)
                  for name in ("study_id", "state", "datetime_start", "datetime_complete")]
        values[1] = cast(values[1], table.c.state.type)  # PostgreSQL's enum type (a UNION's column is text)
        numbered.append(select(func.count(models.TrialModel.trial_id) + earlier[study_id], *values)
                        .where(models.TrialModel.study_id == study_id))
        earlier[study_id] += 1
    ids: dict[int, list[int]] = defaultdict(list)  # by study, in number order: the trials' order
    for study_id, _, trial_id in sorted(session.execute(
            insert(models.TrialModel)
            .from_select(["number", "study_id", "state", "datetime_start", "datetime_complete"],
                         numbered[0] if len(numbered) == 1 else union_all(*numbered))
            .returning(models.TrialModel.study_id, models.TrialModel.number, models.TrialModel.trial_id))):
        ids[study_id].append(trial_id)
    children: dict[type, list[dict]] = {model: [] for model in _CHILDREN}
    for study_id, trial in trials:
        for model, rows in _children(ids[study_id].pop(0), trial).items():
            children[model] += rows
    for model, rows in children.items():
        if rows:
            session.execute(insert(model), rows)


_CHILDREN = (models.TrialValueModel, models.TrialParamModel, models.TrialUserAttributeModel,
             models.TrialSystemAttributeModel, models.TrialIntermediateValueModel)


def _children(trial_id: int, trial: optuna.trial.FrozenTrial) -> dict[type, list[dict]]:
    """A stored trial's rows in Optuna's child tables, in Optuna's representations."""
    value_repr = models.TrialValueModel.value_to_stored_repr
    step_repr = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
    return {
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
            dict(trial_id=trial_id, key=key, value_json=json.dumps(value)) for key, value in trial.system_attrs.items()],
        models.TrialIntermediateValueModel: [
            dict(trial_id=trial_id, step=step,
                 **dict(zip(("intermediate_value", "intermediate_value_type"), step_repr(value))))
            for step, value in trial.intermediate_values.items()],
    }


def _name_metrics(study: optuna.Study, names: list[str]) -> None:
    """Label the objectives, so optuna-dashboard's plots say val_acc, train_seconds, ..."""
    if study.metric_names != names:
        with warnings.catch_warnings():  # set_metric_names is experimental in Optuna 4-5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)

