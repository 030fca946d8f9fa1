"""An experiment as MLflow runs: one parent run, a nested child run per trial (`nas export-mlflow`).

    MLflow experiment (default: the nas experiment's name)
      parent run   name: the experiment; params: its search section; tags: nas.experiment,
                   nas.experiment_key, nas.status, nas.code_version, nas.store; artifact:
                   the winner's config.yaml (`nas export`), when the race kept its weights
        child run  one per trial (tag mlflow.parentRunId): params arch.* (every dimension of
                   the architecture) and recipe.* / dataset.* (what it trained with); metrics:
                   the per-epoch curves at step = epoch, the finals, params and FLOPs; tags:
                   nas.trial_id, phase, status, the race's decision for its architecture, seed,
                   arch hash, short name, code version, device, why it was pruned or failed

Idempotent. The parent is found by ``nas.experiment_key`` (the experiment's name and creation
time: the same experiment whichever URL spells its store, and a new parent for a new
experiment of the same name), its children by ``nas.trial_id``. A re-run creates the runs of
new trials, completes those that were still running at the last export (the epochs after
``nas.epochs_exported``, the finals, the status), refreshes tags that can change (status,
decision), and leaves the rest alone; params are logged once (MLflow's are immutable).
Writes go through MLflow's public client (`MlflowClient`, `log_batch`); `mlflow` is imported
only here, so nas works without it.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from nas.db import Experiment, Store, Trial
from nas.db.schema import Phase, TrialStatus
from nas.errors import ConfigError, masked_url

KEY_TAG = "nas.experiment_key"
TRIAL_TAG = "nas.trial_id"
EPOCHS_TAG = "nas.epochs_exported"  # epochs logged so far: a re-run logs the ones after
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests by
CURVES = ("val_acc", "test_acc", "train_loss", "train_acc", "epoch_seconds", "cumulative_seconds")
FINALS = ("final_val_acc", "final_test_acc", "final_train_loss", "final_train_acc", "best_val_acc", "train_seconds")
# a trial's status as an MLflow run status (pruned: stopped on purpose; nas.status says which)
RUN_STATUS = {TrialStatus.COMPLETED: "FINISHED", TrialStatus.PRUNED: "KILLED", TrialStatus.FAILED: "FAILED",
              TrialStatus.DIVERGED: "FAILED", TrialStatus.INTERRUPTED: "KILLED"}
EXPERIMENT_STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
MAX_PARAMS, MAX_METRICS, MAX_TAGS = 100, 1000, 100  # MLflow's limits per log_batch
MAX_VALUE = 6000  # characters of a param or tag value MLflow keeps


@dataclass(frozen=True)
class ExportReport:
    """What one export did."""

    mlflow_experiment_id: str
    parent_run_id: str
    created: int  # child runs created
    completed: int  # child runs brought up to date (a trial that was running at the last export)
    unchanged: int
    artifact: str  # "config.yaml of R:L1 (a1b2c3d4e5f6)", or why none was attached


def require_mlflow():
    """`mlflow.MlflowClient`; a ConfigError saying how to install MLflow when it is missing."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ConfigError("MLflow is not installed: pip install 'nas[mlflow]' (or pip install mlflow), "
                          "then run nas export-mlflow again.") from None
    return MlflowClient


def experiment_key(experiment: Experiment) -> str:
    """The experiment's identity in MLflow: its name and creation time (UTC, microseconds)."""
    return f"{experiment.name}@{experiment.created_at.isoformat(timespec='microseconds')}"


def export_experiment(store: Store, name: str, tracking_uri: str, *, mlflow_experiment: str | None = None,
                      artifact_location: str | None = None) -> ExportReport:
    """Write experiment `name` of `store` to the MLflow tracking server or store at `tracking_uri`.

    Raises:
        ConfigError: no such experiment, MLflow missing, or the tracking URI unusable.
    """
    from mlflow.exceptions import MlflowException

    from nas.trials.experiment import require_experiment

    client_class = require_mlflow()
    experiment = require_experiment(store, name)
    try:
        client = client_class(tracking_uri=tracking_uri)
        return _export(client, store, experiment, mlflow_experiment or name, artifact_location)
    except MlflowException as err:
        raise ConfigError(f"MLflow at {masked_url(tracking_uri)} refused the export: {err.message} "
                          "Check --tracking-uri (a server URL, or sqlite:///mlflow.db).") from None


