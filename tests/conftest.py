"""Shared fixtures: tiny CIFAR-10 fixtures in the official layout, and the real copy; one store
URL per backend (`db_url`: SQLite, and PostgreSQL where a server is configured)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.cifar_fixture import tiny_cifar_root  # noqa: F401 - re-exported fixture
from tests.postgres_schema import fresh_schema_url

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def real_data_root(tmp_path_factory) -> Path:
    """A folder holding the real CIFAR-10 (``$NAS_DATA_DIR``, else a copy of ../shared/data).

    The shared copy is copied, not used in place, because loading extracts the archive
    next to it and shared/ is not ours to write.
    """
    if os.environ.get("NAS_DATA_DIR"):
        return Path(os.environ["NAS_DATA_DIR"])
    archive = SHARED_DATA / "cifar-10-python.tar.gz"
    if not archive.exists():
        pytest.skip(f"real CIFAR-10 absent: set NAS_DATA_DIR or place the archive at {archive}")
    root = tmp_path_factory.mktemp("cifar10")
    shutil.copy(archive, root / archive.name)
    return root


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite store in a folder that does not exist yet (the store makes it)."""
    return f"sqlite:///{tmp_path / 'runs' / 'nas.db'}"


@pytest.fixture
def postgres_url() -> str:
    """A URL whose search_path is a fresh schema, dropped afterwards (reruns are clean); the
    test is skipped without a server (NAS_TEST_POSTGRES_URL; .ci/run starts one)."""
    with fresh_schema_url("nas_test") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The store's URL on each backend: every test that takes it runs on SQLite and PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")
