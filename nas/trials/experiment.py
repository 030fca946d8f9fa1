"""The experiment a trial belongs to, in the store: opened (and resumed) by `nas launch`,
found by name by the other commands, its spec rebuilt for `nas ablate`."""

from __future__ import annotations

import json

from nas.config.experiment import ExperimentSpec
from nas.db import Experiment, Store
from nas.db.schema import TrialStatus
from nas.errors import ConfigError
from nas.provenance import code_version

DEFINING_SECTIONS = ("dataset", "recipe", "space", "search")  # must match to resume an experiment


def open_experiment(store: Store, spec: ExperimentSpec) -> int:
    """The id of `spec`'s experiment: created, or an existing one resumed.

    Raises:
        ConfigError: an experiment of that name exists with other defining sections (what
            its results mean); resources and confirm may change on resume.
    """
    resolved = spec.resolved()
    existing = store.get_experiment(spec.name)
    if existing is not None and existing.config_json:
        stored = json.loads(existing.config_json)
        changed = [k for k in DEFINING_SECTIONS if stored.get(k) != json.loads(json.dumps(resolved[k]))]
        if changed:
            raise ConfigError(
                f"{spec.path}: experiment {spec.name!r} already exists in the store with a different "
                f"{', '.join(changed)} section. Run the original YAML (and --budget) to resume it, or set "
                "another `name:` to start a new experiment."
            )
    return store.ensure_experiment(spec.name, config_json=json.dumps(resolved, sort_keys=True),
                                   space_yaml=spec.source_text, code_version=code_version())


def mark_interrupted(store: Store, experiment_id: int) -> int:
    """Trials still `running` after a driver died: marked `interrupted` (they run again).

    Only the experiment's own driver may call this (`nas launch`, resuming): another
    command's trials of the same experiment may still be running.
    """
    stale = store.trials(experiment_id=experiment_id, status=TrialStatus.RUNNING)
    for trial in stale:
        store.finish_trial(trial.id, TrialStatus.INTERRUPTED, error="the driver stopped while this trial ran; re-run")
    return len(stale)


def require_experiment(store: Store, name: str) -> Experiment:
    """The experiment called `name`; a ConfigError listing the ones there are otherwise."""
    found = store.get_experiment(name)
    if found is None:
        names = ", ".join(e.name for e in store.experiments()) or "none yet"
        raise ConfigError(f"no experiment named {name!r} in the store; experiments: {names}.")
    return found


def stored_spec(store: Store, name: str) -> ExperimentSpec:
    """The spec a launched experiment ran with, rebuilt from its stored resolved config.

    Raises:
        ConfigError: no such experiment, or it was not made by `nas launch`.
    """
    experiment = require_experiment(store, name)
    if not experiment.config_json:
        raise ConfigError(
            f"experiment {name!r} has no stored search space (it was made by `nas train`, not "
            "`nas launch`); name an experiment that `nas launch` ran."
        )
    return ExperimentSpec.from_resolved(json.loads(experiment.config_json), source=f"experiment {name!r} (stored)",
                                        source_text=experiment.space_yaml or "")