def _export(client, store: Store, experiment: Experiment, mlflow_name: str, artifact_location: str | None):
    found = client.get_experiment_by_name(mlflow_name)
    experiment_id = found.experiment_id if found else client.create_experiment(
        mlflow_name, artifact_location=artifact_location)
    key = experiment_key(experiment)
    parent = _find_parent(client, experiment_id, key)
    if parent is None:
        parent = client.create_run(experiment_id, run_name=experiment.name, start_time=_ms(experiment.created_at),
                                   tags={KEY_TAG: key, "nas.experiment": experiment.name, "nas.kind": "experiment"})
        config = json.loads(experiment.config_json) if experiment.config_json else {}
        _log(client, parent.info.run_id, params=_flat(config.get("search") or {}, "search"))
    parent_id = parent.info.run_id
    trials = store.trials(experiment_id=experiment.id)
    _log(client, parent_id, tags={
        "nas.status": experiment.status, "nas.code_version": experiment.code_version or "",
        "nas.store": masked_url(store.url), "nas.trials": str(len(trials)),
        "mlflow.note.content": f"nas experiment {experiment.name}: {len(trials)} trials, one child run each. "
                               f"nas status {experiment.name} shows its results.",
    })
    children = {run.data.tags[TRIAL_TAG]: run for run in _runs(client, experiment_id, f"tags.`{PARENT_TAG}` = "
                                                                                        f"'{parent_id}'")}
    context = _Context(store, experiment, key, parent_id)
    created = completed = unchanged = 0
    for trial in trials:
        run = children.get(str(trial.id))
        if run is None:
            _create_child(client, experiment_id, context, trial)
            created += 1
        elif _catch_up(client, context, trial, run):
            completed += 1
        else:
            unchanged += 1
    artifact = _attach_winner(client, store, experiment, parent_id)
    if experiment.status in EXPERIMENT_STATUS:
        client.set_terminated(parent_id, EXPERIMENT_STATUS[experiment.status],
                              end_time=_ms(experiment.finished_at) if experiment.finished_at else None)
    return ExportReport(experiment_id, parent_id, created, completed, unchanged, artifact)


class _Context:
    """What every child run needs, read once: epochs, architectures, decisions, pruning reasons."""

    def __init__(self, store: Store, experiment: Experiment, key: str, parent_id: str) -> None:
        from nas.frames import epochs_frame
        from nas.results import pruned_trials

        self.key, self.parent_id, self.experiment = key, parent_id, experiment.name
        self.epochs: dict[int, list[dict]] = defaultdict(list)
        for row in epochs_frame(store, experiment).to_dict("records"):
            self.epochs[row["trial_id"]].append(row)
        self.archs = {a.hash: a for a in store.architectures()}
        self.decisions = _decisions(store, experiment.name)
        self.why_pruned = {p.trial_id: p.reason.text() for p in pruned_trials(store, experiment.id)
                           if p.reason is not None}


def _decisions(store: Store, name: str) -> dict[str, tuple[str, str]]:
    """Each decided architecture's (group, text): the confirm race's, else the search's (repeats)."""
    from nas.results import arch_results

    out: dict[str, tuple[str, str]] = {}
    for phase in (Phase.SEARCH, Phase.CONFIRM):  # confirm last: it wins
        out.update({r.arch_hash: (r.group, r.decision) for r in arch_results(store, name, phase) if r.group})
    return out


def _create_child(client, experiment_id: str, context: _Context, trial: Trial) -> None:
    arch = context.archs[trial.arch_hash]
    run = client.create_run(experiment_id, start_time=_ms(trial.started_at),
                            run_name=f"{arch.short_name} seed {trial.seed} ({trial.phase})",
                            tags={PARENT_TAG: context.parent_id, TRIAL_TAG: str(trial.id), KEY_TAG: context.key})
    recipe = json.loads(trial.recipe_json) if trial.recipe_json else {}
    params = {**_flat(_arch_dimensions(arch.config_json), "arch"), **_flat(recipe, "")}
    _log(client, run.info.run_id, params=params)
    _catch_up(client, context, trial, run, new=True)


