"""The SQL store: round trips, SQLite concurrency settings, read-only access, migrations.

Tests that take the `db_url` fixture run on a SQLite file and, when
NAS_TEST_POSTGRES_URL is set (`source .ci/postgres.sh`), on PostgreSQL in a fresh schema.
"""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import time
from datetime import timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from alembic.script import ScriptDirectory
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

import nas.db.engine as nas_db_engine
from nas.db import (
    ExperimentStatus,
    Phase,
    Store,
    TrialStatus,
    make_engine,
    resolve_db_url,
    upgrade,
)
from nas.db.schema import ALEMBIC_VERSION_TABLE, Base, EpochResult
from nas.errors import StoreError
from tests.old_store import OLD_TRIAL_ID, write_old_store


# ---- fixtures -----------------------------------------------------------------------


def _sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def _new_trial(store: Store, experiment_id: int | None = None) -> int:
    if experiment_id is None:
        experiment_id = store.ensure_experiment("exp")
    store.upsert_architecture("a1b2c3d4e5f6", '{"width":0.5}', "base w=0.5", 1_234_567, 89_000_000)
    return store.start_trial(
        experiment_id,
        "a1b2c3d4e5f6",
        seed=0,
        phase=Phase.SEARCH,
        epochs_planned=3,
        recipe_json='{"lr":0.4}',
        device="cpu",
        code_version="abc123",
    )


def _record(store: Store, trial_id: int, epoch: int, val_acc: float | None, **overrides) -> None:
    metrics = dict(
        train_loss=2.0 - epoch * 0.5,
        train_acc=0.5 + epoch * 0.1,
        val_acc=val_acc,
        test_acc=None if val_acc is None else val_acc - 0.01,
        epoch_seconds=1.5,
        cumulative_seconds=1.5 * (epoch + 1),
    )
    store.record_epoch(trial_id, epoch, **(metrics | overrides))


# ---- round trip ---------------------------------------------------------------------


def test_round_trip_reads_back_through_a_new_store(db_url: str) -> None:
    with Store.open(db_url) as store:
        experiment_id = store.ensure_experiment(
            "cifar-fast", config_json='{"budget":"cpu"}', space_yaml="L1: {}\n", code_version="v1"
        )
        trial_id = _new_trial(store, experiment_id)
        _record(store, trial_id, 0, 0.60)
        _record(store, trial_id, 1, 0.75)
        store.finish_trial(trial_id, TrialStatus.COMPLETED, train_seconds=3.2)
        store.finish_experiment(experiment_id, ExperimentStatus.FINISHED)

    with Store.open(db_url, read_only=True) as store:  # as the dashboard opens it
        experiment = store.get_experiment("cifar-fast")
        assert experiment is not None and experiment.id == experiment_id
        assert (experiment.status, experiment.config_json, experiment.space_yaml) == (
            "finished",
            '{"budget":"cpu"}',
            "L1: {}\n",
        )
        assert experiment.created_at.tzinfo == timezone.utc
        assert experiment.finished_at >= experiment.created_at
        arch = store.get_architecture("a1b2c3d4e5f6")
        assert (arch.config_json, arch.short_name, arch.params, arch.flops) == (
            '{"width":0.5}',
            "base w=0.5",
            1_234_567,
            89_000_000,
        )
        [trial] = store.trials(experiment_id=experiment_id, phase="search", status="completed")
        assert trial.id == trial_id
        assert (trial.arch_hash, trial.seed, trial.device, trial.recipe_json) == (
            "a1b2c3d4e5f6",
            0,
            "cpu",
            '{"lr":0.4}',
        )
        assert (trial.epochs_planned, trial.epochs_done, trial.train_seconds) == (3, 2, 3.2)
        assert trial.finished_at.tzinfo == timezone.utc
        assert [(e.epoch, e.val_acc, e.cumulative_seconds) for e in store.epochs(trial_id)] == [
            (0, 0.60, 1.5),
            (1, 0.75, 3.0),
        ]
        assert store.trials(phase=Phase.CONFIRM) == []


def test_ensure_experiment_returns_the_same_id_for_the_same_name(db_url: str) -> None:
    with Store.open(db_url) as store:
        first = store.ensure_experiment("a", config_json="{}")
        other = store.ensure_experiment("b")
        assert store.ensure_experiment("a") == first != other
        assert [e.name for e in store.experiments()] == ["a", "b"]


