"""`nas export-mlflow`: an experiment as one MLflow parent run with a nested child run per trial,
read back with MLflow's own client from a tracking store in tmp (SQLite; MLflow 3 refuses new
file stores), checked against the store: nesting, params, curves with their steps, finals,
tags, the winner's config.yaml, and that re-running duplicates nothing."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from nas.cli import app
from nas.db import Store, Trial
from tests.results_store import A, B, CONFIRM_SEEDS, EXPERIMENT, SEARCH, known_store

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

runner = CliRunner()
RECIPE = {"recipe": {"epochs": 2, "lr": 0.4, "batch_size": 512}, "dataset": {"val_size": 1000}}


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One MLflow tracking store for the module (creating one costs seconds); each test
    writes into its own MLflow experiment."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts"


@pytest.fixture
def known(tmp_path):
    """tests/results_store.py's experiment, with the recipe the recorder writes and weights
    kept for the winner's first confirm seed (as the confirm phase keeps them)."""
    import torch

    store_info = known_store(tmp_path / "nas.db")
    with Store.open(store_info.url) as store:
        with store.engine.begin() as connection:
            connection.execute(update(Trial).values(recipe_json=json.dumps(RECIPE)))
        buffer = io.BytesIO()
        torch.save({"linear.weight": torch.zeros(2, 2)}, buffer)
        store.save_weights(store_info.trial_ids["confirm", A.hash, CONFIRM_SEEDS[0]], buffer.getvalue())
    return store_info


def export(known, tracking, name: str):
    uri, artifacts = tracking
    result = runner.invoke(app, ["export-mlflow", EXPERIMENT, "--tracking-uri", uri, "--db", known.url,
                                 "--mlflow-experiment", name, "--artifact-location", str(artifacts / name)])
    assert result.exit_code == 0, result.output
    return result


