"""Start the dashboard: ``streamlit run`` on app.py, in place of this process, on one store.

This process becomes Streamlit (exec), so whatever stops it (Ctrl-C, a supervisor's SIGTERM,
a SIGKILL) stops the server: no child is left serving. The store's URL reaches the app as
``$NAS_DB`` in the environment, not on the command line, so a PostgreSQL password never
shows in ``ps``. It listens on 127.0.0.1 unless given another address: the dashboard has no
authentication.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

from nas.db import resolve_db_url

APP = Path(__file__).resolve().parent / "app.py"
DEFAULT_PORT = 8501  # Streamlit's own default
DEFAULT_ADDRESS = "127.0.0.1"  # Streamlit's default is every interface


def command(port: int, *, headless: bool = True, address: str = DEFAULT_ADDRESS) -> list[str]:
    """The ``python -m streamlit run`` command line that serves the dashboard.

    Args:
        port: the TCP port to listen on.
        headless: do not open a browser (and do not ask for an e-mail on first run).
        address: the interface to listen on: ``127.0.0.1`` (this machine only), ``0.0.0.0``
            (every IPv4 interface) or one address.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, but got {port!r}.")
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port),
        "--server.headless", "true" if headless else "false",
        "--server.fileWatcherType", "none",  # an installed app; nothing to hot-reload
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        "--server.address", address,
    ]


def environment(db_url: str | None) -> dict[str, str]:
    """Streamlit's environment: this one, with ``NAS_DB`` set to the resolved store URL."""
    return {**os.environ, "NAS_DB": resolve_db_url(db_url)}


def serve(db_url: str | None = None, port: int = DEFAULT_PORT, *, headless: bool = True,
          address: str = DEFAULT_ADDRESS) -> NoReturn:
    """Replace this process with Streamlit serving the dashboard on `db_url` (read-only).

    Args:
        db_url: the store (``--db``); None means ``$NAS_DB``, else ``sqlite:///nas.db``.
            A bare path is a SQLite file. A store that does not exist yet is fine: the
            dashboard says how to launch a search and finds it once there.
        port: the TCP port (``--port``).
        headless: do not open a browser window.
        address: the interface to listen on (``--host``).

    Streamlit stops on SIGINT or SIGTERM and exits 0.
    """
    argv = command(port, headless=headless, address=address)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, environment(db_url))
