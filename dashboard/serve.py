"""Start the dashboard: ``streamlit run`` on app.py, in a child process, on one store.

The store's URL reaches the app as ``$NAS_DB`` in the child's environment, not on its
command line, so a PostgreSQL password never shows in ``ps``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nas.db import resolve_db_url

APP = Path(__file__).resolve().parent / "app.py"
DEFAULT_PORT = 8501  # Streamlit's own default


def command(port: int, *, headless: bool = True, address: str | None = None) -> list[str]:
    """The ``python -m streamlit run`` command line that serves the dashboard.

    Args:
        port: the TCP port to listen on.
        headless: do not open a browser (and do not ask for an e-mail on first run).
        address: the interface to bind, e.g. ``127.0.0.1``; Streamlit's default otherwise.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, but got {port!r}.")
    argv = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port),
        "--server.headless", "true" if headless else "false",
        "--server.fileWatcherType", "none",  # an installed app; nothing to hot-reload
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
    ]
    if address is not None:
        argv += ["--server.address", address]
    return argv


def environment(db_url: str | None) -> dict[str, str]:
    """The child's environment: this one, with ``NAS_DB`` set to the resolved store URL."""
    return {**os.environ, "NAS_DB": resolve_db_url(db_url)}


def serve(db_url: str | None = None, port: int = DEFAULT_PORT, *, headless: bool = True,
          address: str | None = None) -> int:
    """Serve the dashboard on `db_url` (read-only) until interrupted; the exit code.

    Args:
        db_url: the store (``--db``); None means ``$NAS_DB``, else ``sqlite:///nas.db``.
            A bare path is a SQLite file. A store that does not exist yet is fine: the
            dashboard says how to launch a search and finds it once there.
        port: the TCP port (``--port``).
        headless: do not open a browser window.
        address: the interface to bind (Streamlit's default: all).

    Returns:
        Streamlit's exit code; 0 after Ctrl-C.
    """
    argv = command(port, headless=headless, address=address)
    process = subprocess.Popen(argv, env=environment(db_url))
    try:
        return process.wait()
    except KeyboardInterrupt:  # Streamlit got the same SIGINT and shuts down cleanly
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return 0
