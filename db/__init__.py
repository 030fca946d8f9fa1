"""The SQL store of nas: schema, migrations, engines and the `Store` that writes it.

Open it with ``Store.open(resolve_db_url(cli_value))``; see `nas.db.store` for the
methods and `nas.db.schema` for the tables.
"""

from __future__ import annotations

from nas.db.engine import make_engine, mask_url, optuna_storage, resolve_db_url, upgrade
from nas.db.schema import (
    AblationVariant,
    Architecture,
    EpochResult,
    ExitCurvePoint,
    Experiment,
    ExperimentStatus,
    Phase,
    Trial,
    TrialStatus,
    TrialWeights,
    WidthCurvePoint,
)
from nas.db.store import Store

__all__ = [
    "AblationVariant",
    "Architecture",
    "EpochResult",
    "ExitCurvePoint",
    "Experiment",
    "ExperimentStatus",
    "Phase",
    "Store",
    "Trial",
    "TrialStatus",
    "TrialWeights",
    "WidthCurvePoint",
    "make_engine",
    "mask_url",
    "optuna_storage",
    "resolve_db_url",
    "upgrade",
]
