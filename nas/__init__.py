"""nas: neural-architecture search and ablation orchestration for fast residual CNNs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from nas._version import __version__

if TYPE_CHECKING:
    from nas.api import Results

__all__ = ["__version__", "open"]


def open(url: str | os.PathLike[str] | None = None) -> Results:  # noqa: A001 - nas.open, as the issue names it
    """The results in the store at `url`, read-only: ``nas.open("sqlite:///nas.db")``.

    `url` is an SQLAlchemy URL or a SQLite file path (default: $NAS_DB, else ./nas.db). Kept
    light: workers import this package, so `nas.api` (pandas, SQLAlchemy) loads on the call.
    """
    from nas.api import open_results

    return open_results(url)
