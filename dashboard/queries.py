"""The dashboard's reads: every page gets its data from the store through this module
(single trials, page by page, through `nas.dashboard.trial_queries`, built on it).

Read-only by construction: the store is opened with ``Store.open(url, read_only=True)``
(SQLite through a ``mode=ro`` URI, PostgreSQL in READ ONLY transactions) and the Optuna
study (`nas.dashboard.search_insight`) through an equally read-only connection, so the dashboard can never modify or
lock a running search. Aggregates are computed in SQL (SQLAlchemy Core over the
``nas_*`` tables), so a page costs a few GROUP BY queries whether an experiment holds
ten trials or 100,000 (`benchmarks/dashboard_load.py`); no page loads every trial's full row. Results are cached for `TTL_S` seconds: a live search shows
up within that time, and many open tabs cost one query per TTL between them.

Each query takes the engine as ``_engine`` (not hashed by ``st.cache_data``) and the
database URL as ``url`` (the cache key):

    engine = open_engine(url)
    table = experiments(engine, url)

Accuracy is a trial's final validation accuracy, or its test accuracy when the data has
no validation split (as `nas status` reports it); fractions in [0, 1], seconds of
training wall time excluding evaluation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st
from nas.db import Store
from nas.db.schema import (
    Architecture,
    EpochResult,
    ExitCurvePoint,
    Experiment,
    Phase,
    Trial,
    TrialStatus,
    WidthCurvePoint,
)
from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql import Select

from nas.stats import pareto_front, summarize

TTL_S = 5  # seconds a cached read stays fresh; a live search appears within this
MAX_CURVES = 300  # learning curves drawn at once; more is unreadable and slow in a browser
ACCURACY_METRICS = ("val_acc", "test_acc")

_E = Experiment.__table__
_A = Architecture.__table__
_T = Trial.__table__
_R = EpochResult.__table__
_X = ExitCurvePoint.__table__
_W = WidthCurvePoint.__table__
TRIAL_ACCURACY = func.coalesce(_T.c.final_val_acc, _T.c.final_test_acc)
# the images TRIAL_ACCURACY was measured on (its binomial SE); NULL in a store from before revision 0006
_EVAL_IMAGES = case((_T.c.final_val_acc.is_not(None), _T.c.final_val_images), else_=_T.c.final_test_images)


# ---- the connection ---------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def open_store(url: str) -> Store:
    """The store at `url`, opened read-only, shared by every session of this server.

    Raises:
        StoreError: no database there yet, or not a nas store of this version (not
            cached: the next rerun tries again, so a store created later is found).
    """
    return Store.open(url, read_only=True)


def open_engine(url: str) -> Engine:
    """The read-only engine of `open_store`, for the SQL queries below."""
    return open_store(url).engine


def read_frame(engine: Engine, query: Select) -> pd.DataFrame:
    """The rows of `query` as a frame, its columns named as the query names them."""
    with engine.connect() as connection:
        result = connection.execute(query)
        # plain tuples: pandas probes each Row for attributes, and a Row's miss raises (10x slower)
        return pd.DataFrame(list(map(tuple, result.fetchall())), columns=list(result.keys()))


def experiment_id_of(name: str):
    """The id of the experiment called `name`, as a scalar subquery."""
    return select(_E.c.id).where(_E.c.name == name).scalar_subquery()


# ---- experiments ------------------------------------------------------------------------


def _count(status: str):
    return func.coalesce(func.sum(case((_T.c.status == status, 1), else_=0)), 0)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def experiments(_engine: Engine, url: str) -> pd.DataFrame:
    """One row per experiment, newest first: status, trial counts by status, best
    accuracy, compute spent (training seconds over all trials, running ones included),
    epochs run and planned, start, end and the latest trial start."""
    last_epoch = (
        select(func.max(_R.c.cumulative_seconds)).where(_R.c.trial_id == _T.c.id).scalar_subquery()
    )
    query = (
        select(
            _E.c.id, _E.c.name, _E.c.status, _E.c.created_at, _E.c.finished_at,
            func.count(_T.c.id).label("trials"),
            _count(TrialStatus.COMPLETED).label("completed"),
            _count(TrialStatus.PRUNED).label("pruned"),
            (_count(TrialStatus.FAILED) + _count(TrialStatus.DIVERGED)).label("failed"),
            _count(TrialStatus.RUNNING).label("running"),
            _count(TrialStatus.INTERRUPTED).label("interrupted"),
            func.max(case((_T.c.status == TrialStatus.COMPLETED, TRIAL_ACCURACY))).label("best_accuracy"),
            func.coalesce(func.sum(func.coalesce(_T.c.train_seconds, last_epoch, 0.0)), 0.0)
            .label("compute_seconds"),
            func.coalesce(func.sum(_T.c.epochs_done), 0).label("epochs_run"),
            func.coalesce(func.sum(_T.c.epochs_planned), 0).label("epochs_planned"),
            func.max(_T.c.started_at).label("last_trial_at"),
        )
        .select_from(_E.outerjoin(_T, _T.c.experiment_id == _E.c.id))
        .group_by(_E.c.id)
        .order_by(_E.c.id.desc())
    )
    return read_frame(_engine, query)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def experiment_config(_engine: Engine, url: str, experiment: str) -> dict[str, Any]:
    """The experiment's resolved config as stored by `nas launch` ({} if none)."""
    with _engine.connect() as connection:
        text = connection.execute(select(_E.c.config_json).where(_E.c.name == experiment)).scalar()
    return json.loads(text) if text else {}


