"""Shared fixtures: tiny CIFAR-10 fixtures in the official layout, and the real copy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.cifar_fixture import tiny_cifar_root  # noqa: F401 - re-exported fixture

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
