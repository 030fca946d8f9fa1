"""User-facing errors: bad input or a missing resource, never a bug.

The CLI prints the message of a `NasError` and exits with code 2; anything else is
a bug and keeps its traceback. Messages name the offending value, where it came
from (file, key path) and what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class NasError(Exception):
    """A problem the user can fix; the CLI exits 2 with this message."""

    exit_code = 2


class ConfigError(NasError):
    """An invalid architecture, recipe or search-space value."""


class DataError(NasError):
    """The dataset is missing, unreadable or fails verification."""


class StoreError(NasError):
    """The database URL is unusable or the store is in an unexpected state."""


def reject_unknown_keys(data: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    """ConfigError naming the first key of `data` not in `allowed`, and the allowed ones.

    For the CLI's own mappings; the config classes are read by `nas.config.validate.build`,
    which also suggests the nearest key.
    """
    allowed = sorted(allowed)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown key; allowed keys are {', '.join(allowed)}.")