def runs_of(tracking, name: str):
    client = MlflowClient(tracking_uri=tracking[0])
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {int(r.data.tags["nas.trial_id"]): r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return client, parents, children


def test_one_parent_run_with_a_nested_child_per_trial(known, tracking):
    export(known, tracking, "nesting")
    _, parents, children = runs_of(tracking, "nesting")
    [parent] = parents
    assert parent.info.run_name == EXPERIMENT and parent.info.status == "FINISHED"
    assert parent.data.tags["nas.status"] == "finished" and parent.data.tags["nas.code_version"] == "0.1.0+test"
    assert parent.data.params["search.repeats"] == "1"
    assert json.loads(parent.data.params["search.objectives"])[0] == {"metric": "val_acc", "direction": "maximize"}
    assert set(children) == set(known.trial_ids.values())
    assert {c.data.tags["mlflow.parentRunId"] for c in children.values()} == {parent.info.run_id}


def test_each_child_run_holds_its_trials_params_curves_finals_and_tags(known, tracking):
    export(known, tracking, "values")
    client, _, children = runs_of(tracking, "values")
    with Store.open(known.url, read_only=True) as store:
        for trial_id, run in children.items():
            trial = store.get_trial(trial_id)
            for name in ("val_acc", "test_acc", "train_loss", "train_acc", "epoch_seconds"):
                history = sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
                assert [(m.step, m.value) for m in history] == [
                    (e.epoch, pytest.approx(getattr(e, name))) for e in store.epochs(trial_id)]
            metrics = run.data.metrics
            for name in ("final_val_acc", "final_test_acc", "final_train_loss", "best_val_acc", "train_seconds"):
                assert metrics[name] == pytest.approx(getattr(trial, name))
            tags = run.data.tags
            assert (tags["nas.phase"], tags["nas.status"], tags["nas.seed"], tags["nas.arch_hash"]) == (
                trial.phase, trial.status, str(trial.seed), trial.arch_hash)
            assert tags["nas.code_version"] == "0.1.0+test"
            assert run.data.params["recipe.lr"] == "0.4" and run.data.params["dataset.val_size"] == "1000"
    search_a = children[known.trial_ids["search", A.hash, 0]]
    assert [m.value for m in sorted(client.get_metric_history(search_a.info.run_id, "val_acc"),
                                    key=lambda m: m.step)] == pytest.approx([e[2] for e in SEARCH[A.hash]])
    assert search_a.data.params["arch.L1.residual"] == "1" and search_a.data.params["arch.width"] == "0.25"
    assert search_a.data.params["arch.L3.residual"] == "0"  # every dimension, defaults included
    pruned = children[known.trial_ids["search", B.hash, 0]]
    assert pruned.info.status == "KILLED" and pruned.data.tags["nas.status"] == "pruned"
    assert "nas.why_pruned" in pruned.data.tags
    confirm_b = children[known.trial_ids["confirm", B.hash, CONFIRM_SEEDS[0]]]
    assert confirm_b.data.tags["nas.decision"] == "worse"  # the race's decision for its architecture
    assert confirm_b.data.tags["nas.decision_text"].startswith("worse (p=")
    assert children[known.trial_ids["confirm", A.hash, CONFIRM_SEEDS[1]]].data.tags["nas.decision"] == "best"


def test_the_winners_config_yaml_is_an_artifact_of_the_parent_run(known, tracking):
    result = export(known, tracking, "artifact")
    assert f"config.yaml of the winner {A.short_name()} ({A.hash}) attached" in " ".join(result.stdout.split())
    client, [parent], _ = runs_of(tracking, "artifact")
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["config.yaml"]
    path = client.download_artifacts(parent.info.run_id, "config.yaml")
    assert f"hash: {A.hash}" in open(path).read()


def test_a_second_export_creates_no_duplicates(known, tracking):
    export(known, tracking, "twice")
    _, parents, children = runs_of(tracking, "twice")
    result = export(known, tracking, "twice")
    assert "0 child runs created, 0 brought up to date, 8 unchanged" in result.stdout
    _, parents_again, children_again = runs_of(tracking, "twice")
    assert [p.info.run_id for p in parents_again] == [p.info.run_id for p in parents]
    assert {k: r.info.run_id for k, r in children_again.items()} == {k: r.info.run_id for k, r in children.items()}


def test_a_trial_running_at_the_last_export_gets_its_missing_epochs_and_finals(known, tracking):
    with Store.open(known.url) as store:
        exp = store.get_experiment(EXPERIMENT).id
        trial = store.start_trial(exp, A.hash, 7, "confirm", epochs_planned=2, recipe_json="{}", device="cpu",
                                  code_version="0.1.0+test")
        store.record_epoch(trial, 0, train_loss=1.0, train_acc=0.5, val_acc=0.6, test_acc=0.59, epoch_seconds=2.0,
                           cumulative_seconds=2.0)
    export(known, tracking, "later")
    client, _, children = runs_of(tracking, "later")
    assert children[trial].info.status == "RUNNING" and "final_val_acc" not in children[trial].data.metrics
    with Store.open(known.url) as store:
        store.record_epoch(trial, 1, train_loss=0.8, train_acc=0.7, val_acc=0.7, test_acc=0.69, epoch_seconds=2.0,
                           cumulative_seconds=4.0)
        store.finish_trial(trial, "completed")
    result = export(known, tracking, "later")
    assert "0 child runs created, 1 brought up to date, 8 unchanged" in result.stdout
    client, _, again = runs_of(tracking, "later")
    assert again[trial].info.run_id == children[trial].info.run_id
    assert again[trial].info.status == "FINISHED" and again[trial].data.tags["nas.status"] == "completed"
    history = sorted(client.get_metric_history(again[trial].info.run_id, "val_acc"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(0, 0.6), (1, 0.7)]  # epoch 0 once, epoch 1 added
    assert again[trial].data.metrics["final_val_acc"] == pytest.approx(0.7)


def test_an_experiment_without_a_confirmed_winner_gets_a_note_not_an_artifact(tmp_path, tracking):
    from tests.compare_stores import CHEAP, write_experiment

    url = f"sqlite:///{tmp_path / 'cheap.db'}"
    write_experiment(url, "cheap", CHEAP, 0.25)
    result = runner.invoke(app, ["export-mlflow", "cheap", "--tracking-uri", tracking[0], "--db", url,
                                 "--artifact-location", str(tracking[1] / "cheap")])
    assert result.exit_code == 0, result.output
    assert "no config.yaml attached: the experiment has no confirmed architecture" in " ".join(result.stdout.split())


def test_an_unknown_experiment_exits_2(known, tracking):
    result = runner.invoke(app, ["export-mlflow", "nope", "--tracking-uri", tracking[0], "--db", known.url])
    assert result.exit_code == 2
    assert "no experiment named 'nope'" in result.stderr


def test_without_mlflow_installed_it_says_how_to_install_it_and_exits_2(known, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    result = runner.invoke(app, ["export-mlflow", EXPERIMENT, "--tracking-uri", "sqlite:///x.db", "--db", known.url])
    assert result.exit_code == 2
    assert "MLflow is not installed: pip install 'nas[mlflow]'" in result.stderr


def test_nas_and_its_cli_do_not_import_mlflow():
    code = "import sys, nas.cli, nas.api, nas.mlflow_export; print('mlflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# ---- live, during nas launch (YAML tracking: {mlflow: URI}) --------------------------------------


class FakeRun:
    """A trial's epochs without training: residual nets a little better, each seed a little apart."""

    def __init__(self, config):
        self.epoch, self.epochs = 0, config["recipe"]["epochs"]
        self.base = 0.3 + 0.1 * ('"residual":1' in config["arch"]) + 0.01 * (config["seed"] % 5)

    def next_result(self):
        e, self.epoch = self.epoch, self.epoch + 1
        result = {"epoch": e, "train_loss": 1.0 / (e + 1), "train_acc": self.base, "val_acc": self.base + 0.05 * e,
                  "test_acc": self.base + 0.04 * e, "epoch_seconds": 1.0, "cumulative_seconds": e + 1.0,
                  "val_images": 100, "test_images": 100, "diverged": False, "device": "fake", "started_at": None}
        return {**result, "done": True} if e == self.epochs - 1 else result


def launch_with_tracking(tmp_path, uri):
    import yaml
    from functools import partial

    from nas.config.experiment import load_experiment
    from nas.search.launch import launch
    from nas.trials.inline import run_inline
    from tests.helpers import experiment_yaml

    path = experiment_yaml(tmp_path / "live.yaml", name="live")
    spec_data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**spec_data, "tracking": {"mlflow": uri}}))
    spec = load_experiment(path)
    lines = []
    db = tmp_path / "live.db"
    with Store.open(str(db)) as store:
        launched = launch(spec, store=store, db_url=str(db), data_root=str(tmp_path), log=lines.append,
                          executor=partial(run_inline, make_run=FakeRun))
        trials = store.trials(experiment_id=launched.experiment_id)
    return spec, trials, lines


