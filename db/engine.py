"""Database URLs, engines and schema upgrades for the nas store.

One SQLite file serves one machine: WAL journal mode lets the dashboard read while the
search driver writes, and a 30 s busy timeout makes a second writer wait rather than
fail with "database is locked". PostgreSQL serves a cluster (psycopg 3 driver).
Every problem a user can fix (bad URL, unreachable server, database newer than this
code) raises `StoreError` naming the URL with its password masked.
"""

from __future__ import annotations

import os
import re
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from nas.db.schema import ALEMBIC_VERSION_TABLE
from nas.errors import StoreError

DEFAULT_DB_URL = "sqlite:///nas.db"  # a file in the working directory
SQLITE_BUSY_TIMEOUT_MS = 30_000  # a writer waits this long for another's lock
PG_CONNECT_TIMEOUT_S = 10  # fail fast on an unreachable host instead of the TCP default
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_UPGRADE_LOCK_ID = 0x6E61735F6462  # "nas_db": serialises concurrent upgrades on PostgreSQL
_URL_HELP = "expected e.g. sqlite:///nas.db, a file path, or postgresql://USER:PASSWORD@HOST/DB"

# ---- URLs ---------------------------------------------------------------------------


def resolve_db_url(cli_url: str | None = None) -> str:
    """The database URL to use: --db, else $NAS_DB, else ``sqlite:///nas.db``.

    Args:
        cli_url: the value of --db, if given. A bare filesystem path (no ``://``) is
            accepted and becomes an absolute ``sqlite:///`` URL.
    """
    return _path_to_url((cli_url or os.environ.get("NAS_DB") or DEFAULT_DB_URL).strip())


def _path_to_url(url: str) -> str:
    """A bare filesystem path as an absolute sqlite URL; a sqlite URL whose file starts with
    ``~`` with it expanded (nas's engine and Optuna's storage are built from this one URL, and
    only nas's would expand it: issue 26 D8); anything else unchanged."""
    if "://" not in url:
        return "sqlite:///" + Path(url).expanduser().resolve().as_posix()
    if url.startswith("sqlite") and "~" in url:
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            return url  # make_engine names the problem
        if parsed.database and parsed.database.startswith("~"):
            expanded = Path(parsed.database).expanduser().resolve().as_posix()
            return parsed.set(database=expanded).render_as_string(hide_password=False)
    return url


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        # Not parseable: mask anything between "user:" and "@" by hand.
        return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", str(url))


# ---- engines ------------------------------------------------------------------------


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for `url`, with one connection made to check that it works.

    SQLite: the parent folder is created, and each connection gets WAL mode, a 30 s
    busy timeout, foreign keys ON and ``BEGIN IMMEDIATE`` transactions (a writer takes
    the lock up front, so it waits instead of failing halfway). ``read_only`` opens
    the file with ``mode=ro`` and never creates it. PostgreSQL: ``postgresql://`` uses
    psycopg 3; connections are pinged before use; ``read_only`` makes every
    transaction READ ONLY.

    Args:
        url: a database URL (see `resolve_db_url`); a bare path means a SQLite file.
        read_only: open for reading only, e.g. for the dashboard.

    Raises:
        StoreError: the URL is malformed, names an unsupported database or a driver
            that is not installed, or the database cannot be opened.
    """
    parsed, masked, kwargs = _engine_args(url, read_only=read_only)
    engine = _create(parsed, masked, **kwargs)
    if engine.dialect.name == "sqlite":
        _add_sqlite_pragmas(engine, read_only=read_only)
    _check_connects(engine, masked)
    return engine


def optuna_storage(url: str, *, read_only: bool = False) -> Any:
    """Optuna's RDB storage on the store's database, its engine built here by make_engine's
    rules (one URL normalisation, driver, busy timeout, durability, read-only mode), so
    that nas's engine and Optuna's cannot drift apart (issue 26 D8 was such a drift).

    Optuna keeps its own transactions: its SQLite engine gets neither ``BEGIN IMMEDIATE``
    (its reads would take the write lock) nor foreign keys (its deletes rely on its ORM's
    cascades). ``read_only`` neither creates nor checks Optuna's tables (the dashboard).

    Raises:
        StoreError: as make_engine.
    """
    import optuna

    parsed, masked, kwargs = _engine_args(url, read_only=read_only)
    try:
        with _driver_errors(masked):
            storage = optuna.storages.RDBStorage(
                parsed.render_as_string(hide_password=False), engine_kwargs=kwargs,
                skip_table_creation=read_only, skip_compatibility_check=read_only,
            )
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if parsed.password:
            reason = reason.replace(str(parsed.password), "***")
        raise StoreError(f"cannot open Optuna's storage in {masked}: {reason}.") from exc
    if storage.engine.dialect.name == "sqlite":
        _add_sqlite_pragmas(storage.engine, read_only=read_only, own_transactions=False)
        storage.engine.dispose()  # its connection that created the tables predates the listener
    return storage


def _engine_args(url: str, *, read_only: bool) -> tuple[URL, str, dict[str, Any]]:
    """The URL (normalised), its masked form, and create_engine's arguments for it."""
    url = _path_to_url(url)
    masked = mask_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is no number
        raise StoreError(f"{masked!r} is not a database URL; {_URL_HELP}.") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_args(parsed, masked, read_only=read_only)
    if backend in ("postgresql", "postgres"):
        return _postgres_args(parsed, masked, read_only=read_only)
    raise StoreError(
        f"unsupported database {backend!r} in {masked}; nas stores results in SQLite "
        f"or PostgreSQL: {_URL_HELP}."
    )