@st.cache_data(ttl=TTL_S, show_spinner=False)
def phase_counts(_engine: Engine, url: str, experiment: str) -> pd.DataFrame:
    """Trials per (phase, status) of one experiment."""
    query = (
        select(_T.c.phase, _T.c.status, func.count().label("trials"))
        .where(_T.c.experiment_id == experiment_id_of(experiment))
        .group_by(_T.c.phase, _T.c.status)
        .order_by(_T.c.phase, _T.c.status)
    )
    return read_frame(_engine, query)


# ---- architectures and fronts -----------------------------------------------------------


@st.cache_data(ttl=TTL_S, show_spinner=False)
def arch_summary(_engine: Engine, url: str, experiment: str, phase: str | None) -> pd.DataFrame:
    """Completed trials of one phase (every phase for None) grouped by architecture:
    mean and best accuracy, mean train seconds, seeds, params and FLOPs."""
    query = (
        select(
            _T.c.arch_hash, _A.c.short_name, _A.c.params, _A.c.flops,
            func.count().label("seeds"),
            func.avg(TRIAL_ACCURACY).label("accuracy"),
            func.max(TRIAL_ACCURACY).label("best_accuracy"),
            func.avg(_T.c.train_seconds).label("train_seconds"),
        )
        .select_from(_T.join(_A, _A.c.hash == _T.c.arch_hash))
        .where(_T.c.experiment_id == experiment_id_of(experiment), _T.c.status == TrialStatus.COMPLETED)
        .group_by(_T.c.arch_hash, _A.c.short_name, _A.c.params, _A.c.flops)
        .order_by(_T.c.arch_hash)
    )
    if phase is not None:
        query = query.where(_T.c.phase == phase)
    return read_frame(_engine, query)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def arch_choices(_engine: Engine, url: str, experiment: str) -> pd.DataFrame:
    """Every architecture an experiment tried (hash, short_name, trials, mean accuracy
    of its completed trials), best first; never-completed ones last."""
    query = (
        select(
            _T.c.arch_hash, _A.c.short_name, func.count().label("trials"),
            func.avg(case((_T.c.status == TrialStatus.COMPLETED, TRIAL_ACCURACY))).label("accuracy"),
        )
        .select_from(_T.join(_A, _A.c.hash == _T.c.arch_hash))
        .where(_T.c.experiment_id == experiment_id_of(experiment))
        .group_by(_T.c.arch_hash, _A.c.short_name)
    )
    frame = read_frame(_engine, query)
    return frame.sort_values(["accuracy", "arch_hash"], ascending=[False, True], na_position="last",
                             ignore_index=True)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def seed_summary(_engine: Engine, url: str, experiment: str, phase: str) -> pd.DataFrame:
    """Per architecture of one phase (confirm, ablation): mean, std and 95% CI over its
    completed seeds of accuracy and train seconds (`nas.stats.summarize`)."""
    query = (
        select(
            _T.c.arch_hash, _A.c.short_name, _A.c.params, _A.c.flops,
            TRIAL_ACCURACY.label("accuracy"), _T.c.train_seconds,
        )
        .select_from(_T.join(_A, _A.c.hash == _T.c.arch_hash))
        .where(
            _T.c.experiment_id == experiment_id_of(experiment),
            _T.c.phase == phase,
            _T.c.status == TrialStatus.COMPLETED,
        )
        .order_by(_T.c.arch_hash, _T.c.id)
    )
    rows = read_frame(_engine, query)
    out = []
    for (arch_hash, short_name, params, flops), group in rows.groupby(
        ["arch_hash", "short_name", "params", "flops"], sort=False
    ):
        row: dict[str, Any] = dict(arch_hash=arch_hash, short_name=short_name, params=int(params),
                                   flops=int(flops), seeds=len(group))
        for metric in ("accuracy", "train_seconds"):
            s = summarize(group[metric].dropna().tolist())
            row.update({metric: s.mean, f"{metric}_std": s.std,
                        f"{metric}_ci_low": s.ci_low, f"{metric}_ci_high": s.ci_high})
        out.append(row)
    columns = ["arch_hash", "short_name", "params", "flops", "seeds"] + [
        f"{m}{suffix}" for m in ("accuracy", "train_seconds") for suffix in ("", "_std", "_ci_low", "_ci_high")
    ]
    return pd.DataFrame(out, columns=columns)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def decisions(_store: Store, url: str, experiment: str, phase: str = Phase.CONFIRM) -> pd.DataFrame:
    """Per architecture of a phase, as `nas status` shows it: its decision (the confirm race's;
    a search with seed repeats: best / not separated / worse on the shared seeds) and its place (confirm:
    the export --rank), its Pareto front numbered from 1 (1 = the front) and how sure that is (the
    share of seed bootstraps with it on the front, `nas.stats.front_share`)."""
    from nas.results import arch_results

    rows = arch_results(_store, experiment, phase)
    return pd.DataFrame({"arch_hash": [r.arch_hash for r in rows], "decision": [r.decision or "-" for r in rows],
                         "rank": range(1, len(rows) + 1), "pareto_front": [r.pareto_front for r in rows],
                         "front_share": [r.front_share for r in rows]})


