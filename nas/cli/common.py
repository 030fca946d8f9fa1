"""What every command shares: the consoles, the common options, how a user error exits,
the store and Ray as commands open them."""

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
        "not a ray:// client address, since this process runs the Tune loop. [default: a local Ray]",
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


RAY_PROBE_TIMEOUT_S = 5.0  # a GCS that does not accept a TCP connection in this long is not there


def check_ray_address(address: str | None) -> None:
    """Refuse an --address this process cannot drive, before anything else runs: a Ray client
    (ray://) address cannot run the Tune loop here, and the rest must read as HOST:PORT or auto."""
    if address is None or address in ("auto", "local"):
        return
    if address.startswith("ray://"):
        raise ConfigError(f"--address {address}: a Ray client address cannot run the search here; give the "
                          "head's GCS address (HEAD:6379), or run nas on the head node with --address auto.")
    host, sep, port = address.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"--address {address}: expected HOST:PORT of the Ray head's GCS, e.g. 10.0.0.1:6379, "
                          "or auto.")


def _probe_gcs(address: str | None) -> None:
    """A plain TCP connect to the GCS of `address`, with a short timeout: ray.init would retry
    an address nothing listens on for minutes."""
    import socket

    resolved = address
    if address in ("auto", "local"):  # auto: the running cluster's address, as ray.init finds it
        try:  # a private module of Ray's: it may move
            from ray._private.services import canonicalize_bootstrap_address
        except ImportError:
            return  # ray.init finds it, or says it found none
        try:
            resolved = canonicalize_bootstrap_address(address)
        except (ValueError, ConnectionError, OSError) as err:
            raise ConfigError(f"--address {address}: {err}; start Ray (`ray start --head`) or omit --address.") from None
    if resolved is None:
        return  # a local Ray is started
    host, _, port = resolved.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_PROBE_TIMEOUT_S).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"--address {address}: no Ray GCS answers at {resolved} ({reason}); start the head "
                          "with `ray start --head` or give its address, or omit --address for a local Ray.") from None


def start_ray(address: str | None) -> None:
    import logging

    import ray

    if ray.is_initialized():
        return
    if address is not None:
        check_ray_address(address)
        _probe_gcs(address)
    # Trial errors reach the store (trials.error); Ray's own chatter stays in its logs.
    try:
        ray.init(address=address, include_dashboard=False, configure_logging=True,
                 logging_level=logging.ERROR, log_to_driver=False)
    except ConnectionError as err:
        if address is None:
            raise
        raise ConfigError(f"--address {address}: cannot join Ray there ({err}); check the address.") from None
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
