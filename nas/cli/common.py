"""What every command shares: the consoles, the common options, how a user error exits,
the store as commands open it (Ray: nas.cli.ray_session)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator

import typer
from rich.console import Console
from rich.markup import escape

from nas.errors import ConfigError, NasError, masked_url

console = Console(width=None if sys.stdout.isatty() else 160)


# soft_wrap: a message is never broken into lines by rich (at 160 columns in a pipe or CI
# log): one error is one line, for a terminal to wrap and a script to read.
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160, soft_wrap=True)


DbOption = Annotated[
    str | None,
    typer.Option("--db", help="SQLAlchemy URL or SQLite file path of the store. [default: $NAS_DB, else ./nas.db]"),
]


AddressOption = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Join an existing Ray cluster by its GCS address (HEAD:6379, or auto on a cluster node); "
        "not a ray:// client address, since this process runs the Tune loop. A cluster started with token "
        "authentication is joined with this machine's token ($RAY_AUTH_TOKEN or ~/.ray/auth_token). "
        "[default: $RAY_ADDRESS, else a local Ray listening on 127.0.0.1 only]",
    ),
]


DataRootOption = Annotated[
    str | None,
    typer.Option(
        "--data-root",
        help="Folder holding cifar-10-batches-py/ or cifar-10-python.tar.gz. "
        "[default: $NAS_DATA_DIR, else ~/.cache/nas/data, downloaded on first use]",
    ),
]


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a `NasError` into one red line on stderr and exit code 2."""
    try:
        yield
    except NasError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}")
        raise typer.Exit(err.exit_code) from None


def is_file(path: str | Path) -> bool:
    """Whether `path` names a file; False, not OSError, for a name no file can have (too
    long, a NUL byte), as for one that is absent."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def given(**values: Any) -> dict[str, Any]:
    """The options the user actually passed (None means not given)."""
    return {key: value for key, value in values.items() if value is not None}


def mask_url(url: str) -> str:
    """`url` with its password masked, for messages; also when it is no valid URL."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - display only
        return masked_url(url)


def open_existing_store(db_url: str, *, read_only: bool):
    """Open a store that must exist already (never create an empty database by mistake)."""
    from sqlalchemy.engine import make_url

    from nas.db import Store

    try:
        url = make_url(db_url)
    except Exception:  # noqa: BLE001 - not a URL: Store.open says so, in one line
        url = None
    if url is not None and url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database).expanduser()
        if not path.is_file():
            raise ConfigError(f"no nas database at {path}; check --db or NAS_DB, or run `nas launch` first.")
    return Store.open(db_url, read_only=read_only)