def test_launch_with_tracking_exports_the_experiment_as_it_runs_and_at_its_end(tmp_path, tracking):
    spec, trials, lines = launch_with_tracking(tmp_path, tracking[0])
    assert spec.tracking.mlflow == tracking[0]
    _, [parent], children = runs_of(tracking, "live")
    assert parent.info.status == "FINISHED" and parent.data.tags["nas.status"] == "finished"
    assert set(children) == {t.id for t in trials} and len(trials) == 4
    assert all(c.info.status == "FINISHED" and c.data.metrics["final_val_acc"] == pytest.approx(t.final_val_acc)
               for t in trials for c in [children[t.id]])
    assert not [line for line in lines if line.startswith("mlflow:")]


def test_a_tracking_server_that_fails_is_logged_once_and_never_breaks_the_search(tmp_path):
    spec, trials, lines = launch_with_tracking(tmp_path, "bogus-scheme://nowhere")
    assert len(trials) == 4 and all(str(t.status) == "completed" for t in trials)
    failures = [line for line in lines if line.startswith("mlflow: export to bogus-scheme://nowhere failed")]
    assert len(failures) == 1, lines  # the same failure is not repeated after every trial


def test_the_tracking_section_is_validated_and_stored_without_its_password(tmp_path):
    import yaml

    from nas.config.experiment import load_experiment
    from nas.errors import ConfigError
    from tests.helpers import experiment_yaml

    path = experiment_yaml(tmp_path / "t.yaml")
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, "tracking": {"mlflow": "https://user:secret@mlflow.example.org"}}))
    assert load_experiment(path).resolved()["tracking"] == {"mlflow": "https://user:***@mlflow.example.org"}
    path.write_text(yaml.safe_dump({**data, "tracking": {"mlfow": "sqlite:///m.db"}}))
    with pytest.raises(ConfigError, match="tracking.mlfow: unknown key; allowed keys are mlflow"):
        load_experiment(path)
    path.write_text(yaml.safe_dump(data))
    assert "tracking" not in load_experiment(path).resolved()  # off: stored configs stay as they were
