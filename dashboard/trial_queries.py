"""The dashboard's reads of single trials, sized for a search of any length.

An experiment may hold 100,000 trials; no page loads them all. The trials table reads
one page of at most `MAX_TABLE_ROWS` rows, with its filters (status, phase, space keys)
and its order applied in SQL, and counts the rows that match; the insight page reads
only the two columns it plots. What is filtered by space key (``width``, ``L1.extra``,
...) lives in the architectures' configs, so those filters are resolved over the
experiment's architectures (a few thousand rows, `experiment_archs`) into the set of
matching hashes, and that set goes into the SQL.

Same conventions as `nas.dashboard.queries`: the engine as ``_engine``, the URL as the
cache key, results cached for `TTL_S` seconds.
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from functools import lru_cache
from typing import Any

import pandas as pd
import streamlit as st
from nas.dashboard.queries import TRIAL_ACCURACY, TTL_S, experiment_id_of, read_frame, trial_columns
from nas.db.schema import Architecture, Phase, Trial, TrialStatus
from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement

_A = Architecture.__table__
_T = Trial.__table__
MAX_TABLE_ROWS = 1_000  # trials shown in the table at once; the count says how many match
TABLE_ORDERS = {  # the table's sort choices, applied in SQL before the row limit
    "start order": (_T.c.id,),
    "latest first": (_T.c.id.desc(),),
    "accuracy, best first": (TRIAL_ACCURACY.desc().nulls_last(), _T.c.id),
}


# ---- an architecture's fields as space keys ---------------------------------------------


def arch_dimensions(config_json: str) -> dict[str, Any]:
    """Every field of an architecture as dotted keys with defaults filled in, e.g.
    ``{"width": 0.25, "L1.extra": 0, "L1.residual": 1, ...}`` (the space's keys)."""
    return dict(_dimensions(config_json))


@lru_cache(maxsize=65_536)
def _dimensions(config_json: str) -> tuple[tuple[str, Any], ...]:
    # The stored JSON is canonical (ArchConfig.to_json of a validated config: the fields off
    # their default), so the defaults overlaid with its keys are the validated config's fields.
    # Validating again costs ~0.4 ms an architecture, seconds for a search's thousands.
    defaults = _default_dimensions()
    try:
        stored = _flatten_dict(json.loads(config_json))
    except (ValueError, AttributeError):
        stored = None
    if stored is not None and stored.keys() <= defaults.keys():
        return tuple({**defaults, **{k: _cell(v) for k, v in stored.items()}}.items())
    return _validated_dimensions(config_json)


def _validated_dimensions(config_json: str) -> tuple[tuple[str, Any], ...]:
    try:
        from nas.models.arch import ArchConfig

        return tuple(_flatten(ArchConfig.from_json(config_json)).items())
    except Exception:  # a config this version cannot build: show its raw keys
        return tuple(_flatten_dict(json.loads(config_json)).items())


@lru_cache(maxsize=1)
def _default_dimensions() -> dict[str, Any]:
    from nas.models.arch import ArchConfig

    return _flatten(ArchConfig())


def _cell(value: Any) -> Any:
    # tuples (exits.stages) as the space writes them, "L1+L2": one plain value per cell
    return "+".join(map(str, value)) if isinstance(value, (tuple, list)) else value


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            out.update(_flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = _cell(value)
    return out


def _flatten_dict(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def searched_keys(config: dict[str, Any], archs: pd.DataFrame) -> list[str]:
    """The space keys an experiment searched over: the non-fixed entries of its stored
    `space`, else the architecture columns of `archs` (`experiment_archs`) that take more
    than one value."""
    space = config.get("space") or {}
    keys = [k for k, entry in space.items() if not (isinstance(entry, dict) and "fixed" in entry)]
    keys = [k for k in keys if k in archs.columns]
    if keys:
        return keys
    dims = [c for c in archs.columns if c == "width" or (c[:1] == "L" and "." in c)]
    return [c for c in dims if archs[c].nunique(dropna=True) > 1]


# ---- the experiment's architectures -----------------------------------------------------


@st.cache_data(ttl=TTL_S, show_spinner=False)
def experiment_archs(_engine: Engine, url: str, experiment: str) -> pd.DataFrame:
    """One row per architecture an experiment tried (``arch_hash``, ``short_name``), with
    one column per architecture field (``width``, ``L1.extra``, ...)."""
    tried = select(_T.c.arch_hash).where(_T.c.experiment_id == experiment_id_of(experiment))
    query = (
        select(_A.c.hash.label("arch_hash"), _A.c.short_name, _A.c.config_json)
        .where(_A.c.hash.in_(tried))
        .order_by(_A.c.hash)
    )
    return with_dimensions(read_frame(_engine, query))


def with_dimensions(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with one column per architecture field, in place of its config_json."""
    dims = pd.DataFrame([arch_dimensions(c) for c in frame["config_json"]], index=frame.index)
    return pd.concat([frame.drop(columns="config_json"), dims], axis=1)


def matching_archs(archs: pd.DataFrame, chosen: dict[str, list]) -> tuple[str, ...] | None:
    """The hashes of `archs` whose fields take one of the chosen values of every key
    (``{"width": [0.5, 1.0], "L1.extra": []}``; an empty list: any value); None when
    no key is filtered."""
    chosen = {key: values for key, values in chosen.items() if values}
    if not chosen:
        return None
    keep = pd.Series(True, index=archs.index)
    for key, values in chosen.items():
        keep &= archs[key].isin(values)
    return tuple(sorted(archs.loc[keep, "arch_hash"]))


# ---- one page of trials -----------------------------------------------------------------


def _where(experiment: str, statuses: tuple[str, ...], phases: tuple[str, ...],
           arch_hashes: tuple[str, ...] | None) -> list[ColumnElement[bool]]:
    where = [_T.c.experiment_id == experiment_id_of(experiment)]
    if statuses:
        where.append(_T.c.status.in_(statuses))
    if phases:
        where.append(_T.c.phase.in_(phases))
    if arch_hashes is not None:
        # Written into the SQL text (hex hashes), not bound: a filter may keep more
        # architectures than a driver accepts parameters (SQLite: 32,766).
        where.append(_T.c.arch_hash.in_(bindparam("arch_hashes", list(arch_hashes), expanding=True,
                                                  literal_execute=True)))
    return where


@st.cache_data(ttl=TTL_S, show_spinner=False)
def count_trials(_engine: Engine, url: str, experiment: str, statuses: tuple[str, ...] = (),
                 phases: tuple[str, ...] = (), arch_hashes: tuple[str, ...] | None = None) -> int:
    """How many trials of an experiment match the filters (empty: any status or phase;
    None: any architecture)."""
    query = select(func.count()).select_from(_T).where(*_where(experiment, statuses, phases, arch_hashes))
    with _engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


@st.cache_data(ttl=TTL_S, show_spinner=False)
def trial_rows(_engine: Engine, url: str, experiment: str, statuses: tuple[str, ...] = (),
               phases: tuple[str, ...] = (), arch_hashes: tuple[str, ...] | None = None, *,
               order: str = "start order", limit: int = MAX_TABLE_ROWS) -> pd.DataFrame:
    """The first `limit` trials in `order` (a key of `TABLE_ORDERS`) among those that match
    the filters (as `count_trials`), with the `nas.dashboard.queries.trial_columns`."""
    order_by = TABLE_ORDERS[order]
    # The page's ids first, from the (experiment, phase, status) index; then only their rows
    # joined with their architectures: sorting 100,000 joined rows costs ten times more.
    ids = (select(_T.c.id).where(*_where(experiment, statuses, phases, arch_hashes))
           .order_by(*order_by).limit(limit).subquery())
    query = (
        select(*trial_columns())
        .select_from(_T.join(ids, ids.c.id == _T.c.id).join(_A, _A.c.hash == _T.c.arch_hash))
        .order_by(*order_by)
    )
    return read_frame(_engine, query)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def completed_accuracies(_engine: Engine, url: str, experiment: str, phase: str = Phase.SEARCH) -> pd.DataFrame:
    """Per completed trial of one phase, in start order: ``arch_hash``, ``short_name`` and
    its ``accuracy`` (two columns of each trial, so 100,000 of them read in well under a
    second)."""
    query = (
        select(_T.c.arch_hash, _A.c.short_name, TRIAL_ACCURACY.label("accuracy"))
        .select_from(_T.join(_A, _A.c.hash == _T.c.arch_hash))
        .where(_T.c.experiment_id == experiment_id_of(experiment), _T.c.phase == phase,
               _T.c.status == TrialStatus.COMPLETED)
        .order_by(_T.c.id)
    )
    return read_frame(_engine, query)
