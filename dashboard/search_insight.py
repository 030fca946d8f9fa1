"""The search-insight page's own reads: Optuna's parameter importance on the experiment's
study (same database, read-only) and how early curves rank the final accuracy. The rest
of what the dashboard shows comes from `nas.dashboard.queries`."""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd
import streamlit as st
from nas.dashboard.queries import ACCURACY_METRICS, experiment_config, open_engine
from nas.db import Store, optuna_storage

# parameter importance refits a model, the rank correlations read every curve: at most this often
IMPORTANCE_TTL_S = 60


def importance_evaluators() -> list[str]:
    """The Optuna importance evaluators usable here: PED-ANOVA always, fANOVA when
    scikit-learn is installed (Optuna's fANOVA fits its random forest)."""
    import importlib.util

    return ["PED-ANOVA"] + (["fANOVA"] if importlib.util.find_spec("sklearn") else [])


@st.cache_data(ttl=IMPORTANCE_TTL_S, show_spinner=False)
def param_importances(url: str, experiment: str, evaluator: str = "PED-ANOVA") -> dict[str, Any]:
    """Optuna's parameter importance on the experiment's stored study.

    The target is the study's first accuracy objective (the experiment's config says
    which; the first objective otherwise). Returns ``{"importances": {param: share},
    "trials": completed trials, "error": None}``, or with ``error`` saying why none
    could be computed (no study, too few completed trials, nothing varied).
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result: dict[str, Any] = {"importances": {}, "trials": 0, "error": None}
    try:
        study = optuna.load_study(study_name=experiment, storage=optuna_storage(url, read_only=True))
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    except Exception as exc:  # KeyError (no such study), SQL errors (no Optuna tables)
        result["error"] = f"no Optuna study named {experiment!r} could be read ({type(exc).__name__}: {exc})."
        return result
    result["trials"] = len(complete)
    if len(complete) < 2:
        result["error"] = (f"parameter importance needs at least 2 completed search trials; "
                           f"the study has {len(complete)}.")
        return result
    objective = _accuracy_objective(url, experiment) if len(study.directions) > 1 else 0
    # PED-ANOVA explains what makes the target *low*: negate a maximised objective.
    sign = -1.0 if study.directions[objective] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    evaluators = {
        "PED-ANOVA": optuna.importance.PedAnovaImportanceEvaluator,
        "fANOVA": lambda: optuna.importance.FanovaImportanceEvaluator(seed=0),
    }
    try:
        with warnings.catch_warnings():  # PED-ANOVA's reminder that low targets count as good
            warnings.filterwarnings("ignore", message=".*low `target` values.*")
            importances = optuna.importance.get_param_importances(
                study, evaluator=evaluators[evaluator](), target=lambda t: sign * t.values[objective]
            )
    except Exception as exc:  # e.g. every completed trial has the same parameters
        result["error"] = f"Optuna could not compute importances: {type(exc).__name__}: {exc}"
        return result
    result["importances"] = {k: float(v) for k, v in importances.items()}
    return result


def _accuracy_objective(url: str, experiment: str) -> int:
    config = experiment_config(open_engine(url), url, experiment)
    objectives = (config.get("search") or {}).get("objectives") or []
    for i, objective in enumerate(objectives):
        if objective.get("metric") in ACCURACY_METRICS:
            return i
    return 0


@st.cache_data(ttl=IMPORTANCE_TTL_S, show_spinner=False)
def curve_rank_correlation(_store: Store, url: str, experiment: str) -> pd.DataFrame:
    """`nas.search.curve_ranks.curve_rank_correlation` (what `nas status` prints): per epoch,
    Spearman's rho of the pruned metric with the final accuracy and its bootstrap 95% CI.
    Reads every completed search trial's curve (seconds at 60,000 of them): recomputed at
    most every `IMPORTANCE_TTL_S`."""
    from dataclasses import asdict

    from nas.results import accuracy_objective
    from nas.search.curve_ranks import curve_rank_correlation as correlations

    found = _store.get_experiment(experiment)
    rows = correlations(_store, found.id, accuracy_objective(_store, experiment)) if found is not None else []
    return pd.DataFrame([asdict(r) for r in rows], columns=["epoch", "trials", "rho", "ci_low", "ci_high"])