def _sqlite_args(url: URL, masked: str, *, read_only: bool) -> tuple[URL, str, dict[str, Any]]:
    database = url.database or ""
    if database in ("", ":memory:"):
        if read_only:
            raise StoreError(f"{masked} is an in-memory database; it cannot be opened read-only.")
        # One shared connection, so every thread sees the same in-memory database.
        return url, masked, {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    if read_only:
        path = Path(database).expanduser().resolve()
        if not path.is_file():
            raise StoreError(
                f"no nas database at {path} ({masked}); check --db or NAS_DB, or run a "
                "search first to create it."
            )
        # mode=ro never creates or writes the file, and only a file: URI can say so;
        # a creator keeps engine.url as the user wrote it, for messages.
        uri = f"file:{quote(path.as_posix())}?mode=ro"
        return url, masked, {"creator": lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)}
    path = Path(database).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the folder {path.parent} for {masked}: {exc.strerror}; "
            "choose a writable location with --db or NAS_DB."
        ) from exc
    return url.set(database=path.as_posix()), masked, {}


def _add_sqlite_pragmas(engine: Engine, *, read_only: bool, own_transactions: bool = True) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if own_transactions:
            # pysqlite's own implicit BEGIN is turned off; _on_begin below emits ours.
            dbapi_connection.isolation_level = None
            cursor.execute("PRAGMA foreign_keys = ON")
        if read_only:
            cursor.execute("PRAGMA query_only = ON")
        else:
            cursor.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the file
            # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a commit is kept when
            # the process dies (SIGKILL included), only an OS crash or power loss can lose the
            # last ones, never corrupting the file. FULL's fsync per commit made the driver's
            # writes (an epoch row each) most of its time per trial (benchmarks/driver_scale.py).
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    if own_transactions:
        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            # IMMEDIATE takes the write lock at BEGIN, where the busy timeout applies; a
            # deferred read-then-write transaction can fail at once with SQLITE_BUSY.
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _postgres_args(url: URL, masked: str, *, read_only: bool) -> tuple[URL, str, dict[str, Any]]:
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    if read_only:
        # Appended to any options in the URL (e.g. a search_path), not replacing them.
        given = url.query.get("options", "")
        given = given if isinstance(given, str) else " ".join(given)
        connect_args["options"] = f"{given} -c default_transaction_read_only=on".strip()
    return url, masked, {"pool_pre_ping": True, "connect_args": connect_args}


def _create(url: URL, masked: str, **kwargs: Any) -> Engine:
    with _driver_errors(masked):
        return create_engine(url, **kwargs)


@contextmanager
def _driver_errors(masked: str) -> Iterator[None]:
    """A missing driver or an unknown +driver as a StoreError, for nas's engine and Optuna's."""
    try:
        yield
    except ImportError as exc:
        raise StoreError(
            f"the database driver for {masked} is not installed ({exc}); for PostgreSQL "
            "install psycopg 3 (pip install 'nas[postgres]') and use postgresql://..."
        ) from exc
    except ArgumentError as exc:  # includes NoSuchModuleError: an unknown +driver
        raise StoreError(f"unusable database URL {masked}: {exc}; {_URL_HELP}.") from exc