# ---- SQLite settings and read-only access -------------------------------------------


def test_sqlite_uses_wal_mode_and_a_30s_busy_timeout(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as store, store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    # WAL is a property of the file, so every other reader and writer gets it too.
    with sqlite3.connect(_sqlite_path(sqlite_url)) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_read_only_store_reads_while_a_writer_holds_a_transaction(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as store:
        store.ensure_experiment("committed")
    # EXCLUSIVE: without WAL this would lock readers out until the 30 s busy timeout.
    writer = sqlite3.connect(_sqlite_path(sqlite_url), isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute(
        "INSERT INTO nas_experiments (name, status, created_at) "
        "VALUES ('uncommitted', 'running', '2025-01-01 00:00:00')"
    )
    try:
        with Store.open(sqlite_url, read_only=True) as reader:
            start = time.perf_counter()
            names = [e.name for e in reader.experiments()]
            waited = time.perf_counter() - start
    finally:
        writer.rollback()
        writer.close()
    assert names == ["committed"]
    assert waited < 5.0


def test_writing_through_a_read_only_store_raises_store_error(sqlite_url: str) -> None:
    Store.open(sqlite_url).close()
    with Store.open(sqlite_url, read_only=True) as reader:
        with pytest.raises(StoreError, match="read-only"):
            reader.ensure_experiment("x")


def test_read_only_sqlite_connection_refuses_writes(sqlite_url: str) -> None:
    Store.open(sqlite_url).close()
    with Store.open(sqlite_url, read_only=True) as reader:
        with pytest.raises(OperationalError, match="readonly|read-only|query_only"):
            with reader.engine.begin() as connection:
                connection.execute(
                    text(
                        "INSERT INTO nas_experiments (name, status, created_at) "
                        "VALUES ('x', 'running', '2025-01-01 00:00:00')"
                    )
                )


def test_read_only_open_of_a_missing_file_fails_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "nas.db"
    with pytest.raises(StoreError, match="no nas database"):
        Store.open(f"sqlite:///{path}", read_only=True)
    assert not path.exists() and not path.parent.exists()


@pytest.mark.parametrize("read_only", [True, False])
def test_a_file_that_is_no_database_fails_at_open_and_is_left_unchanged(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"\x00\xffnot sqlite" * 500)
    with pytest.raises(StoreError, match="file is not a database; check that the path is a nas database"):
        Store.open(f"sqlite:///{path}", read_only=read_only)
    assert path.read_bytes() == b"\x00\xffnot sqlite" * 500


# ---- epochs and final metrics -------------------------------------------------------


def test_recording_an_epoch_again_overwrites_it(db_url: str) -> None:
    with Store.open(db_url) as store:
        trial_id = _new_trial(store)
        _record(store, trial_id, 0, 0.50)
        _record(store, trial_id, 0, 0.55, train_loss=9.0)
        [epoch] = store.epochs(trial_id)
        assert (epoch.val_acc, epoch.train_loss) == (0.55, 9.0)
        assert store.get_trial(trial_id).epochs_done == 1


def test_recording_an_earlier_epoch_drops_the_later_ones(db_url: str) -> None:
    with Store.open(db_url) as store:
        trial_id = _new_trial(store)
        for epoch, acc in enumerate([0.5, 0.6, 0.9]):
            _record(store, trial_id, epoch, acc)
        _record(store, trial_id, 1, 0.65)  # resumed from the checkpoint after epoch 0
        assert [(e.epoch, e.val_acc) for e in store.epochs(trial_id)] == [(0, 0.5), (1, 0.65)]
        trial = store.get_trial(trial_id)
        assert (trial.epochs_done, trial.best_val_acc) == (2, 0.65)


def test_finish_trial_copies_the_last_epochs_metrics(db_url: str) -> None:
    with Store.open(db_url) as store:
        trial_id = _new_trial(store)
        _record(store, trial_id, 0, 0.70)
        _record(store, trial_id, 1, 0.65, train_loss=0.3, train_acc=0.9)
        store.finish_trial(trial_id, "completed")
        trial = store.get_trial(trial_id)
        assert trial.status == TrialStatus.COMPLETED
        assert (trial.final_train_loss, trial.final_train_acc) == (0.3, 0.9)
        assert (trial.final_val_acc, trial.final_test_acc) == (0.65, 0.64)
        assert trial.train_seconds == 3.0  # the last epoch's cumulative_seconds


def test_finish_trial_copies_the_last_epochs_evaluation_sizes(db_url: str) -> None:
    with Store.open(db_url) as store:
        trial_id = _new_trial(store)
        _record(store, trial_id, 0, 0.50, val_images=1000)  # test not measured this epoch
        _record(store, trial_id, 1, 0.55, val_images=1000, test_images=10_000)
        store.finish_trial(trial_id, TrialStatus.COMPLETED)
        epochs = store.epochs(trial_id)
        trial = store.get_trial(trial_id)
    assert [(e.val_images, e.test_images) for e in epochs] == [(1000, None), (1000, 10_000)]
    assert (trial.final_val_images, trial.final_test_images) == (1000, 10_000)


def test_an_epoch_recorded_without_evaluation_sizes_stores_them_as_null(db_url: str) -> None:
    with Store.open(db_url) as store:
        trial_id = _new_trial(store)
        _record(store, trial_id, 0, 0.50)  # as a caller that predates them records it
        store.finish_trial(trial_id, TrialStatus.COMPLETED)
        [epoch] = store.epochs(trial_id)
        trial = store.get_trial(trial_id)
    assert (epoch.val_images, epoch.test_images, trial.final_val_images, trial.final_test_images) == (None,) * 4


def test_best_val_acc_is_the_max_over_epochs(db_url: str) -> None:
    with Store.open(db_url) as store:
        trial_id = _new_trial(store)
        for epoch, acc in enumerate([0.5, 0.8, None, 0.7]):
            _record(store, trial_id, epoch, acc)
        store.finish_trial(trial_id, TrialStatus.PRUNED)
        assert store.get_trial(trial_id).best_val_acc == 0.8


_VAL = st.one_of(st.none(), st.floats(0, 1), st.just(float("nan")))


@settings(max_examples=int(os.environ.get("NAS_FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reports=st.lists(st.tuples(st.integers(0, 5), _VAL), min_size=1, max_size=12))
def test_epochs_reported_in_any_order_keep_the_rows_the_count_and_the_best_of_the_epochs_kept(db_url, reports):
    """Against a model of the rule: an epoch (re)recorded replaces its row and drops the later
    ones; epochs_done is one past it; best_val_acc the MAX of the kept rows' val_acc."""
    with Store.open(db_url) as store:
        trial_id = _new_trial(store)
        kept: dict[int, float | None] = {}
        for epoch, val in reports:
            _record(store, trial_id, epoch, val)
            kept = {e: v for e, v in kept.items() if e < epoch} | {epoch: val}
            stored = {e.epoch: e.val_acc for e in store.epochs(trial_id)}
            trial = store.get_trial(trial_id)
            assert sorted(stored) == sorted(kept) and trial.epochs_done == epoch + 1
            with store._read() as session:  # MAX over the kept rows, as the database computes it
                best = session.scalar(select(func.max(EpochResult.val_acc)).where(EpochResult.trial_id == trial_id))
            assert _same(trial.best_val_acc, best), (kept, trial.best_val_acc, best)
            for e, v in kept.items():  # SQLite stores a NaN as NULL; PostgreSQL keeps it
                assert _same(stored[e], v) or (v is not None and math.isnan(v) and stored[e] is None)


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


def test_a_failed_trial_without_epochs_keeps_its_error(db_url: str) -> None:
    with Store.open(db_url) as store:
        trial_id = _new_trial(store)
        store.finish_trial(trial_id, TrialStatus.FAILED, error="CUDA out of memory")
        trial = store.get_trial(trial_id)
        assert (trial.status, trial.error, trial.final_val_acc) == (
            "failed",
            "CUDA out of memory",
            None,
        )


def test_a_changed_config_under_a_stored_hash_is_a_store_error(db_url: str) -> None:
    with Store.open(db_url) as store:
        store.upsert_architecture("h1", '{"width":0.5}', "w=0.5", 1, 2)
        store.upsert_architecture("h1", '{"width":0.5}', "w=0.5", 1, 2)  # same: fine
        with pytest.raises(StoreError, match="hash h1"):
            store.upsert_architecture("h1", '{"width":2.0}', "w=2", 1, 2)


def test_a_trial_of_an_unknown_experiment_or_architecture_or_an_unknown_trial_is_a_key_error(db_url: str) -> None:
    with Store.open(db_url) as store:
        trial_id = _new_trial(store)
        experiment_id = store.get_trial(trial_id).experiment_id
        start = dict(seed=1, phase=Phase.SEARCH, epochs_planned=3, recipe_json="{}", device="cpu", code_version=None)
        with pytest.raises(KeyError, match="no nas_experiments row with key 999"):
            store.start_trial(999, "a1b2c3d4e5f6", **start)
        with pytest.raises(KeyError, match="no nas_architectures row with key 'nohash'"):
            store.start_trial(experiment_id, "nohash", **start)
        with pytest.raises(KeyError, match="no nas_trials row with key 999"):
            store.finish_trial(999, TrialStatus.COMPLETED)
        assert [t.id for t in store.trials()] == [trial_id] and store.get_trial(trial_id).status == "running"


def test_a_trials_usual_rows_take_one_statement_each_and_an_epoch_two_on_sqlite(db_url: str) -> None:
    """Each statement is a round trip to a PostgreSQL server: the driver writes these for every
    trial (benchmarks/driver_scale.py counts them per trial)."""
    from sqlalchemy import event

    with Store.open(db_url) as store:
        experiment_id = store.ensure_experiment("exp")
        statements: list[str] = []
        event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

        def count(write) -> int:  # SQLite's BEGIN IMMEDIATE (db/engine.py) is not counted
            statements.clear()
            write()
            return len([s for s in statements if not s.startswith("BEGIN")])

        assert count(lambda: store.upsert_architecture("h1", "{}", "h1", 1, 2)) == 1  # new
        assert count(lambda: store.upsert_architecture("h1", "{}", "h1", 1, 2)) == 2  # stored: its config checked
        trial_id = store.start_trial(experiment_id, "h1", seed=0, phase=Phase.SEARCH, epochs_planned=3,
                                     recipe_json="{}", device="cpu", code_version=None)
        assert count(lambda: store.start_trial(experiment_id, "h1", seed=1, phase=Phase.SEARCH, epochs_planned=3,
                                               recipe_json="{}", device="cpu", code_version=None)) == 1
        next_epoch = 1 if db_url.startswith("postgresql") else 2
        assert [count(lambda e=e: _record(store, trial_id, e, 0.5 + e / 10)) for e in range(3)] == [next_epoch] * 3
        assert count(lambda: store.finish_trial(trial_id, TrialStatus.COMPLETED)) == 1
        trial = store.get_trial(trial_id)
    assert (trial.epochs_done, trial.best_val_acc, trial.final_val_acc, trial.train_seconds) == (3, 0.7, 0.7, 4.5)


def test_an_unknown_status_is_rejected_before_writing(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as store:
        trial_id = _new_trial(store)
        with pytest.raises(ValueError, match="TrialStatus must be one of"):
            store.finish_trial(trial_id, "done")
        assert store.get_trial(trial_id).status == "running"


# ---- migrations ---------------------------------------------------------------------


def test_migrations_match_the_schema(db_url: str) -> None:
    with Store.open(db_url) as store, store.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "version_table": ALEMBIC_VERSION_TABLE,
            },
        )
        assert compare_metadata(context, Base.metadata) == []


def test_upgrading_a_populated_store_again_keeps_its_rows(db_url: str) -> None:
    with Store.open(db_url) as store:
        trial_id = _new_trial(store)
        _record(store, trial_id, 0, 0.5)
    engine = make_engine(db_url)
    upgrade(engine)
    engine.dispose()
    with Store.open(db_url) as store:
        assert [t.id for t in store.trials()] == [trial_id]
        assert len(store.epochs(trial_id)) == 1


def test_the_migration_adds_evaluation_sizes_to_an_existing_store_as_nulls(tmp_path: Path) -> None:
    url, _ = write_old_store(tmp_path, "0005")  # a store as nas wrote it before evaluation sizes
    engine = make_engine(url)
    with engine.begin() as connection:  # an epoch and final accuracies, as that nas recorded them
        connection.execute(text(
            "INSERT INTO nas_epoch_results (trial_id, epoch, train_loss, train_acc, val_acc, test_acc, epoch_seconds, "
            f"cumulative_seconds) VALUES ({OLD_TRIAL_ID}, 0, 1.5, 0.4, 0.45, 0.44, 2.0, 2.0)"))
        connection.execute(text(f"UPDATE nas_trials SET final_val_acc = 0.45, final_test_acc = 0.44 "
                                f"WHERE id = {OLD_TRIAL_ID}"))
        before = {row[1] for row in connection.exec_driver_sql("PRAGMA table_info(nas_trials)")}
    engine.dispose()
    assert "final_val_images" not in before
    with Store.open(url) as store:  # opening upgrades it
        [trial] = store.trials()
        [epoch] = store.epochs(OLD_TRIAL_ID)
    assert (trial.id, trial.final_val_acc, trial.final_test_acc) == (OLD_TRIAL_ID, 0.45, 0.44)
    assert (trial.final_val_images, trial.final_test_images) == (None, None)
    assert (epoch.val_acc, epoch.test_acc, epoch.val_images, epoch.test_images) == (0.45, 0.44, None, None)


def test_a_database_from_a_newer_nas_is_refused(db_url: str) -> None:
    Store.open(db_url).close()
    engine = make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {ALEMBIC_VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    for read_only in (False, True):
        with pytest.raises(StoreError, match="written by a newer nas; upgrade nas"):
            Store.open(db_url, read_only=read_only)


def test_store_shares_a_database_with_optuna(sqlite_url: str) -> None:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    Path(_sqlite_path(sqlite_url)).parent.mkdir(parents=True)
    study = optuna.create_study(storage=sqlite_url, study_name="search")
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=2)
    with Store.open(sqlite_url) as store:
        _new_trial(store)
        assert len(store.trials()) == 1
    assert len(optuna.load_study(study_name="search", storage=sqlite_url).trials) == 2


# ---- URLs ---------------------------------------------------------------------------


def test_resolve_db_url_prefers_flag_then_env_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NAS_DB", raising=False)
    assert resolve_db_url() == "sqlite:///nas.db"
    monkeypatch.setenv("NAS_DB", "postgresql://u@h/db")
    assert resolve_db_url() == "postgresql://u@h/db"
    assert resolve_db_url("sqlite:///x.db") == "sqlite:///x.db"
    assert resolve_db_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"


@pytest.mark.parametrize(
    "url, problem",
    [
        ("postgresql+nosuchdriver://alice:s3cret@localhost/nas", "unusable database URL"),
        ("oracle://alice:s3cret@localhost/nas", "unsupported database 'oracle'"),
        ("postgresql://alice:s3cret@localhost:port/nas", "is not a database URL"),
        ("postgresql://alice:s3cret@127.0.0.1:1/nas", "cannot open the database"),
    ],
    ids=["unknown-driver", "unsupported-backend", "malformed", "unreachable-server"],
)
def test_bad_urls_raise_store_error_with_the_password_masked(url: str, problem: str) -> None:
    with pytest.raises(StoreError, match=problem) as info:
        Store.open(url)
    message = str(info.value)
    assert "s3cret" not in message
    assert "alice:***@" in message


def test_a_batch_migration_of_a_referenced_table_keeps_the_rows_that_refer_to_it(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite batch mode copies nas_trials and drops the old table; with foreign keys ON
    # that drop would cascade-delete every epoch row, so upgrade() turns them off.
    with Store.open(sqlite_url) as store:
        trial_id = _new_trial(store)
        _record(store, trial_id, 0, 0.5)
    migrations = tmp_path / "migrations"
    shutil.copytree(nas_db_engine.MIGRATIONS_DIR, migrations)
    head = ScriptDirectory.from_config(nas_db_engine.alembic_config()).get_current_head()
    (migrations / "versions" / "9999_note.py").write_text(
        "import sqlalchemy as sa\nfrom alembic import op\n"
        f"revision, down_revision, branch_labels, depends_on = 'test_note', '{head}', None, None\n"
        "def upgrade():\n"
        "    with op.batch_alter_table('nas_trials', recreate='always') as batch:\n"
        "        batch.add_column(sa.Column('note', sa.Text(), nullable=True))\n"
    )
    monkeypatch.setattr(nas_db_engine, "MIGRATIONS_DIR", migrations)
    engine = make_engine(sqlite_url)
    upgrade(engine)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        count = connection.exec_driver_sql("SELECT count(*) FROM nas_epoch_results").scalar()
        assert "note" in {c[1] for c in connection.exec_driver_sql("PRAGMA table_info(nas_trials)")}
    engine.dispose()
    assert count == 1