def _catch_up(client, context: _Context, trial: Trial, run, *, new: bool = False) -> bool:
    """Log what `run` lacks of `trial`: epochs after the ones exported, and once it has
    ended its finals and end state; refresh the tags that change. Whether anything was
    missing (a run that is up to date is left alone)."""
    tags = run.data.tags
    exported = int(tags.get(EPOCHS_TAG, 0))
    epochs = context.epochs.get(trial.id, [])
    ended = trial.status != TrialStatus.RUNNING
    behind = new or exported < len(epochs) or tags.get("nas.status") != trial.status
    wanted = _child_tags(context, trial, len(epochs))
    changed = {k: v for k, v in wanted.items() if tags.get(k) != v}
    if not behind:
        if changed:  # a decision that moved with later race rounds
            _log(client, run.info.run_id, tags=changed)
        return False
    start = _ms(trial.started_at)
    metrics = [(name, row[name], start + int(1000 * row["cumulative_seconds"]), int(row["epoch"]))
               for row in epochs[exported:] for name in CURVES if _finite(row[name])]
    if ended:
        arch = context.archs[trial.arch_hash]
        last = max(trial.epochs_done - 1, 0)
        at = _ms(trial.finished_at) if trial.finished_at else start
        finals = {name: getattr(trial, name) for name in FINALS}
        finals |= {"params": arch.params, "flops": arch.flops}
        metrics += [(name, value, at, last) for name, value in finals.items() if _finite(value)]
    _log(client, run.info.run_id, metrics=metrics, tags=changed)
    if ended:
        client.set_terminated(run.info.run_id, RUN_STATUS.get(trial.status, "FINISHED"),
                              end_time=_ms(trial.finished_at) if trial.finished_at else None)
    return True


def _arch_dimensions(config_json: str) -> dict[str, Any]:
    """Every dimension of an architecture, defaults included (the stored JSON omits them); the
    stored keys alone for a config this version cannot read."""
    from nas.models.arch import ArchConfig

    try:
        return ArchConfig.from_json(config_json).to_flat()
    except Exception:  # noqa: BLE001 - an older or newer config: what it stored is still worth logging
        return json.loads(config_json)


def _child_tags(context: _Context, trial: Trial, epochs: int) -> dict[str, str]:
    arch = context.archs[trial.arch_hash]
    group, decision = context.decisions.get(trial.arch_hash, ("", ""))
    tags = {
        "nas.experiment": context.experiment, "nas.phase": str(trial.phase), "nas.status": str(trial.status),
        "nas.seed": str(trial.seed), "nas.arch_hash": trial.arch_hash, "nas.short_name": arch.short_name,
        "nas.code_version": trial.code_version or "", "nas.device": trial.device or "",
        "nas.decision": group, "nas.decision_text": decision, EPOCHS_TAG: str(epochs),
    }
    if trial.error:
        tags["nas.error"] = trial.error
    if trial.id in context.why_pruned:
        tags["nas.why_pruned"] = context.why_pruned[trial.id]
    return tags


def _attach_winner(client, store: Store, experiment: Experiment, parent_id: str) -> str:
    """The confirm race's best as config.yaml (what `nas export --rank 1` writes) on the
    parent run, when its weights were kept (the confirm phase keeps its first seed's); else why not."""
    from nas.export.write import render_config, select
    from nas.results import arch_results

    confirmed = arch_results(store, experiment.name, Phase.CONFIRM)
    if not confirmed:
        return "no config.yaml attached: the experiment has no confirmed architecture (no confirm phase yet)."
    winner = confirmed[0]
    kept = {store.get_trial(i).arch_hash for i in store.trials_with_weights(experiment.id)}
    if winner.arch_hash not in kept:
        return (f"no config.yaml attached: no weights were kept for the winner {winner.short_name} "
                f"({winner.arch_hash}); nas export --arch {winner.arch_hash} --format py,yaml still writes it.")
    try:
        source = select(store, experiment.name, rank=1, need_weights=True)
    except ConfigError as err:
        return f"no config.yaml attached: {err}"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(render_config(source), encoding="utf-8")
        client.log_artifact(parent_id, str(path))  # the same path on a re-run: replaced, not doubled
    return f"config.yaml of the winner {source.arch.short_name()} ({source.arch.hash}) attached to the parent run."


