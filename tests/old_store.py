"""A store as an older nas wrote it: migrated up to one revision, with one finished trial."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import text

import nas.db.engine as nas_db_engine
from nas.db import make_engine

OLD_TRIAL_ID = 7  # the one trial's id


def write_old_store(folder: Path, revision: str) -> tuple[str, set[str]]:
    """Migrate a fresh SQLite file up to `revision` only and add one completed trial.

    Returns the URL and the tables the file has, before any newer migration ran.
    """
    url = f"sqlite:///{folder / 'old.db'}"
    engine = make_engine(url)
    config = nas_db_engine.alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.execute(text("INSERT INTO nas_experiments (id, name, status, created_at) "
                                "VALUES (1, 'old', 'finished', '2026-01-01 00:00:00')"))
        connection.execute(text("INSERT INTO nas_architectures VALUES ('a1b2c3d4e5f6', '{}', 'base', 1, 2, "
                                "'2026-01-01 00:00:00')"))
        connection.execute(text(
            "INSERT INTO nas_trials (id, experiment_id, arch_hash, seed, phase, status, epochs_planned, epochs_done, "
            f"device, recipe_json, started_at) VALUES ({OLD_TRIAL_ID}, 1, 'a1b2c3d4e5f6', 0, 'search', 'completed', "
            "1, 1, 'cpu', '{}', '2026-01-01 00:00:00')"))
        tables = {row[0] for row in connection.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
    engine.dispose()
    return url, tables
