"""What every page shares: the database URL, the empty-store message, the experiment
picker, page links, and number formats.

The selected experiment and architecture live in the URL (``?exp=...&arch=...``), so a
page can be bookmarked or sent to a colleague, and in Session State, so the sidebar's
page menu (which drops query parameters) keeps them.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import streamlit as st
from nas.dashboard import queries
from nas.db import mask_url, resolve_db_url
from sqlalchemy.engine import Engine, make_url

from nas.errors import StoreError

# Page files, relative to app.py (st.navigation registers them; st.switch_page and
# AppTest.switch_page find them by these paths).
PAGES = {
    "experiments": "views/experiments.py",
    "pareto": "views/pareto.py",
    "architecture": "views/architecture.py",
    "trials": "views/trials.py",
    "insight": "views/insight.py",
    "ablations": "views/ablations.py",
    "compare": "views/compare.py",
}
LAUNCH_COMMAND = "nas launch search_spaces/cifar_fast.yaml"
REFRESH_S = 10  # a page showing a running experiment re-reads this often


def db_url() -> str:
    """The store to show: ``--db`` after ``--`` on the streamlit command line, else
    ``$NAS_DB``, else ``sqlite:///nas.db`` (`nas.db.resolve_db_url`)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db")
    known, _ = parser.parse_known_args(sys.argv[1:])
    return resolve_db_url(known.db)


def connect() -> tuple[Engine, str]:
    """The read-only engine and URL of the store; stops the page with a how-to when
    there is no store yet."""
    url = db_url()
    try:
        engine = queries.open_engine(url)
    except StoreError as err:
        if _missing_sqlite_file(url):
            empty_store(f"There is no store at {mask_url(url)} yet.")
        else:  # unreachable server, older schema, not a nas database: say what is wrong
            st.error(f"Cannot read the store: {err}")
        st.stop()
    st.sidebar.caption(f"Store: `{mask_url(url)}` (read-only)")
    return engine, url


def _missing_sqlite_file(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").expanduser().exists()


def empty_store(detail: str | None = None) -> None:
    """The message of an empty store: what to run to fill it."""
    st.info("**No experiments yet.** Launch a search, and its trials appear here as they finish:")
    st.code(LAUNCH_COMMAND, language="bash")
    st.caption("On a CPU-only machine add `--budget cpu` (about 15 minutes on 2 cores). "
               "Then start this dashboard with `nas dashboard` (or `--db URL` for another store).")
    if detail:
        st.caption(detail)


def choose_experiment(engine: Engine, url: str) -> str:
    """The sidebar's experiment picker (newest first); stops the page on an empty store."""
    table = queries.experiments(engine, url)
    if table.empty:
        empty_store()
        st.stop()
    status = dict(zip(table["name"], table["status"]))
    return query_select(
        "exp", "Experiment", table["name"].tolist(), sidebar=True,
        format_func=lambda name: f"{name} ({status[name]})",
    )


def query_select(param: str, label: str, options: Sequence[str], *, sidebar: bool = False,
                 format_func: Callable[[Any], str] = str) -> str:
    """A selectbox whose choice is kept in ``st.query_params[param]`` and Session State.

    The URL wins (a link or a bookmark), then the last choice on any page, then the
    first option.
    """
    options = list(options)
    state_key, widget_key = f"nas_{param}", f"nas_{param}_box"
    wanted = st.query_params.get(param) or st.session_state.get(state_key)
    if wanted not in options:
        wanted = options[0]
    st.session_state[state_key] = wanted
    st.session_state[widget_key] = wanted
    st.query_params[param] = wanted

    def changed() -> None:
        st.session_state[state_key] = st.session_state[widget_key]
        st.query_params[param] = st.session_state[widget_key]

    where = st.sidebar if sidebar else st
    return where.selectbox(label, options, key=widget_key, on_change=changed, format_func=format_func)


def open_architecture(experiment: str, arch_hash: str) -> None:
    """Go to the Architecture page of `arch_hash` (does not return)."""
    st.session_state["nas_arch"] = arch_hash
    st.switch_page(PAGES["architecture"], query_params={"exp": experiment, "arch": arch_hash})


def selected_hash(event: Any) -> str | None:
    """The architecture hash of the first point selected on a chart whose points carry
    ``customdata[0] = hash`` (`st.plotly_chart(on_select="rerun")`), or None."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for point in points or []:
        custom = point.get("customdata")
        if isinstance(custom, (list, tuple)) and custom:
            return str(custom[0])
        if isinstance(custom, str):
            return custom
    return None


def export_command(experiment: str, arch_hash: str) -> str:
    """The shell command that exports an architecture of an experiment."""
    return f"nas export {shlex.quote(experiment)} --arch {arch_hash} --out winner/"


# ---- formats ----------------------------------------------------------------------------


def percent(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value * 100:.{digits}f}%"


def duration(seconds: float | None) -> str:
    """``42.0 s``, ``12.5 min`` or ``3.2 h``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def mean_pm(mean: float, std: float, scale: float = 100.0, unit: str = "%", digits: int = 2) -> str:
    """``87.12 ± 0.35%``; just ``87.12%`` when a single seed gives no spread."""
    if mean is None or not math.isfinite(mean):
        return "-"
    if std is None or not math.isfinite(std):
        return f"{mean * scale:.{digits}f}{unit}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}{unit}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
