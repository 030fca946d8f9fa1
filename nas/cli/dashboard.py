"""`nas dashboard`: the Streamlit app on the store."""

from __future__ import annotations

import ipaddress
import socket
from typing import Annotated

import typer
from rich.markup import escape

from nas.cli.common import (
    DbOption,
    console,
    err_console,
    exit_on_user_error,
    mask_url,
    open_existing_store,
)
from nas.errors import ConfigError

LOOPBACK = "127.0.0.1"


def dashboard(
    db: DbOption = None,
    port: Annotated[int, typer.Option(help="TCP port to serve on.", min=1, max=65535)] = 8501,
    host: Annotated[
        str,
        typer.Option(help="Interface to listen on: 127.0.0.1 serves this machine only; 0.0.0.0 (or one "
                     "address of this machine) shares the dashboard, unauthenticated, with whoever can reach it."),
    ] = LOOPBACK,
) -> None:
    """Browse the store in a web browser: Pareto fronts, learning curves, seed variance,
    pruning savings, parameter importance and ablations.

    Starts the Streamlit app (dashboard/app.py) on http://127.0.0.1:PORT, this machine only
    (--host to share it). It opens the store read-only, so it never modifies or locks a
    running search; pages of a running experiment refresh themselves. Stop it with Ctrl-C
    or SIGTERM: this command becomes the server, so nothing is left serving.
    """
    with exit_on_user_error():
        from nas.dashboard.serve import serve
        from nas.db import resolve_db_url

        loopback = _is_loopback(host, port)
        # Refuse a missing file, an unsupported URL or a file that is no nas store now, in
        # one line, rather than serve pages that can only say so.
        open_existing_store(resolve_db_url(db), read_only=True).close()
        if not loopback:
            err_console.print(f"[bold yellow]warning:[/] the dashboard on {escape(host)}:{port} has no "
                              "authentication: anyone who can reach this machine there can read the store.")
        shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
        shown = f"[{shown}]" if ":" in shown else shown
        console.print(f"dashboard on http://{escape(shown)}:{port} for {escape(mask_url(resolve_db_url(db)))}")
        serve(resolve_db_url(db), port, address=host)


def _is_loopback(host: str, port: int) -> bool:
    """Whether every address `host` stands for is this machine's loopback; one line if it
    stands for none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:
        raise ConfigError(f"--host {host}: not an address to listen on ({err}); use 127.0.0.1, 0.0.0.0 or an "
                          "address of this machine.") from None
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)