@st.cache_data(ttl=TTL_S, show_spinner=False)
def search_decides(_store: Store, url: str, experiment: str) -> bool:
    """Whether the search phase itself decides best / not separated / worse (seed repeats on shared
    seeds, `nas.results.search_groups`): only then are its `decisions` worth computing, which
    rank every architecture (minutes for a search of 100,000 trials)."""
    from nas.results import search_groups

    return bool(search_groups(_store, experiment))


def front_mask(accuracy: Sequence[float], cost: Sequence[float]) -> list[bool]:
    """Which points are non-dominated, accuracy maximised and cost minimised.

    `nas.stats.pareto_front` decides. Its all-pairs test is quadratic, so a sort by cost
    first drops every point that a cheaper-or-equal, at-least-as-accurate point
    dominates; only the survivors (exactly the front, since a dominated point is
    dominated by some front point) reach it. 10,000 architectures: milliseconds.
    Points with a missing (NaN) coordinate are never on the front.
    """
    n = len(accuracy)
    finite = [i for i in range(n) if math.isfinite(accuracy[i]) and math.isfinite(cost[i])]
    candidates: list[int] = []
    best, best_cost = -math.inf, math.inf  # the best accuracy so far and its lowest cost
    for i in sorted(finite, key=lambda i: (cost[i], -accuracy[i])):
        if accuracy[i] > best:
            best, best_cost = accuracy[i], cost[i]
            candidates.append(i)
        elif accuracy[i] == best and cost[i] == best_cost:  # a duplicate of a front point
            candidates.append(i)
    points = [[accuracy[i], cost[i]] for i in candidates]
    on_front = {candidates[k] for k in pareto_front(points, ["maximize", "minimize"])}
    return [i in on_front for i in range(n)]


@st.cache_data(ttl=TTL_S, show_spinner=False)
def pareto_points(_engine: Engine, url: str, experiment: str, phase: str | None, cost: str) -> pd.DataFrame:
    """`arch_summary` with an ``on_front`` column: non-dominated in (accuracy, `cost`),
    where `cost` is ``train_seconds``, ``params`` or ``flops``."""
    points = arch_summary(_engine, url, experiment, phase)
    accuracy = points["accuracy"].astype(float).fillna(math.nan).tolist()
    costs = points[cost].astype(float).fillna(math.nan).tolist()
    return points.assign(on_front=front_mask(accuracy, costs))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def architecture(_engine: Engine, url: str, arch_hash: str) -> dict[str, Any] | None:
    """One architecture's row (hash, config_json, short_name, params, flops), or None."""
    with _engine.connect() as connection:
        row = connection.execute(select(_A).where(_A.c.hash == arch_hash)).mappings().first()
    return dict(row) if row is not None else None


# ---- trials and curves ------------------------------------------------------------------

