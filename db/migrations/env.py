"""Alembic environment of the nas store.

`nas.db.engine.upgrade` runs it programmatically and passes its open connection in
``config.attributes["connection"]``; the `alembic` command line (db/alembic.ini) has
none, so an engine is made from the configured URL, or --db/NAS_DB like the CLI.
Only the ``nas_*`` tables are compared and migrated: Optuna's tables share the database.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from nas.db.schema import ALEMBIC_VERSION_TABLE, Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """Reflect only our tables, so autogenerate never proposes dropping Optuna's."""
    if type_ == "table":
        return name in target_metadata.tables
    return True


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Write `UTCDateTime` columns as the plain type they are stored as."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=ALEMBIC_VERSION_TABLE,
        include_name=include_name,
        render_item=render_item,
        compare_type=True,
        **kwargs,
    )


def run_online(connection: Connection) -> None:
    # SQLite cannot ALTER most things; batch mode copies the table instead.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_online(connection)
        return
    from nas.db.engine import make_engine, resolve_db_url

    url = config.get_main_option("sqlalchemy.url") or resolve_db_url()
    if context.is_offline_mode():
        _configure(url=url, literal_binds=True, render_as_batch=url.startswith("sqlite"))
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            run_online(connection)
            connection.commit()
    finally:
        engine.dispose()


main()
