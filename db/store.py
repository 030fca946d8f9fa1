"""`Store`: the one writer of experiments, architectures, trials and epoch results.

Each method is one short transaction, committed before it returns (or joins the block's
`Store.transaction`), so a killed process loses at most the epoch in flight (`nas launch`: the
writes still queued, `nas.db.write_behind`) and a reader never waits long. Reads return ORM
rows (`Experiment`, `Architecture`, `Trial`, `EpochResult`) detached from any session:
their columns are loaded and plain attribute access works, but changing an attribute
writes nothing; all writes go through the methods here.

    with Store.open(resolve_db_url(args.db)) as store:
        exp = store.ensure_experiment("cifar-fast-0", space_yaml=text)
        store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), p, f)
        trial = store.start_trial(exp, arch.hash, seed=0, phase=Phase.SEARCH, ...)
        store.record_epoch(trial, 0, train_loss=1.2, train_acc=0.6, ...)
        store.finish_trial(trial, TrialStatus.COMPLETED)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterator, TypeVar

from sqlalchemy import Float, case, delete, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from nas.db.engine import check_schema, make_engine, mask_url, upgrade
from nas.db.schema import (
    AblationVariant,
    Architecture,
    EpochResult,
    ExitCurvePoint,
    Experiment,
    ExperimentStatus,
    Phase,
    Trial,
    TrialStatus,
    TrialWeights,
    WidthCurvePoint,
    utcnow,
)
from nas.errors import StoreError

_E = TypeVar("_E", ExperimentStatus, TrialStatus, Phase)


class Store:
    """Reads and writes the nas tables of one database.

    Build it with `Store.open`; use it as a context manager or call `close`.
    """

    def __init__(self, engine: Engine, *, read_only: bool = False) -> None:
        self.engine = engine
        self.read_only = read_only
        # expire_on_commit=False: returned rows stay readable after their session ends.
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # Called first inside every write transaction, with its session: the experiment lease's
        # fence while one is held (nas.db.lease), so a writer that lost it writes nothing.
        self.write_guard: Callable[[Session], None] | None = None
        self._joined = threading.local()  # .session: the transaction this thread's writes join

    @classmethod
    def open(cls, url: str, *, read_only: bool = False) -> Store:
        """Open the store at `url`, upgrading its schema unless `read_only`.

        Args:
            url: a database URL (see `nas.db.resolve_db_url`).
            read_only: never write: for the dashboard and reports. The schema must
                already be this code's (a read-only open cannot upgrade it).

        Raises:
            StoreError: the URL is unusable, the database cannot be opened, it is
                newer than this code, or (read-only) missing or not yet upgraded.
        """
        engine = make_engine(url, read_only=read_only)
        try:
            if read_only:
                check_schema(engine)
            else:
                upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, read_only=read_only)

    @property
    def url(self) -> str:
        """The database URL with its password masked."""
        return mask_url(self.engine.url)

    def close(self) -> None:
        """Close every pooled connection; the store must not be used afterwards."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"Store({self.url!r}, {mode})"

    # ---- experiments ----------------------------------------------------------------

    def ensure_experiment(
        self,
        name: str,
        *,
        config_json: str | None = None,
        space_yaml: str | None = None,
        code_version: str | None = None,
    ) -> int:
        """The id of the experiment called `name`, created (status running) if new.

        An existing experiment is returned unchanged: its config and status are kept.
        """
        with self._write() as session:
            session.execute(
                self._insert(Experiment)
                .values(name=name, config_json=config_json, space_yaml=space_yaml, code_version=code_version)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            return session.scalars(select(Experiment.id).where(Experiment.name == name)).one()

    def finish_experiment(self, experiment_id: int, status: ExperimentStatus | str) -> None:
        """Set the final status and the finish time (cleared again for ``running``)."""
        status = _member(ExperimentStatus, status)
        with self._write() as session:
            experiment = _get(session, Experiment, experiment_id)
            experiment.status = status.value
            experiment.finished_at = None if status is ExperimentStatus.RUNNING else utcnow()

    # ---- architectures --------------------------------------------------------------

    def upsert_architecture(
        self, hash: str, config_json: str, short_name: str, params: int, flops: int
    ) -> None:
        """Store an architecture unless its hash is already there.

        Raises:
            StoreError: the hash is stored with a different config (a hash collision,
                or a change to the canonical JSON form).
        """
        with self._write() as session:
            if session.execute(self._insert(Architecture)  # a new one: one statement
                               .values(hash=hash, config_json=config_json, short_name=short_name, params=params,
                                       flops=flops)
                               .on_conflict_do_nothing(index_elements=["hash"]).returning(Architecture.hash)).first():
                return
            stored = session.scalars(select(Architecture.config_json).where(Architecture.hash == hash)).one()
        if stored != config_json:
            raise StoreError(
                f"architecture hash {hash} is already stored in {self.url} with config "
                f"{stored}, not {config_json}: a hash collision or a changed canonical "
                "form. Use a new database, or report this as a bug."
            )

    # ---- trials ---------------------------------------------------------------------

    def start_trial(
        self,
        experiment_id: int,
        arch_hash: str,
        seed: int,
        phase: Phase | str,
        *,
        epochs_planned: int,
        recipe_json: str,
        device: str,
        code_version: str | None,
        started_at: datetime | None = None,
    ) -> int:
        """Record a new running trial of (architecture, seed) and return its id.

        The experiment and the architecture (`upsert_architecture`) must exist. `started_at`
        (aware) is when it really started, if before now (a Ray trial: in its worker).
        """
        phase = _member(Phase, phase)
        values = dict(experiment_id=experiment_id, arch_hash=arch_hash, seed=seed, phase=phase.value,
                      status=TrialStatus.RUNNING.value, epochs_planned=epochs_planned, epochs_done=0,
                      recipe_json=recipe_json, device=device, code_version=code_version,
                      started_at=started_at or utcnow())
        # one statement: the row inserted only if its experiment and architecture exist
        row = select(*(literal(v, Trial.__table__.c[k].type) for k, v in values.items())).where(
            select(Experiment.id).where(Experiment.id == experiment_id).exists(),
            select(Architecture.hash).where(Architecture.hash == arch_hash).exists())
        with self._write() as session:
            trial_id = session.scalar(insert(Trial).from_select(list(values), row).returning(Trial.id))
            if trial_id is None:
                _get(session, Experiment, experiment_id)
                _get(session, Architecture, arch_hash)
            return trial_id

    def record_epoch(self, trial_id: int, epoch: int, *, train_loss: float, train_acc: float, val_acc: float | None,
                     test_acc: float | None, epoch_seconds: float, cumulative_seconds: float,
                     val_images: int | None = None,  # images val_acc / test_acc were measured on (None: unknown)
                     test_images: int | None = None,
                     val_correct: bytes | None = None,  # which of them it got right (nas.stats.pack_correct)
                     test_correct: bytes | None = None) -> None:
        """Record the metrics of epoch `epoch` (from 0) of a trial.

        Sets the trial's ``epochs_done`` to ``epoch + 1`` and ``best_val_acc`` to the
        best over epochs 0..epoch. Recording an epoch again (a resumed trial
        re-reporting) overwrites it, and drops any later epochs: those came from the
        run that was abandoned, and the resumed run will record them again.
        """
        if epoch < 0:
            raise ValueError(f"epoch counts from 0, but got {epoch=}.")
        metrics = dict(train_loss=train_loss, train_acc=train_acc, val_acc=val_acc, test_acc=test_acc,
                       epoch_seconds=epoch_seconds, cumulative_seconds=cumulative_seconds,
                       val_images=val_images, test_images=test_images, val_correct=val_correct,
                       test_correct=test_correct)
        upsert = (self._insert(EpochResult).values(trial_id=trial_id, epoch=epoch, **metrics)
                  .on_conflict_do_update(index_elements=["trial_id", "epoch"], set_=metrics))
        running_max: dict[str, Any] = {}  # as MAX over the rows: NULL ignored; a NaN, which
        if val_acc is not None:  # PostgreSQL orders above every number, wins (SQLite stores NULL)
            value = literal(val_acc, Float)
            running_max["best_val_acc"] = case(
                (or_(Trial.best_val_acc.is_(None), value > Trial.best_val_acc), value), else_=Trial.best_val_acc)
        advance = (update(Trial).where(Trial.id == trial_id, Trial.epochs_done == epoch)
                   .values(epochs_done=epoch + 1, **running_max))
        postgres = self.engine.dialect.name == "postgresql"
        if postgres:  # one round trip: the row is inserted only if the count advanced
            advanced = advance.returning(Trial.id).cte("advanced")
            columns = EpochResult.__table__.c
            next_epoch = (pg_insert(EpochResult).from_select(
                ["trial_id", "epoch", *metrics],
                select(advanced.c.id, literal(epoch), *(literal(v, columns[k].type) for k, v in metrics.items())))
                .on_conflict_do_update(index_elements=["trial_id", "epoch"], set_=metrics).add_cte(advanced)
                .returning(EpochResult.epoch))
        with self._write() as session:
            # The driver records every epoch of every trial: the next one, the usual case, in
            # one statement on PostgreSQL, two on SQLite (the trial's count and running best, then the row)
            if postgres:
                if session.execute(next_epoch).first():
                    return
            elif session.execute(advance).rowcount:
                session.execute(upsert)
                return
            # An epoch again (a resumed trial re-reporting) or out of order: four statements
            found = session.execute(update(Trial).where(Trial.id == trial_id)  # first: an unknown trial
                                    .values(epochs_done=epoch + 1)).rowcount  # writes nothing
            if not found:
                raise KeyError(f"no nas_trials row with key {trial_id!r}.")
            session.execute(upsert)
            session.execute(  # later epochs came from an abandoned run; best over those kept
                delete(EpochResult).where(EpochResult.trial_id == trial_id, EpochResult.epoch > epoch))
            best = select(func.max(EpochResult.val_acc)).where(EpochResult.trial_id == trial_id).scalar_subquery()
            session.execute(update(Trial).where(Trial.id == trial_id).values(best_val_acc=best))

    def finish_trial(
        self,
        trial_id: int,
        status: TrialStatus | str,
        *,
        train_seconds: float | None = None,
        error: str | None = None,
        prune_reason: str | None = None,
    ) -> None:
        """Set a trial's final status, copying the last epoch's metrics to final_*.

        Args:
            trial_id: the id from `start_trial`.
            status: any status but ``running``.
            train_seconds: training wall seconds, excluding evaluation; by default the
                last recorded epoch's ``cumulative_seconds``.
            error: why it failed or diverged, e.g. the exception's message.
            prune_reason: why it was pruned (nas.search.pruning.PruneReason's JSON).
        """
        status = _member(TrialStatus, status)
        if status is TrialStatus.RUNNING:
            raise ValueError("finish_trial needs a final status, but got 'running'.")

        def last(column: Any) -> Any:  # the last recorded epoch's value
            return (select(column).where(EpochResult.trial_id == trial_id).order_by(EpochResult.epoch.desc())
                    .limit(1).scalar_subquery())

        has_epochs = select(EpochResult.epoch).where(EpochResult.trial_id == trial_id).exists()
        finals = {f"final_{name}": case((has_epochs, last(getattr(EpochResult, name))),  # none: kept
                                        else_=getattr(Trial, f"final_{name}"))
                  for name in ("train_loss", "train_acc", "val_acc", "test_acc", "val_images", "test_images")}
        with self._write() as session:  # one statement
            if not session.execute(update(Trial).where(Trial.id == trial_id).values(
                    status=status.value, error=error, prune_reason=prune_reason, finished_at=utcnow(), **finals,
                    train_seconds=last(EpochResult.cumulative_seconds) if train_seconds is None else train_seconds,
            )).rowcount:
                raise KeyError(f"no nas_trials row with key {trial_id!r}.")

    # ---- per-trial artefacts (nas.trials.artifacts) ------------------------------------

    def replace_trial_rows(self, trial_id: int, entity: type[Any], rows: Sequence[Any]) -> None:
        """Keep `rows` (instances of `entity`, a table keyed by ``trial_id``) as the trial's
        artefact, replacing any saved before: one table per artefact, no method per table."""
        with self._write() as session:
            _get(session, Trial, trial_id)
            session.execute(delete(entity).where(entity.trial_id == trial_id))
            session.add_all(rows)

    def trial_rows(self, trial_id: int, entity: type[Any], order_by: Any) -> list[Any]:
        """A trial's rows of an artefact table, ordered by `order_by`; empty when none were saved."""
        with self._read() as session:
            return list(session.scalars(select(entity).where(entity.trial_id == trial_id).order_by(order_by)))

    def save_weights(self, trial_id: int, data: bytes, *, format: str = "torch-state-dict") -> None:
        """Keep a trial's trained weights (replacing any saved before)."""
        self.replace_trial_rows(trial_id, TrialWeights, [TrialWeights(trial_id=trial_id, format=format, data=data)])

    def load_weights(self, trial_id: int) -> bytes | None:
        """A trial's saved weights, or None when none were kept."""
        with self._read() as session:
            return session.scalar(select(TrialWeights.data).where(TrialWeights.trial_id == trial_id))

    def trials_with_weights(self, experiment_id: int) -> list[int]:
        """Ids of the experiment's trials whose weights are kept."""
        with self._read() as session:
            return list(session.scalars(
                select(TrialWeights.trial_id).join(Trial, Trial.id == TrialWeights.trial_id)
                .where(Trial.experiment_id == experiment_id)
            ))

    def delete_weights(self, trial_ids: list[int]) -> None:
        if not trial_ids:
            return
        with self._write() as session:
            session.execute(delete(TrialWeights).where(TrialWeights.trial_id.in_(trial_ids)))

    def save_exit_curve(self, trial_id: int, split: str, points: Sequence[Mapping[str, Any]]) -> None:
        """Keep a trial's early-exit curve (replacing any saved before).

        Args:
            trial_id: the id from `start_trial`.
            split: ``val`` or ``test``, the images the curve was measured on.
            points: one mapping per threshold, ascending, with ``threshold``, ``accuracy``,
                ``mean_flops`` and ``exit_shares`` (a list: side exits in order, then the
                final exit), as `nas.models.exits.ExitPoint` holds them.
        """
        self.replace_trial_rows(trial_id, ExitCurvePoint, [
            ExitCurvePoint(
                trial_id=trial_id, position=i, threshold=float(p["threshold"]), split=split,
                accuracy=float(p["accuracy"]), mean_flops=float(p["mean_flops"]),
                exit_shares=json.dumps([float(s) for s in p["exit_shares"]]),
            )
            for i, p in enumerate(points)
        ])

    def exit_curve(self, trial_id: int) -> list[ExitCurvePoint]:
        """A trial's early-exit curve, thresholds ascending; empty when none was saved."""
        return self.trial_rows(trial_id, ExitCurvePoint, ExitCurvePoint.position)

    def save_width_curve(self, trial_id: int, points: Sequence[Mapping[str, Any]]) -> None:
        """Keep a universally slimmable trial's accuracy per width (replacing any saved before).

        Args:
            trial_id: the id from `start_trial`.
            points: one mapping per width ratio with ``width``, ``params``, ``flops``,
                ``val_acc`` (None without a val split) and ``test_acc``, as
                `nas.training.usnets.WidthPoint` holds them.
        """
        self.replace_trial_rows(trial_id, WidthCurvePoint, [
            WidthCurvePoint(
                trial_id=trial_id, width=float(p["width"]), params=int(p["params"]), flops=int(p["flops"]),
                val_acc=None if p["val_acc"] is None else float(p["val_acc"]),
                test_acc=None if p["test_acc"] is None else float(p["test_acc"]),
            )
            for p in points
        ])

    def width_curve(self, trial_id: int) -> list[WidthCurvePoint]:
        """A trial's accuracy per width ratio, widths ascending; empty when none was saved."""
        return self.trial_rows(trial_id, WidthCurvePoint, WidthCurvePoint.width)

    # ---- ablations --------------------------------------------------------------------

    def add_ablation_variant(self, experiment_id: int, reference_hash: str, arch_hash: str, *, key: str, move: str,
                             change: str, position: int, looks: tuple[int, int] | None = None) -> None:
        """Link a variant to the reference it ablates (kept if already linked; `looks`, the
        study's planned first and last look in seeds, are the latest plan's).

        Both architectures must be stored (`upsert_architecture`).
        """
        first, last = looks or (None, None)
        with self._write() as session:
            _get(session, Experiment, experiment_id)
            for hash_ in (reference_hash, arch_hash):
                _get(session, Architecture, hash_)
            session.execute(
                self._insert(AblationVariant)
                .values(experiment_id=experiment_id, reference_hash=reference_hash, arch_hash=arch_hash, key=key,
                        move=move, change=change, position=position, created_at=utcnow(), first_look=first,
                        last_look=last)
                .on_conflict_do_update(index_elements=["experiment_id", "reference_hash", "arch_hash"],
                                       set_={"first_look": first, "last_look": last})
            )

    def ablation_variants(
        self, experiment_id: int, reference_hash: str | None = None
    ) -> list[AblationVariant]:
        """The variants linked to a reference (any reference if None), in plan order."""
        query = select(AblationVariant).where(AblationVariant.experiment_id == experiment_id)
        if reference_hash is not None:
            query = query.where(AblationVariant.reference_hash == reference_hash)
        query = query.order_by(AblationVariant.reference_hash, AblationVariant.position)
        with self._read() as session:
            return list(session.scalars(query))

    def correct(self, trial_ids: list[int], split: str = "val") -> dict[int, tuple[bytes, int]]:
        """Per trial, its last epoch's per-image correctness on `split` (val | test) and its
        image count; trials without one are left out."""
        bits, images = (EpochResult.val_correct, EpochResult.val_images) if split == "val" else (
            EpochResult.test_correct, EpochResult.test_images)
        query = (select(EpochResult.trial_id, bits, images).where(EpochResult.trial_id.in_(trial_ids), bits.is_not(None))
                 .order_by(EpochResult.trial_id, EpochResult.epoch))
        with self._read() as session:
            return {trial_id: (data, n) for trial_id, data, n in session.execute(query)}  # the last epoch wins

    def get_experiment(self, name: str) -> Experiment | None:
        """The experiment called `name`, or None."""
        with self._read() as session:
            return session.scalars(select(Experiment).where(Experiment.name == name)).first()

    def experiments(self) -> list[Experiment]:
        """Every experiment, oldest first."""
        with self._read() as session:
            return list(session.scalars(select(Experiment).order_by(Experiment.id)))

    def get_architecture(self, hash: str) -> Architecture | None:
        """The architecture with this hash, or None."""
        with self._read() as session:
            return session.get(Architecture, hash)

    def architectures(self) -> list[Architecture]:
        """Every stored architecture, in hash order."""
        with self._read() as session:
            return list(session.scalars(select(Architecture).order_by(Architecture.hash)))

    def get_trial(self, trial_id: int) -> Trial | None:
        """The trial with this id, or None."""
        with self._read() as session:
            return session.get(Trial, trial_id)

    def trials(
        self,
        experiment_id: int | None = None,
        phase: Phase | str | None = None,
        status: TrialStatus | str | None = None,
    ) -> list[Trial]:
        """Trials matching every filter given, in the order they were started."""
        query = select(Trial).order_by(Trial.id)
        if experiment_id is not None:
            query = query.where(Trial.experiment_id == experiment_id)
        if phase is not None:
            query = query.where(Trial.phase == _member(Phase, phase).value)
        if status is not None:
            query = query.where(Trial.status == _member(TrialStatus, status).value)
        with self._read() as session:
            return list(session.scalars(query))

    def epochs(self, trial_id: int) -> list[EpochResult]:
        """The recorded epochs of a trial, epoch 0 first."""
        with self._read() as session:
            query = (
                select(EpochResult)
                .where(EpochResult.trial_id == trial_id)
                .order_by(EpochResult.epoch)
            )
            return list(session.scalars(query))

    # ---- helpers --------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The block's writes (this thread's) in one transaction, committed at its end and
        rolled back if it raises (`nas.db.write_behind` groups queued writes with it)."""
        if getattr(self._joined, "session", None) is not None:
            raise RuntimeError("Store.transaction blocks do not nest.")
        with self._write() as session:  # the lease is fenced once, inside the transaction
            self._joined.session = session
            try:
                yield
            finally:
                self._joined.session = None

    def run_in_transaction(self, write: Callable[[Session], None]) -> None:
        """`write(session)` in a committed transaction, or this thread's `transaction`: for
        rows of tables in this database that are not nas's (the Optuna studies' mirror)."""
        with self._write() as session:
            write(session)

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One committed transaction, or the thread's `transaction`; rolled back if the block raises."""
        joined = getattr(self._joined, "session", None)
        if joined is not None:
            yield joined
            return
        if self.read_only:
            raise StoreError(
                f"{self.url} was opened read-only; open it with read_only=False to write."
            )
        with self._sessions.begin() as session:
            if self.write_guard is not None:
                self.write_guard(session)
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def _insert(self, entity: type[Any]) -> Any:
        """An INSERT that supports ON CONFLICT (SQLite and PostgreSQL spell it alike)."""
        if self.engine.dialect.name == "postgresql":
            return pg_insert(entity)
        return sqlite_insert(entity)


def _member(kind: type[_E], value: _E | str) -> _E:
    """`value` as a member of the enum `kind`; a typo fails before anything is written."""
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValueError(f"{kind.__name__} must be one of {allowed}, but got {value!r}.") from None


def _get(session: Session, entity: type[Any], key: Any) -> Any:
    row = session.get(entity, key)
    if row is None:
        raise KeyError(f"no {entity.__tablename__} row with key {key!r}.")
    return row