def trial_columns() -> list:
    """The columns of a trial row in the dashboard's tables (from trials joined with
    architectures)."""
    return [
        _T.c.id, _T.c.arch_hash, _A.c.short_name, _T.c.seed, _T.c.phase, _T.c.status,
        _T.c.epochs_done, _T.c.epochs_planned, TRIAL_ACCURACY.label("accuracy"), _EVAL_IMAGES.label("eval_images"),
        _T.c.final_test_acc.label("test_accuracy"), _T.c.best_val_acc, _T.c.train_seconds,
        _T.c.device, _T.c.started_at, _T.c.finished_at, _T.c.code_version, _T.c.error, _T.c.prune_reason,
    ]


@st.cache_data(ttl=TTL_S, show_spinner=False)
def arch_trials(_engine: Engine, url: str, arch_hash: str, experiment: str | None) -> pd.DataFrame:
    """The trials of one architecture (in one experiment, or in all for None), with the
    experiment's name."""
    query = (
        select(*trial_columns(), _E.c.name.label("experiment"), _T.c.recipe_json)
        .select_from(_T.join(_A, _A.c.hash == _T.c.arch_hash).join(_E, _E.c.id == _T.c.experiment_id))
        .where(_T.c.arch_hash == arch_hash)
        .order_by(_T.c.id)
    )
    if experiment is not None:
        query = query.where(_E.c.name == experiment)
    return read_frame(_engine, query)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def epochs(_engine: Engine, url: str, trial_ids: tuple[int, ...]) -> pd.DataFrame:
    """The recorded epochs of the given trials (at most `MAX_CURVES` of them)."""
    query = (
        select(_R)
        .where(_R.c.trial_id.in_(list(trial_ids[:MAX_CURVES])))
        .order_by(_R.c.trial_id, _R.c.epoch)
    )
    return read_frame(_engine, query)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def exit_curves(_engine: Engine, url: str, trial_ids: tuple[int, ...]) -> pd.DataFrame:
    """The early-exit curves of the given trials (BranchyNet; trials without exits have none):
    one row per trial and threshold, thresholds ascending, ``exit_shares`` a list of
    fractions (side exits in network order, then the final exit)."""
    query = (
        select(_X)
        .where(_X.c.trial_id.in_(list(trial_ids[:MAX_CURVES])))
        .order_by(_X.c.trial_id, _X.c.position)
    )
    frame = read_frame(_engine, query)
    frame["exit_shares"] = [json.loads(text) for text in frame["exit_shares"]]
    return frame


@st.cache_data(ttl=TTL_S, show_spinner=False)
def width_curves(_engine: Engine, url: str, trial_ids: tuple[int, ...]) -> pd.DataFrame:
    """The width curves of the given trials (US-Nets; only trials trained with
    ``recipe.slimmable`` have one): one row per trial and width ratio, widths ascending,
    with ``accuracy`` the val accuracy, else the test accuracy."""
    query = (
        select(_W, func.coalesce(_W.c.val_acc, _W.c.test_acc).label("accuracy"))
        .where(_W.c.trial_id.in_(list(trial_ids[:MAX_CURVES])))
        .order_by(_W.c.trial_id, _W.c.width)
    )
    return read_frame(_engine, query)


def _without_width(config_json: str) -> str:
    config = json.loads(config_json)
    config.pop("width", None)
    return json.dumps(config, sort_keys=True)


def _slimmable_recipe(recipe_json: str | None) -> bool:
    try:
        return bool((json.loads(recipe_json or "{}").get("recipe") or {}).get("slimmable"))
    except (ValueError, AttributeError):
        return False


@st.cache_data(ttl=TTL_S, show_spinner=False)
def width_siblings(_engine: Engine, url: str, arch_hash: str, experiment: str | None) -> pd.DataFrame:
    """Completed trials of every architecture that differs from `arch_hash` only in its width
    (itself included), each width trained on its own (trials trained as a US-Net are left
    out), in one experiment or in all (None): one row per trial with the architecture's
    ``width``, ``short_name``, ``params`` and ``flops``, and the trial's ``accuracy``."""
    archs = read_frame(_engine, select(_A.c.hash, _A.c.config_json, _A.c.short_name, _A.c.params, _A.c.flops))
    own = archs[archs["hash"] == arch_hash]
    if own.empty:
        return pd.DataFrame(columns=["id", "arch_hash", "seed", "phase", "accuracy", "experiment", "width",
                                     "short_name", "params", "flops"])
    key = _without_width(own["config_json"].iloc[0])
    archs = archs[[_without_width(c) == key for c in archs["config_json"]]]
    archs = archs.assign(width=[float(json.loads(c).get("width", 1.0)) for c in archs["config_json"]])
    query = (
        select(_T.c.id, _T.c.arch_hash, _T.c.seed, _T.c.phase, TRIAL_ACCURACY.label("accuracy"), _T.c.recipe_json,
               _E.c.name.label("experiment"))
        .select_from(_T.join(_E, _E.c.id == _T.c.experiment_id))
        .where(_T.c.arch_hash.in_(archs["hash"].tolist()), _T.c.status == TrialStatus.COMPLETED)
        .order_by(_T.c.id)
    )
    if experiment is not None:
        query = query.where(_E.c.name == experiment)
    trials = read_frame(_engine, query)
    trials = trials[[not _slimmable_recipe(r) for r in trials["recipe_json"]]].drop(columns="recipe_json")
    columns = archs[["hash", "width", "short_name", "params", "flops"]].rename(columns={"hash": "arch_hash"})
    return trials.merge(columns, on="arch_hash").sort_values(["width", "id"], ignore_index=True)


