"""The private Optuna and Ray names nas depends on, each checked where the installed versions
provide it: a release that moves one fails here, with the place that uses it named, and not
mid-search. pyproject.toml bounds both to the releases tested (`optuna<5.2`, `ray<2.61`).

Why each is private and not public: the driver's flat cost per trial needs the studies'
storage read without copies (`_storage`, `_study_id`, `_trial_id`) and the RDB storage's
models to write many trials in one statement; the indexed pruner decides exactly as
Optuna's percentile pruner, so it takes its options and its two helpers; the bounded TPE
history ranks as Optuna's multi-objective TPE does; and `--address` probes a Ray cluster
before `ray.init` (which would retry an address for minutes)."""

from __future__ import annotations

import importlib
import inspect
import math

import optuna
import pytest

# (module, name, where nas uses it)
PRIVATE_NAMES = [
    ("optuna.pruners._percentile", "_get_best_intermediate_result_over_steps", "nas/search/curves.py"),
    ("optuna.pruners._percentile", "_is_first_in_interval_step", "nas/search/curves.py"),
    ("optuna.study._multi_objective", "_fast_non_domination_rank", "nas/search/history.py"),
    ("optuna.storages._rdb.models", "TrialModel", "nas/search/studies.py"),
    ("optuna.storages._rdb.models", "TrialValueModel", "nas/search/studies.py"),
    ("optuna.storages._rdb.models", "TrialParamModel", "nas/search/studies.py"),
    ("optuna.storages._rdb.models", "TrialUserAttributeModel", "nas/search/studies.py"),
    ("optuna.storages._rdb.models", "TrialSystemAttributeModel", "nas/search/studies.py"),
    ("optuna.storages._rdb.models", "TrialIntermediateValueModel", "nas/search/studies.py"),
    ("ray._private.services", "canonicalize_bootstrap_address", "nas/cli/ray_session.py"),
    ("ray._private.ray_constants", "ENABLE_RAY_CLUSTER", "nas/cli/ray_session.py"),
    ("ray._raylet", "Config", "nas/cli/ray_session.py"),
    ("ray._raylet", "InnerGcsClient", "nas/cli/ray_session.py"),
]


@pytest.mark.parametrize(("module", "name", "user"), PRIVATE_NAMES, ids=[f"{m}.{n}" for m, n, _ in PRIVATE_NAMES])
def test_every_private_name_nas_uses_is_there(module, name, user):
    try:
        found = importlib.import_module(module)
    except ImportError as err:
        pytest.fail(f"{module} is gone ({err}); {user} imports {name} from it: update it, or bound the version")
    assert hasattr(found, name), f"{module}.{name} is gone; {user} uses it: update it, or bound the version"


def test_the_percentile_pruners_attributes_the_indexed_pruner_copies():
    """nas/search/curves.py `indexed` rebuilds Optuna's percentile/median pruner from these."""
    pruner = optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=2, interval_steps=2,
                                             n_min_trials=4)
    assert (pruner._percentile, pruner._n_startup_trials, pruner._n_warmup_steps, pruner._interval_steps,
            pruner._n_min_trials) == (25.0, 3, 2, 2, 4)
    patient = optuna.pruners.PatientPruner(pruner, patience=1)
    assert patient._wrapped_pruner is pruner


def test_the_helpers_behave_as_the_indexed_pruner_expects():
    from optuna.pruners._percentile import _get_best_intermediate_result_over_steps, _is_first_in_interval_step
    from optuna.study import StudyDirection

    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    for step, value in ((0, 0.2), (1, 0.5), (2, 0.4)):
        trial.report(value, step)
    frozen = study._storage.get_trial(trial._trial_id)  # the study's storage and a trial's id
    assert frozen.intermediate_values == {0: 0.2, 1: 0.5, 2: 0.4}
    assert _get_best_intermediate_result_over_steps(frozen, StudyDirection.MAXIMIZE) == 0.5
    assert math.isnan(_get_best_intermediate_result_over_steps(
        optuna.trial.create_trial(value=1.0, intermediate_values={0: math.nan}), StudyDirection.MAXIMIZE))
    assert _is_first_in_interval_step(2, {0, 1, 2}, 0, 2) and not _is_first_in_interval_step(1, {0, 1}, 0, 2)
    trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
    assert [t.number for t in trials] == [0]


def test_the_non_domination_rank_nas_uses_ranks_fronts_from_0():
    import numpy as np
    from optuna.study._multi_objective import _fast_non_domination_rank

    params = inspect.signature(_fast_non_domination_rank).parameters
    assert list(params)[0] == "loss_values"
    ranks = _fast_non_domination_rank(np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 2.0]]))
    assert list(ranks) == [0, 1, 1]


def test_the_rdb_models_have_the_columns_nas_writes():
    from optuna.storages._rdb import models

    columns = set(models.TrialModel.__table__.columns.keys())
    assert {"trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete"} <= columns
    assert callable(models.TrialValueModel.value_to_stored_repr)
    assert callable(models.TrialIntermediateValueModel.intermediate_value_to_stored_repr)
