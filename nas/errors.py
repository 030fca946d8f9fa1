"""User-facing errors: bad input or a missing resource, never a bug.

The CLI prints the message of a `NasError` and exits with code 2; anything else is
a bug and keeps its traceback. Messages name the offending value, where it came
from (file, key path) and what to do about it.
"""

from __future__ import annotations

import re
import reprlib
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

SHOWN_CHARS = 80  # the most of one value a message echoes


_REPR = reprlib.Repr()  # bounded: a deep or alias-expanded value costs a few items, not all of it
_REPR.maxstring = _REPR.maxother = SHOWN_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 12
_REPR.maxlevel = 4


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """`value`'s repr for a message, cut to `limit` characters with "…": a message stays
    one line, however long (or alias-expanded) the value the user gave."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails is still named
        text = f"<{type(value).__name__}>"
    return clip(text, limit)


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` on one line and at most `limit` characters ("…" where it was cut): for names
    the user chose (keys, files) that a message repeats."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def masked_url(url: str, text: str | None = None) -> str:
    """`text` (default: `url` itself) with the password `url` carries (``user:PASSWORD@host``)
    replaced by ``***``: a message may name a URL, never its credentials."""
    text = url if text is None else text
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:  # not parseable (a bad port, ...): mask between "user:" and "@" by hand
        return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", text)
    if not password:
        return text
    userinfo, _, host = parts.netloc.rpartition("@")
    safe = urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}"))
    return text.replace(url, safe).replace(f"{password}@", "***@")  # also where an error quotes it


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


class ExperimentBusy(StoreError):
    """Another live process holds the experiment's lease (`nas.db.lease`)."""


class LeaseLost(NasError):
    """This process's lease was taken over while it ran (it stalled past the stale limit):
    it stops writing. Not the user's input, so not exit 2."""

    exit_code = 1