# ---- search insight ---------------------------------------------------------------------


@st.cache_data(ttl=TTL_S, show_spinner=False)
def pruning_savings(_engine: Engine, url: str, experiment: str) -> pd.DataFrame:
    """Finished search trials by status: trials, epochs run and planned, training
    seconds run, and the seconds the unrun epochs would have cost (each trial's own
    mean epoch time times its epochs not run)."""
    not_run = case(
        (_T.c.epochs_done > 0,
         (_T.c.epochs_planned - _T.c.epochs_done) * _T.c.train_seconds / _T.c.epochs_done),
        else_=0.0,
    )
    query = (
        select(
            _T.c.status, func.count().label("trials"),
            func.sum(_T.c.epochs_done).label("epochs_run"),
            func.sum(_T.c.epochs_planned).label("epochs_planned"),
            func.coalesce(func.sum(_T.c.train_seconds), 0.0).label("seconds_run"),
            func.coalesce(func.sum(not_run), 0.0).label("seconds_not_run"),
        )
        .where(
            _T.c.experiment_id == experiment_id_of(experiment),
            _T.c.phase == Phase.SEARCH,
            _T.c.status.in_([TrialStatus.COMPLETED, TrialStatus.PRUNED, TrialStatus.FAILED, TrialStatus.DIVERGED]),
        )
        .group_by(_T.c.status)
        .order_by(_T.c.status)
    )
    return read_frame(_engine, query)


def pruning_share(savings: pd.DataFrame) -> dict[str, float]:
    """Headline figures of `pruning_savings`: the share of planned search epochs that
    pruning did not run, and the estimated share of training seconds it saved."""
    pruned = savings[savings["status"] == TrialStatus.PRUNED]
    planned = float(savings["epochs_planned"].sum())
    epochs_saved = float((pruned["epochs_planned"] - pruned["epochs_run"]).sum())
    seconds_saved = float(pruned["seconds_not_run"].sum())
    seconds_run = float(savings["seconds_run"].sum())
    return {
        "epochs_run": float(savings["epochs_run"].sum()),
        "epochs_planned": planned,
        "epochs_saved": epochs_saved,
        "epoch_share_saved": epochs_saved / planned if planned else 0.0,
        "seconds_run": seconds_run,
        "seconds_saved": seconds_saved,
        "second_share_saved": seconds_saved / (seconds_run + seconds_saved) if seconds_run + seconds_saved else 0.0,
    }


# ---- ablations --------------------------------------------------------------------------


@st.cache_data(ttl=TTL_S, show_spinner=False)
def ablation_references(_store: Store, url: str, experiment: str) -> list[str]:
    """Hashes of the architectures `nas ablate` studied in an experiment, latest first."""
    from nas.ablation.report import ablation_references

    return ablation_references(_store, experiment)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def ablation_report(_store: Store, url: str, experiment: str, reference_hash: str):
    """`nas.ablation.report.contributions`: each variant's paired difference to the reference
    (95% CI, the study's p), read from the store; the same table `nas ablate` prints."""
    from nas.ablation.report import contributions

    return contributions(_store, experiment, reference_hash)


# ---- comparing experiments --------------------------------------------------------------


@st.cache_data(ttl=TTL_S, show_spinner=False)
def comparison(_store: Store, url: str, experiments: tuple[str, ...], match: str, resamples: int):
    """`nas.compare.compare` of experiments of this store: the same comparison `nas compare`
    prints (shared architectures, each one's result in each, rank correlations).

    Raises:
        ConfigError: an experiment without completed search or confirm trials (not cached).
    """
    from nas.compare import Source, compare, read_entries

    sources = [Source(name, url, name) for name in experiments]
    return compare(sources, [read_entries(_store, name) for name in experiments], match=match, resamples=resamples)
