"""Replays: a search and its race run on recorded results, in this process, through the real
launch path (search controller, pruner, recorder, race); only the training is read from a
recording (`nas.trials.replay`) and Tune's part is played in order (`nas.trials.inline`)."""

from __future__ import annotations

from collections import Counter
from functools import partial

import numpy as np
import pytest

from nas.config.experiment import load_experiment
from nas.db import Store
from nas.db.schema import Phase
from nas.search.launch import launch
from nas.search.race import CONFIRM_SEED_BASE
from nas.stats import pack_correct, unpack_correct
from nas.trials.inline import run_inline
from nas.trials.recorded import Recording
from nas.trials.replay import ReplayRun, recorded_seed_map
from tests.helpers import experiment_yaml

EPOCHS, SEEDS, VAL = 3, 12, 40


def _recording(spec, finals: list[float]) -> Recording:
    """Curves rising to `finals[k]` for grid point k, seed noise, per-image bits matching."""
    archs = [spec.space.arch_from_params(point) for point in spec.space.grid()]
    rng = np.random.default_rng(0)
    k = len(archs)
    val = np.zeros((k, SEEDS, EPOCHS))
    bits = np.zeros((k, SEEDS, (VAL + 7) // 8), dtype=np.uint8)
    for i, final in enumerate(finals):
        for j in range(SEEDS):
            right = rng.random(VAL) < final
            val[i, j] = [right.mean() * (e + 1) / EPOCHS for e in range(EPOCHS)]
            bits[i, j] = np.frombuffer(pack_correct(right), dtype=np.uint8)
    seconds = np.cumsum(np.full((k, SEEDS, EPOCHS), 2.0), axis=2)
    return Recording(tuple(a.hash for a in archs), tuple(a.short_name() for a in archs), tuple(range(100, 100 + SEEDS)),
                     2.0 - val, val.copy(), val, val.copy(), seconds, bits, bits.copy(), VAL, VAL,
                     np.ones((k, SEEDS), dtype=bool), {})


def test_a_search_and_its_race_replay_recorded_results_through_the_real_launch(tmp_path):
    spec = load_experiment(experiment_yaml(
        tmp_path / "r.yaml", name="r", recipe={"epochs": EPOCHS},
        search={"sampler": "grid", "pruner": {"kind": "none"}},
        confirm={"top_k": 2, "repeats": 3, "until_separated": True, "max_repeats": 5}))
    recording = _recording(spec, [0.30, 0.50, 0.80, 0.79])
    # strategy seeds: the search's 0, the confirm seeds 10000..; each played by a recorded seed
    seeds = recorded_seed_map([0, *range(CONFIRM_SEED_BASE, CONFIRM_SEED_BASE + 5)], list(recording.seeds[:6]))
    played = Counter()

    def make_run(config):
        played[(config["arch"], config["seed"])] += 1
        return ReplayRun(recording, seeds, config)

    db = tmp_path / "r.db"
    with Store.open(str(db)) as store:
        launched = launch(spec, store=store, db_url=str(db), data_root=str(tmp_path), log=lambda line: None,
                          executor=partial(run_inline, make_run=make_run))
        trials = store.trials(experiment_id=launched.experiment_id)
        search = [t for t in trials if t.phase == Phase.SEARCH]
        confirm = [t for t in trials if t.phase == Phase.CONFIRM]
        bits = store.correct([t.id for t in trials])
    assert max(played.values()) == 1  # no (architecture, seed) played twice
    assert len(search) == 4 and all(str(t.status) == "completed" for t in search)
    # each trial's stored accuracy is the recorded one of the seed that played it
    for trial in trials:
        i = recording.arch_hashes.index(trial.arch_hash)
        j = recording.seeds.index(seeds[trial.seed])
        assert trial.final_val_acc == pytest.approx(recording.val_acc[i, j, -1])
        assert unpack_correct(*bits[trial.id]).mean() == pytest.approx(trial.final_val_acc)
    # the race ran the search's top 2 (0.80 and 0.79) on paired confirm seeds, from 3 to at most 5
    raced = {t.arch_hash for t in confirm}
    assert raced == set(recording.arch_hashes[2:])
    assert {t.seed for t in confirm} <= set(range(CONFIRM_SEED_BASE, CONFIRM_SEED_BASE + 5))
    assert len({t.seed for t in confirm}) >= 3


def test_a_replayed_trial_the_recording_lacks_fails_as_a_trial_does(tmp_path):
    spec = load_experiment(experiment_yaml(tmp_path / "r.yaml", name="r", recipe={"epochs": EPOCHS}))
    recording = _recording(spec, [0.3, 0.5, 0.8, 0.7])
    db = tmp_path / "r.db"
    with Store.open(str(db)) as store:
        launched = launch(spec, store=store, db_url=str(db), data_root=str(tmp_path), log=lambda line: None,
                          executor=partial(run_inline, make_run=lambda c: ReplayRun(recording, {}, c)))
        statuses = {str(t.status) for t in store.trials(experiment_id=launched.experiment_id)}
        errors = {t.error for t in store.trials(experiment_id=launched.experiment_id)}
    assert statuses == {"failed"} and any("has no recorded seed" in (e or "") for e in errors)


def test_one_replay_judges_the_strategy_brute_force_and_search_only_against_unseen_seeds(tmp_path):
    from nas.search.replays import replay_once, share_ci, usable_seeds

    spec = load_experiment(experiment_yaml(
        tmp_path / "r.yaml", name="r", recipe={"epochs": EPOCHS},
        search={"sampler": "grid", "pruner": {"kind": "none"}},
        confirm={"top_k": 2, "repeats": 3, "until_separated": True, "max_repeats": 4}))
    recording = _recording(spec, [0.30, 0.50, 0.90, 0.60])  # one clearly best: every pick finds it
    assert len(usable_seeds(recording)) == SEEDS
    with Store.open(str(tmp_path / "replays.db")) as store:
        outcome = replay_once(recording, spec, store, "replay0", np.random.default_rng(0), brute_seeds=5)
        confirm = store.trials(experiment_id=store.get_experiment("replay0").id, phase=Phase.CONFIRM)
    best = recording.arch_hashes[2]
    assert outcome.winner == outcome.search_winner == outcome.brute_winner == best
    assert outcome.regret == outcome.brute_regret == 0.0 and not outcome.false_worse
    # 4 search trials and the race's confirm runs, every epoch; brute force 4 x 5 seeds x 3 epochs
    assert outcome.epochs == EPOCHS * (4 + len(confirm)) and outcome.brute_epochs == 4 * 5 * EPOCHS
    assert share_ci(19, 20)[1] < 0.95 < share_ci(19, 20)[2]


def test_a_grid_resumed_after_its_driver_died_mid_trial_reruns_that_trial_on_its_own_seed(tmp_path):
    """Issue 26 D10: a crash must not change which seeds an architecture runs."""
    spec = load_experiment(experiment_yaml(tmp_path / "r.yaml", name="r", recipe={"epochs": EPOCHS},
                                           search={"sampler": "grid", "repeats": 3, "pruner": {"kind": "none"}}))
    recording = _recording(spec, [0.3, 0.5, 0.8, 0.7])
    seeds = {s: recording.seeds[s] for s in range(6)}
    state = {"runs": 0}

    class DiesInItsSecondEpoch(ReplayRun):
        def next_result(self):
            if self.epoch == 1:
                raise KeyboardInterrupt  # the driver is killed while this trial runs
            return super().next_result()

    def dies_once(config):
        state["runs"] += 1
        return (DiesInItsSecondEpoch if state["runs"] == 6 else ReplayRun)(recording, seeds, config)

    db = tmp_path / "r.db"
    with Store.open(str(db)) as store:
        with pytest.raises(KeyboardInterrupt):
            launch(spec, store=store, db_url=str(db), data_root=str(tmp_path), log=lambda line: None,
                   executor=partial(run_inline, make_run=dies_once))
        killed = [t for t in store.trials() if str(t.status) == "running"]
        assert len(killed) == 1
        launch(spec, store=store, db_url=str(db), data_root=str(tmp_path), log=lambda line: None,
               executor=partial(run_inline, make_run=partial(ReplayRun, recording, seeds)))
        ran: dict[str, set[int]] = {}
        for trial in store.trials():
            if str(trial.status) == "completed":
                ran.setdefault(trial.arch_hash, set()).add(trial.seed)
    assert ran == {h: {0, 1, 2} for h in recording.arch_hashes}  # the killed one again on its own seed


def test_launch_and_train_both_take_a_sqlite_url_under_the_home_folder(tmp_path, monkeypatch):
    """Issue 26 D8: `--db sqlite:///~/x.db` — nas's engine expanded the ~, Optuna's storage did
    not, so `nas launch` failed where `nas train` worked. Both now get the one resolved URL."""
    from typer.testing import CliRunner

    from nas.cli import app
    from nas.db import resolve_db_url
    from tests.cifar_fixture import write_cifar

    monkeypatch.setenv("HOME", str(tmp_path))
    url = resolve_db_url("sqlite:///~/runs/nas.db")
    assert url == f"sqlite:///{tmp_path / 'runs' / 'nas.db'}"
    spec = load_experiment(experiment_yaml(tmp_path / "r.yaml", name="r", recipe={"epochs": EPOCHS}))
    recording = _recording(spec, [0.3, 0.5, 0.8, 0.7])
    with Store.open(url) as store:
        launch(spec, store=store, db_url="sqlite:///~/runs/nas.db", data_root=str(tmp_path), log=lambda line: None,
               executor=partial(run_inline, make_run=partial(ReplayRun, recording, {0: 100})))
    data = write_cifar(tmp_path / "data", n_train_per_class=20, n_test_per_class=5)
    result = CliRunner().invoke(app, ["train", "--arch", "R:L1", "--width", "0.125", "--epochs", "1", "--batch-size",
                                      "32", "--val-size", "50", "--db", "sqlite:///~/runs/nas.db",
                                      "--data-root", str(data)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "~").exists()  # nothing went to a folder literally named ~
    with Store.open(url, read_only=True) as store:
        phases = sorted({str(t.phase) for t in store.trials()})
    assert phases == ["search", "train"]  # one file: the launch's search and the trained trial


def test_a_batch_keeps_no_finished_trials_plan(tmp_path):
    """Issue 26 D9: every trial's plan (its recorder and last result) stayed in the batch."""
    from nas.search.launch import launch as real_launch

    spec = load_experiment(experiment_yaml(tmp_path / "r.yaml", name="r", recipe={"epochs": EPOCHS},
                                           search={"sampler": "grid", "repeats": 2, "pruner": {"kind": "none"}}))
    recording = _recording(spec, [0.3, 0.5, 0.8, 0.7])
    batches = []

    def keeping(batch, trials):
        batches.append(batch)
        run_inline(batch, trials, make_run=partial(ReplayRun, recording, {0: 100, 1: 101}))

    db = tmp_path / "r.db"
    with Store.open(str(db)) as store:
        real_launch(spec, store=store, db_url=str(db), data_root=str(tmp_path), log=lambda line: None,
                    executor=keeping)
        assert len(store.trials()) == 8
    assert batches and all(batch.plans == {} for batch in batches)
