"""`nas dashboard`: the Streamlit app on the store."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from nas.cli.common import (
    DbOption,
    console,
    exit_on_user_error,
    mask_url,
    open_existing_store,
)


def dashboard(
    db: DbOption = None,
    port: Annotated[int, typer.Option(help="TCP port to serve on.", min=1, max=65535)] = 8501,
) -> None:
    """Browse the store in a web browser: Pareto fronts, learning curves, seed variance,
    pruning savings, parameter importance and ablations.

    Starts the Streamlit app (dashboard/app.py) on http://localhost:PORT. It opens the
    store read-only, so it never modifies or locks a running search; pages of a running
    experiment refresh themselves. Stop it with Ctrl-C.
    """
    with exit_on_user_error():
        from nas.dashboard.serve import serve
        from nas.db import resolve_db_url

        # Refuse a missing file, an unsupported URL or a file that is no nas store now, in
        # one line, rather than serve pages that can only say so.
        open_existing_store(resolve_db_url(db), read_only=True).close()
        console.print(f"dashboard on http://localhost:{port} for {escape(mask_url(resolve_db_url(db)))}")
        raise typer.Exit(serve(resolve_db_url(db), port))