def _check_connects(engine: Engine, masked: str) -> None:
    """Connect once now, so a bad server or file fails here with a clear message."""
    try:
        connection = engine.raw_connection()
        try:
            if engine.dialect.name == "sqlite":
                # SQLite opens any file lazily; reading the header now makes a file that is
                # no database fail here ("file is not a database"), not in the first query.
                connection.cursor().execute("PRAGMA schema_version").fetchall()
        finally:
            connection.close()
    except (SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        password = make_url(engine.url).password
        if password:
            reason = reason.replace(str(password), "***")
        if engine.dialect.name == "sqlite":
            hint = "check that the path is a nas database and that its folder is writable"
        else:
            hint = (
                "check that the server is running and reachable from here, and that the "
                "user, password and database name are right"
            )
        raise StoreError(f"cannot open the database {masked}: {reason}; {hint}.") from exc


# ---- schema upgrades ----------------------------------------------------------------


def alembic_config() -> Config:
    """The Alembic config of the store's migrations; no alembic.ini is read."""
    config = Config()
    # ConfigParser would read "%" in the path as interpolation.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


def upgrade(engine: Engine) -> None:
    """Bring the database behind `engine` up to the newest schema; a no-op when it is.

    Runs in one transaction, so an interrupted upgrade leaves the old schema.

    Raises:
        StoreError: the database was written by a newer nas (its schema revision is
            unknown to this code).
    """
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    with engine.connect() as connection, _sqlite_foreign_keys_off(connection):
        with connection.begin():
            if connection.dialect.name == "postgresql":
                # Two processes opening a fresh database would both create the tables.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_UPGRADE_LOCK_ID})")
            current = _current_revisions(connection)
            _refuse_unknown(current, script, engine)
            if current == set(script.get_heads()):
                return
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            _check_foreign_keys(connection)


def check_schema(engine: Engine) -> None:
    """Check, without writing, that the database has exactly this code's schema.

    Raises:
        StoreError: the database is newer than this code, or older (or empty), which
            only a writer can fix by upgrading it.
    """
    script = ScriptDirectory.from_config(alembic_config())
    with engine.connect() as connection:
        current = _current_revisions(connection)
    _refuse_unknown(current, script, engine)
    if current != set(script.get_heads()):
        raise StoreError(
            f"the database {mask_url(engine.url)} has no nas tables or an older schema, "
            "and a read-only open cannot upgrade it; run a nas command that writes to it "
            "(e.g. a search) once with this version of nas."
        )


def probe(url: str) -> None:
    """Check, creating and writing nothing, that `url` can hold the nas store: a supported
    database whose driver is installed, a server or file that opens, and either no tables
    yet or a nas schema this code knows. `nas launch` calls it before it reads any data or
    starts Ray, so a wrong --db fails first, naming the database.

    Raises:
        StoreError: any of these does not hold (the URL masked).
    """
    url = _path_to_url(url)
    masked = mask_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        parsed = None  # make_engine below says what is wrong with it
    if parsed is not None and parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            return
        path = Path(database).expanduser()
        if path.is_dir():
            raise StoreError(f"{masked} is a folder, not a database file; give a file path with --db or NAS_DB.")
        if not path.exists():  # a writer creates it: its nearest existing folder must be writable
            folder = next(p for p in path.absolute().parents if p.exists())
            if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
                raise StoreError(f"cannot create {masked}: {folder} is not a writable folder; "
                                 "choose another --db or NAS_DB.")
            return
    engine = make_engine(url, read_only=True)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            current = _current_revisions(connection) if ALEMBIC_VERSION_TABLE in tables else set()
    except (SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StoreError(f"cannot read the database {masked}: {reason}; check that it is a nas database.") from exc
    finally:
        engine.dispose()
    if tables and ALEMBIC_VERSION_TABLE not in tables:
        shown = ", ".join(sorted(tables)[:3])
        raise StoreError(f"{masked} is not a nas store (it has other tables: {shown}); give a nas store or an "
                         "empty database with --db or NAS_DB.")
    _refuse_unknown(current, ScriptDirectory.from_config(alembic_config()), engine)


def _current_revisions(connection: Connection) -> set[str]:
    context = MigrationContext.configure(
        connection, opts={"version_table": ALEMBIC_VERSION_TABLE}
    )
    return set(context.get_current_heads())


def _refuse_unknown(current: set[str], script: ScriptDirectory, engine: Engine) -> None:
    known = {rev.revision for rev in script.walk_revisions()}
    unknown = sorted(current - known)
    if unknown:
        raise StoreError(
            f"this database was written by a newer nas; upgrade nas. The database "
            f"{mask_url(engine.url)} has schema revision {', '.join(unknown)}, which this "
            f"version of nas does not know (it knows up to {', '.join(script.get_heads())})."
        )


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """Foreign keys OFF while migrating SQLite, as its ALTER TABLE docs prescribe.

    A batch migration copies a table and drops the old one; with foreign keys ON that
    drop would cascade-delete (or refuse for) every row that refers to it. The pragma
    is a no-op inside a transaction, so it is set on the driver connection before
    SQLAlchemy begins one, and restored after that transaction has ended.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    driver = connection.connection.driver_connection
    driver.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        if connection.in_transaction():
            connection.rollback()
        driver.execute("PRAGMA foreign_keys = ON")


def _check_foreign_keys(connection: Connection) -> None:
    """Refuse to commit a migration that left dangling references (SQLite only)."""
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise StoreError(
            f"the schema upgrade of {mask_url(connection.engine.url)} would leave rows "
            f"with dangling foreign keys {broken[:5]}; it was rolled back. Report this "
            "as a bug in nas."
        )
