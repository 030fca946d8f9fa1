"""`nas launch` end to end on tiny data with a real 2-CPU Ray and a real SQLite store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import ray
from nas.db import Store
from nas.db.lease import holder
from optuna.trial import TrialState
from typer.testing import CliRunner

from nas.cli import app
from nas.cli.ray_reaper import descendants
from nas.config.experiment import load_experiment
from tests.cifar_fixture import write_cifar
from tests.helpers import (  # INVALID_CASES: (file, budget, key path, rule)
    INVALID_CASES,
    experiment_yaml,
)

runner = CliRunner()
INVALID_DIR = Path(__file__).parent / "invalid_spaces"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_cifar(tmp_path_factory.mktemp("cifar"), n_train_per_class=40, n_test_per_class=10)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def launch(space: Path, db: Path, data_root: Path):
    result = runner.invoke(app, ["launch", str(space), "--db", str(db), "--data-root", str(data_root)])
    assert result.exit_code == 0, result.output
    return result


def store_trials(db: Path, phase: str):
    with Store.open(str(db), read_only=True) as store:
        return store.trials(phase=phase)


def test_a_trial_trains_on_its_workers_main_thread_one_result_per_epoch(tmp_path, data_root, local_ray):
    # The main thread, not a function trainable's side thread: only there can glibc reuse
    # freed activations (nas.malloc); tests/test_malloc.py shows the side thread cannot.
    from ray import tune

    from nas.models import ArchConfig
    from nas.training.recipe import Recipe
    from nas.trials.artifacts import WIRE_KEY
    from nas.trials.tune import TrialTrainable

    class Probe(TrialTrainable):
        def step(self):
            import threading

            return {**super().step(), "main_thread": threading.current_thread() is threading.main_thread()}

    class Collect(tune.Callback):
        def __init__(self):
            self.results = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.results.append(result)

    arch = ArchConfig.from_dict({"width": 0.125, "L1": {"residual": 1}})
    config = {"arch": arch.to_json(), "seed": 0, "phase": "confirm",
              "recipe": Recipe(epochs=2, batch_size=50, eval_batch_size=256).to_dict(),
              "dataset": {"root": str(data_root), "val_size": 100}, "cpus": 1, "gpus": 0, "save_weights": True}
    collect = Collect()
    tune.Tuner(Probe, param_space=config, run_config=tune.RunConfig(
        storage_path=str(tmp_path), callbacks=[collect], verbose=0,
        checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False))).fit()
    results = collect.results
    assert [r["epoch"] for r in results] == [0, 1]
    assert all(r["main_thread"] for r in results)
    assert [bool(r["done"]) for r in results] == [False, True]
    assert WIRE_KEY not in results[0] and "weights" in results[1][WIRE_KEY]  # a finished trial's weights, once


def test_a_grid_search_runs_every_point_exactly_once(tmp_path, data_root, local_ray):
    space = experiment_yaml(tmp_path / "grid.yaml")
    db = tmp_path / "nas.db"
    launch(space, db, data_root)
    trials = store_trials(db, "search")
    expected = {load_experiment(space).space.arch_from_params(p).hash for p in load_experiment(space).space.grid()}
    assert len(expected) == 4
    assert sorted(t.arch_hash for t in trials) == sorted(expected)
    assert all(str(t.status) == "completed" and t.epochs_done == 3 for t in trials)
    # started_at is the worker's start, not the first result's arrival: the span holds the training
    assert all((t.finished_at - t.started_at).total_seconds() >= t.train_seconds for t in trials), [
        ((t.finished_at - t.started_at).total_seconds(), t.train_seconds) for t in trials]


@pytest.mark.parametrize("ahead_s", [0.0, 3600.0], ids=["synced", "worker-clock-ahead"])
def test_a_trial_row_starts_when_its_worker_started_it_never_in_the_future(tmp_path, ahead_s):
    # The driver hears of a trial at its first result; the worker says when it really started.
    from datetime import datetime, timezone

    from nas.db.schema import Phase

    from nas.data.config import DataConfig
    from nas.models import ArchConfig
    from nas.training.recipe import Recipe
    from nas.trials.batch import TrialBatch
    from nas.trials.plan import TrialPlan

    with Store.open(str(tmp_path / "nas.db")) as store:
        batch = TrialBatch(store=store, experiment_id=store.ensure_experiment("t"), name="t",
                           recipe=Recipe(epochs=1), data_cfg=DataConfig(), resources=load_experiment(
                               experiment_yaml(tmp_path / "x.yaml")).resources,
                           next_plan=lambda: None, costs=lambda arch: (1, 1))
        batch.plans["ray-1"] = TrialPlan(arch=ArchConfig(), seed=0, phase=Phase.SEARCH)
        worker_start = time.time() - 100 + ahead_s  # 100 s ago on the driver's clock, plus the skew
        batch.result("ray-1", {"epoch": 0, "train_loss": 1.0, "train_acc": 0.5, "val_acc": 0.5, "test_acc": None,
                               "epoch_seconds": 90.0, "cumulative_seconds": 90.0, "started_at": worker_start})
        batch.complete("ray-1")
        (trial,) = store.trials()
    started = trial.started_at.timestamp()
    if ahead_s:
        assert started <= datetime.now(timezone.utc).timestamp()  # clamped to the driver's now
    else:
        assert abs(started - worker_start) < 1e-3
        assert (trial.finished_at - trial.started_at).total_seconds() >= trial.train_seconds == 90.0


def test_a_data_root_relative_to_the_working_directory_reaches_the_trials(tmp_path, data_root, local_ray, monkeypatch):
    # Tune runs each trial in a directory of its own: the driver must pass the root absolute.
    space = experiment_yaml(tmp_path / "relative.yaml", name="relative", recipe={"epochs": 1})
    db = tmp_path / "nas.db"
    monkeypatch.chdir(data_root.parent)
    launch(space, db, Path(data_root.name))
    trials = store_trials(db, "search")
    assert len(trials) == 4 and all(str(t.status) == "completed" for t in trials), [t.error for t in trials]


def test_a_pruned_search_really_stops_trials_and_optuna_agrees(tmp_path, data_root, local_ray):
    space = experiment_yaml(
        tmp_path / "tpe.yaml",
        name="pruned",
        recipe={"epochs": 5, "batch_size": 50, "lr": 0.2},
        space={"width": {"fixed": 0.125}, "L1.residual": {"choice": [0, 1]}, "L2.extra": {"choice": [0, 1]},
               "L3.residual": {"choice": [0, 1]}, "L1.extra": {"choice": [0, 1]}},
        search={"sampler": "tpe", "n_trials": 10, "seed": 1,
                "pruner": {"kind": "percentile", "percentile": 60.0, "n_startup_trials": 2, "n_warmup_steps": 0,
                          "margin": 0},  # Optuna's own rule: this test is about stopping for real
                "objectives": [{"metric": "val_acc", "direction": "maximize"}]},
        resources={"cpus_per_trial": 2, "max_concurrent": 1},
    )
    db = tmp_path / "nas.db"
    launch(space, db, data_root)
    trials = store_trials(db, "search")
    assert len(trials) == 10
    pruned = [t for t in trials if str(t.status) == "pruned"]
    assert pruned, Counter(str(t.status) for t in trials)
    assert any(t.epochs_done < 5 for t in pruned)

    study = optuna.load_study(study_name="pruned", storage=f"sqlite:///{db}")
    by_key = {(t.user_attrs["arch_hash"], t.user_attrs["seed"]): t.state for t in study.trials}
    for t in trials:
        expected = TrialState.PRUNED if str(t.status) == "pruned" else TrialState.COMPLETE
        assert by_key[(t.arch_hash, t.seed)] == expected
    # pruned trials' epochs are recorded up to where they stopped
    with Store.open(str(db), read_only=True) as store:
        for t in pruned:
            assert len(store.epochs(t.id)) == t.epochs_done


def test_the_confirm_phase_reruns_the_top_architectures_with_fresh_seeds(tmp_path, data_root, local_ray):
    space = experiment_yaml(
        tmp_path / "confirm.yaml", name="confirmed",
        search={"sampler": "grid", "pruner": {"kind": "none"},
                "objectives": [{"metric": "val_acc", "direction": "maximize"},
                               {"metric": "params", "direction": "minimize"}]},
        confirm={"top_k": 2, "repeats": 3},
    )
    db = tmp_path / "nas.db"
    result = launch(space, db, data_root)
    confirm = store_trials(db, "confirm")
    per_arch = Counter(t.arch_hash for t in confirm)
    assert len(per_arch) == 2 and set(per_arch.values()) == {3}
    search_seeds = {t.seed for t in store_trials(db, "search")}
    assert not search_seeds & {t.seed for t in confirm}
    assert "confirm results" in result.output and "±" in result.output

    from nas.results import arch_results

    with Store.open(str(db), read_only=True) as store:
        rows = arch_results(store, "confirmed", "confirm")
    assert len(rows) == 2 and all(r.seeds == 3 and r.accuracy.std == r.accuracy.std for r in rows)  # std not NaN

    # the weights of the first confirm seed of each confirmed architecture are kept, only those:
    # a fixed seed, so the exported accuracy is not the best of several draws
    import io

    import torch

    from nas.models import ArchConfig, build_model

    with Store.open(str(db), read_only=True) as store:
        kept = store.trials_with_weights(store.get_experiment("confirmed").id)
        assert len(kept) == 2
        for trial_id in kept:
            trial = store.get_trial(trial_id)
            seeds = [t for t in confirm if t.arch_hash == trial.arch_hash]
            assert trial.seed == min(t.seed for t in seeds)
            state = torch.load(io.BytesIO(store.load_weights(trial_id)), weights_only=True)
            model = build_model(ArchConfig.from_json(store.get_architecture(trial.arch_hash).config_json))
            model.load_state_dict(state)  # every key and shape matches


def test_the_confirm_race_runs_paired_rounds_through_ray_and_prints_its_decision(tmp_path, data_root, local_ray):
    space = experiment_yaml(
        tmp_path / "race.yaml", name="raced",
        confirm={"top_k": 2, "repeats": 2, "until_separated": True, "max_repeats": 3},
    )
    db = tmp_path / "nas.db"
    result = launch(space, db, data_root)
    seeds = {}
    for t in store_trials(db, "confirm"):
        seeds.setdefault(t.arch_hash, []).append(t.seed)
    assert len(seeds) == 2 and all(sorted(s) == [10_000, 10_001, 10_002][:len(s)] for s in seeds.values())
    assert "confirm round 1: 2 architectures x seeds 10000-10001" in result.output
    assert "confirm decision after" in result.output and "decision" in result.output
    # a second launch finds the race over: nothing runs again
    again = launch(space, db, data_root)
    assert "confirm round" not in again.output and len(store_trials(db, "confirm")) == sum(map(len, seeds.values()))


def test_launching_again_resumes_and_runs_nothing_twice(tmp_path, data_root, local_ray):
    space = experiment_yaml(tmp_path / "again.yaml", name="again")
    db = tmp_path / "nas.db"
    launch(space, db, data_root)
    result = launch(space, db, data_root)
    assert "search:" not in result.output  # nothing left to search
    assert len(store_trials(db, "search")) == 4


def test_a_changed_space_under_the_same_name_is_refused(tmp_path, data_root, local_ray):
    db = tmp_path / "nas.db"
    launch(experiment_yaml(tmp_path / "a.yaml", name="same"), db, data_root)
    changed = experiment_yaml(tmp_path / "b.yaml", name="same", recipe={"epochs": 2, "batch_size": 50})
    result = runner.invoke(app, ["launch", str(changed), "--db", str(db), "--data-root", str(data_root)])
    assert result.exit_code == 2 and "different recipe section" in result.output


@pytest.mark.parametrize(("name", "budget", "key_path", "rule"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_invalid_yaml_exits_2_naming_the_file_and_key_and_leaves_no_database(tmp_path, name, budget, key_path, rule):
    db = tmp_path / "nas.db"
    bad = INVALID_DIR / name
    result = runner.invoke(app, ["launch", str(bad), "--db", str(db), "--budget", budget or "none"])
    assert result.exit_code == 2, result.output
    assert bad.name in result.output and key_path in result.output
    assert not db.exists()


@pytest.mark.slow
def test_a_second_writer_is_refused_and_after_sigkill_the_same_command_takes_over_and_completes_without_duplicates(tmp_path, data_root):
    space = experiment_yaml(
        tmp_path / "kill.yaml", name="killed",
        # epochs enough that a trial's row is seen running: its writes are queued
        # (nas.db.write_behind), and a lagging writer may commit a short trial in one go
        recipe={"epochs": 12, "batch_size": 50},
        space={"width": {"fixed": 0.125}, "L1.residual": {"choice": [0, 1]}, "L2.residual": {"choice": [0, 1]},
               "L3.residual": {"choice": [0, 1]}},
        resources={"cpus_per_trial": 2, "max_concurrent": 1},
    )
    db = tmp_path / "nas.db"
    cmd = [sys.executable, "-m", "nas", "launch", str(space), "--db", str(db), "--data-root", str(data_root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # kill once some trials are done and one is running
            time.sleep(0.2)
            if db.exists():
                try:
                    trials = store_trials(db, "search")
                except Exception:  # noqa: BLE001 - the schema may still be being created
                    continue
                done = [t for t in trials if str(t.status) == "completed"]
                if len(done) >= 2 and any(str(t.status) == "running" for t in trials):
                    break
        else:
            pytest.fail("the search never reached two finished trials")
        # A second writer on the same experiment is refused, naming the one that holds it.
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"is being written by nas launch on {socket.gethostname()} (pid {proc.pid})" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
        # the check took seconds, in which the running trial may have ended: kill during the next
        while time.time() < deadline and not any(str(t.status) == "running" for t in store_trials(db, "search")):
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray, with no clean-up
        proc.wait()
    trials = store_trials(db, "search")
    assert any(str(t.status) == "running" for t in trials), "the search ended before it could be killed"
    assert sum(str(t.status) == "completed" for t in trials) < 8

    # The killed driver's lease is taken over by the same command, with no flag.
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"took over the lease of nas launch on {socket.gethostname()} (pid {proc.pid})" in rerun.stdout
    assert "interrupted trial" in rerun.stdout
    trials = store_trials(db, "search")
    completed = [t for t in trials if str(t.status) == "completed"]
    assert len(completed) == 8  # the grid's 8 points
    assert len({t.arch_hash for t in completed}) == 8  # none twice
    assert not [t for t in trials if str(t.status) == "running"]
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{db}")
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 8
    with Store.open(str(db), read_only=True) as store:
        assert holder(store.engine, "killed") is None  # released at the end


def _trial_workers(pid: int) -> list[int]:
    """The Ray actor processes that run trials (`TrialTrainable` actors)."""
    workers = []
    for child in descendants(pid):
        try:
            title = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::TrialTrainable"):
            workers.append(child)
    return workers


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds Ray's worker processes through /proc (Linux)")
def test_a_crashing_trial_is_retried_max_failures_times_then_recorded_failed_and_the_search_goes_on(tmp_path, data_root):
    space = experiment_yaml(
        tmp_path / "crash.yaml", name="crashing",
        recipe={"epochs": 4, "batch_size": 50},
        resources={"cpus_per_trial": 2, "max_concurrent": 1, "max_failures": 1},
    )
    db = tmp_path / "nas.db"
    cmd = [sys.executable, "-m", "nas", "launch", str(space), "--db", str(db), "--data-root", str(data_root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    killed: list[int] = []
    try:
        deadline = time.time() + 240
        while len(killed) < 2 and time.time() < deadline:  # the first run and its one retry
            time.sleep(0.5)
            fresh = [w for w in _trial_workers(proc.pid) if w not in killed]
            if fresh:
                os.kill(fresh[0], signal.SIGKILL)  # the worker dies mid-trial, as on an OOM kill
                killed.append(fresh[0])
        assert len(killed) == 2, "never saw the trial's worker process (and its retry) to kill"
        output, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output
    trials = store_trials(db, "search")
    statuses = Counter(str(t.status) for t in trials)
    assert statuses == {"failed": 1, "completed": 3}, (statuses, output)  # 4 grid points, one crashed
    failed = next(t for t in trials if str(t.status) == "failed")
    assert failed.error  # why, for `nas status` and the dashboard
    assert "failed" in output
    study = optuna.load_study(study_name="crashing", storage=f"sqlite:///{db}")
    assert Counter(t.state for t in study.trials) == {TrialState.FAIL: 1, TrialState.COMPLETE: 3}
