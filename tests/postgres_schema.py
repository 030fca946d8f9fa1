"""A fresh PostgreSQL schema per test, on the server CI starts (`NAS_TEST_POSTGRES_URL`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine

PG_SKIP_REASON = "NAS_TEST_POSTGRES_URL not set; .ci/run starts a server"


@contextmanager
def fresh_schema_url(prefix: str, before_drop: Callable[[], None] | None = None) -> Iterator[str]:
    """A URL whose search_path is a new schema, dropped afterwards (reruns are clean).

    Skips the test when no server is configured. `before_drop` lets go of connections the
    code under test still pools, so the drop is not blocked.
    """
    base = os.environ.get("NAS_TEST_POSTGRES_URL")
    if not base:
        pytest.skip(PG_SKIP_REASON)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        if before_drop is not None:
            before_drop()
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