# ---- live, during nas launch ----------------------------------------------------------------


class LiveExport:
    """`export_experiment` in a thread of the driver while `nas launch` runs (YAML
    ``tracking: {mlflow: URI}``): each finished trial only wakes the thread (`poke`, which
    never blocks); it exports at most every `every_s` seconds, from its own read-only store,
    and once more when closed. A failure (server down, bad URI) is logged, once per message,
    and never reaches the search: the next export, being idempotent, catches up.
    """

    def __init__(self, db_url: str, name: str, tracking_uri: str, log, *, every_s: float = 30.0) -> None:
        import threading

        require_mlflow()
        self.db_url, self.name, self.tracking_uri, self.log, self.every_s = db_url, name, tracking_uri, log, every_s
        self.exports = 0  # done without an error
        self._wake, self._closing = threading.Event(), threading.Event()
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="nas-mlflow-export", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A trial finished: export soon (at most every `every_s` seconds)."""
        self._wake.set()

    def close(self, timeout_s: float = 60.0) -> None:
        """Export once more (the experiment's end state) and stop the thread."""
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        import time

        last = -math.inf
        while True:
            self._wake.wait()
            if not self._closing.is_set():  # wait out the interval, unless closed meanwhile
                self._closing.wait(max(0.0, last + self.every_s - time.monotonic()))
            # cleared, then read, before the export: a close at any point from here on either
            # makes this the final export or wakes the loop for one that starts after it
            self._wake.clear()
            final = self._closing.is_set()
            last = time.monotonic()
            self._export_once()
            if final:
                return

    def _export_once(self) -> None:
        try:
            with Store.open(self.db_url, read_only=True) as store:
                export_experiment(store, self.name, self.tracking_uri)
            self.exports += 1
            self._last_error = None
        except Exception as err:  # noqa: BLE001 - the search goes on; the next export catches up
            message = f"{type(err).__name__}: {err}"
            if message != self._last_error:
                self.log(f"mlflow: export to {masked_url(self.tracking_uri)} failed, the search goes on: "
                         f"{masked_url(self.tracking_uri, message)}")
            self._last_error = message


# ---- MLflow plumbing ------------------------------------------------------------------------


def _find_parent(client, experiment_id: str, key: str):
    runs = _runs(client, experiment_id, f"tags.`{KEY_TAG}` = '{_quoted(key)}' and tags.`nas.kind` = 'experiment'")
    return min(runs, key=lambda r: r.info.start_time or 0) if runs else None


def _runs(client, experiment_id: str, filter_string: str) -> list:
    """Every run of the experiment that matches, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=5000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _log(client, run_id: str, *, params: dict[str, Any] | None = None, metrics: list[tuple] = (),
         tags: dict[str, str] | None = None) -> None:
    """`log_batch` within MLflow's per-call limits (params and tags in hundreds, metrics in thousands)."""
    from mlflow.entities import Metric, Param, RunTag

    params = [Param(k, _value(v)) for k, v in (params or {}).items()]
    tags = [RunTag(k, _value(v)) for k, v in (tags or {}).items()]
    metrics = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in metrics]
    while params or tags or metrics:
        client.log_batch(run_id, params=params[:MAX_PARAMS], tags=tags[:MAX_TAGS], metrics=metrics[:MAX_METRICS])
        params, tags, metrics = params[MAX_PARAMS:], tags[MAX_TAGS:], metrics[MAX_METRICS:]


def _flat(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Nested dicts as dotted keys (lists as JSON): MLflow params are flat strings."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flat(value, name))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return out


def _value(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _quoted(text: str) -> str:
    return text.replace("'", "\\'")


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
