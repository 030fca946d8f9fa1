"""One place builds the engines of nas and of Optuna (`nas.db.engine`): the same URL
normalisation, driver, busy timeout, durability and read-only mode for both (issue 26)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from sqlalchemy import text

from nas.db import Store, make_engine, optuna_storage
from nas.errors import StoreError

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _pragmas(engine) -> tuple:
    with engine.connect() as connection:
        return tuple(connection.execute(text(f"PRAGMA {name}")).scalar()
                     for name in ("busy_timeout", "synchronous", "journal_mode"))


def test_optunas_sqlite_engine_waits_and_syncs_as_nass_own(sqlite_url: str) -> None:
    nas_engine = make_engine(sqlite_url)
    storage = optuna_storage(sqlite_url)
    assert _pragmas(storage.engine) == _pragmas(nas_engine) == (30_000, 1, "wal")  # 1: NORMAL
    # Optuna keeps its own transactions: no BEGIN IMMEDIATE, no foreign keys imposed on it.
    with storage.engine.connect() as connection:
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 0


def test_a_tilde_url_opens_one_file_for_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    url = "sqlite:///~/runs/nas.db"
    with Store.open(url):
        pass
    optuna.create_study(storage=optuna_storage(url), study_name="s")
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.suffix == ".db"] == ["nas.db"]
    assert optuna.get_all_study_names(storage=f"sqlite:///{tmp_path / 'runs' / 'nas.db'}") == ["s"]


def test_a_read_only_storage_reads_and_refuses_writes(db_url: str) -> None:
    with Store.open(db_url):
        pass
    optuna.create_study(storage=optuna_storage(db_url), study_name="s").optimize(
        lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=2)
    reader = optuna_storage(db_url, read_only=True)
    assert len(optuna.load_study(study_name="s", storage=reader).trials) == 2
    with pytest.raises(Exception) as info:
        optuna.create_study(storage=reader, study_name="t")
    assert "read" in f"{info.value} {info.value.__cause__}".lower()  # "readonly", "read-only"
    assert optuna.get_all_study_names(storage=optuna_storage(db_url)) == ["s"]


@pytest.mark.parametrize("url", [
    "oracle://alice:s3cret@localhost/nas",
    "postgresql://alice:s3cret@localhost:port/nas",
    "postgresql+nosuchdriver://alice:s3cret@localhost/nas",
])
def test_a_bad_url_is_the_same_store_error_for_both(url: str) -> None:
    with pytest.raises(StoreError) as ours:
        make_engine(url)
    with pytest.raises(StoreError) as optunas:
        optuna_storage(url)
    assert str(optunas.value) == str(ours.value)  # found before either engine is built
    assert "s3cret" not in str(ours.value) and "alice:***@" in str(ours.value)


def test_an_unreachable_server_names_it_with_the_password_masked() -> None:
    with pytest.raises(StoreError, match="cannot open Optuna's storage") as info:
        optuna_storage("postgresql://alice:s3cret@127.0.0.1:1/nas")
    assert "s3cret" not in str(info.value) and "alice:***@" in str(info.value)
