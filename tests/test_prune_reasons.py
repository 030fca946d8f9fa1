"""The pruning rule's pilot and its reasons, through the real launch path: a search with one
seed per architecture runs its first architectures on a second seed (so the margin knows the
seed noise and prunes), and every pruned trial stores why, which `nas status` prints."""

from __future__ import annotations

from collections import Counter
from functools import partial

from typer.testing import CliRunner

from nas.cli import app
from nas.config.experiment import load_experiment
from nas.db import Store
from nas.db.schema import Phase, TrialStatus
from nas.search.controller import SearchController
from nas.search.launch import launch
from nas.search.pruning import PILOT, PILOT_PAYS_FROM, PruneReason, pilot_size
from nas.trials.experiment import open_experiment
from nas.trials.inline import run_inline
from nas.trials.recorded import Recording
from nas.trials.replay import ReplayRun, recorded_seed_map
from tests.helpers import experiment_yaml, rising_recording
from tests.old_store import OLD_TRIAL_ID, write_old_store

EPOCHS, SEEDS, VAL = 4, 16, 2000
SPACE = {"width": {"fixed": 0.125}, "L1.residual": {"choice": [0, 1]}, "L2.residual": {"choice": [0, 1]},
         "L3.residual": {"choice": [0, 1]}}


def _spec(tmp_path, **search):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return load_experiment(experiment_yaml(
        tmp_path / "p.yaml", name="p", space=SPACE, dataset={"val_size": VAL},
        recipe={"epochs": EPOCHS, "warmup": 0.2},
        search={"sampler": "random", "n_trials": 8, "pruner": {"kind": "median", "n_startup_trials": 3, "pilot": PILOT},
                **search}))


def test_the_first_architectures_of_a_one_seed_search_run_a_second_seed(tmp_path):
    spec = _spec(tmp_path)
    assert pilot_size(spec.search.pruner, 1, 8) == PILOT == 3  # as the YAML says, however short the search
    db = f"sqlite:///{tmp_path / 'p.db'}"
    with Store.open(db) as store:
        controller = SearchController(spec, store, open_experiment(store, spec), db, costs=lambda arch: (1, 1))
        assert controller.target() == 8 + PILOT
        plans = [controller.ask() for _ in range(11)]
    seeds: dict[str, list[int]] = {}
    for plan in plans:
        seeds.setdefault(plan.arch.hash, []).append(plan.seed)
    first = list(dict.fromkeys(plan.arch.hash for plan in plans))[:PILOT]
    # each of the first three is asked again at once, on the next seed; every (arch, seed) is new
    assert [plan.arch.hash for plan in plans[:6]] == [h for h in first for _ in range(2)]
    assert all(seeds[h][:2] == [0, 1] for h in first)
    assert max(Counter((p.arch.hash, p.seed) for p in plans).values()) == 1
    # no pilot where the rule does not need one (repeats give the noise, margin 0 ignores it), or the YAML says so
    default = _spec(tmp_path / "default", pruner={"kind": "median"}).search.pruner
    assert pilot_size(default, 2, 10_000) == 0
    assert pilot_size(_spec(tmp_path / "off", pruner={"kind": "median", "pilot": 0}).search.pruner, 1, 10_000) == 0
    assert pilot_size(_spec(tmp_path / "m0", pruner={"kind": "median", "margin": 0}).search.pruner, 1, 10_000) == 0
    assert pilot_size(_spec(tmp_path / "hb", pruner={"kind": "hyperband"}).search.pruner, 1, 10_000) == 0


def test_by_default_the_pilot_runs_only_in_a_search_long_enough_to_repay_it(tmp_path):
    # its PILOT trials are PILOT / N of an N-architecture search; PILOT_PAYS_FROM is where the
    # measured saving of the margin's pruning covers them (nas.search.pruning)
    default = _spec(tmp_path, pruner={"kind": "median"}).search.pruner
    assert pilot_size(default, 1, PILOT_PAYS_FROM - 1) == 0
    assert pilot_size(default, 1, PILOT_PAYS_FROM) == PILOT
    short = _spec(tmp_path / "short", sampler="grid", pruner={"kind": "median", "n_startup_trials": 3})
    db = f"sqlite:///{tmp_path / 's.db'}"
    with Store.open(db) as store:
        controller = SearchController(short, store, open_experiment(store, short), db, costs=lambda arch: (1, 1))
        controller.enqueue_grid()
        assert controller.pilot == 0 and controller.target() == 8
        plans = [controller.ask() for _ in range(8)]
    assert len({plan.arch.hash for plan in plans}) == 8 and {plan.seed for plan in plans} == {0}  # no second seeds
    long = _spec(tmp_path / "long", n_trials=PILOT_PAYS_FROM, pruner={"kind": "median"})
    db = f"sqlite:///{tmp_path / 'l.db'}"
    with Store.open(db) as store:
        controller = SearchController(long, store, open_experiment(store, long), db, costs=lambda arch: (1, 1))
        assert controller.pilot == PILOT and controller.target() == PILOT_PAYS_FROM + PILOT


def test_a_grid_runs_its_first_architectures_twice_first(tmp_path):
    spec = _spec(tmp_path, sampler="grid")
    db = f"sqlite:///{tmp_path / 'g.db'}"
    with Store.open(db) as store:
        controller = SearchController(spec, store, open_experiment(store, spec), db, costs=lambda arch: (1, 1))
        controller.enqueue_grid()
        assert controller.target() == 8 + PILOT
        plans = [controller.ask() for _ in range(11)]
    pairs = [(plan.arch.hash, plan.seed) for plan in plans]
    assert len(set(pairs)) == 11 and len({h for h, _ in pairs}) == 8  # every grid point, no pair twice
    assert [seed for _, seed in pairs[:6]] == [0, 1] * 3 and pairs[0][0] == pairs[1][0] != pairs[2][0] == pairs[3][0]


def _recording(spec, finals: dict[str, float]) -> Recording:
    """Each architecture's curve rising to its final accuracy, measured on VAL images."""
    return rising_recording(spec, lambda arch: finals[arch.short_name()], seeds=SEEDS, epochs=EPOCHS,
                            val_images=VAL, rng_seed=3, epoch_seconds=2.0)


def test_a_pruned_trial_stores_why_and_nas_status_prints_it(tmp_path):
    spec = _spec(tmp_path)
    archs = [spec.space.arch_from_params(point) for point in spec.space.grid()]
    # residual blocks help, and the network without any is far behind
    finals = {a.short_name(): 0.5 + 0.08 * sum(getattr(a, s).residual for s in ("L1", "L2", "L3")) for a in archs}
    recording = _recording(spec, finals)
    seeds = recorded_seed_map(list(range(12)), list(recording.seeds[:12]))
    db = tmp_path / "p.db"
    with Store.open(str(db)) as store:
        launched = launch(spec, store=store, db_url=str(db), data_root=str(tmp_path), log=lambda line: None,
                          executor=partial(run_inline, make_run=partial(ReplayRun, recording, seeds)))
        search = store.trials(experiment_id=launched.experiment_id, phase=Phase.SEARCH)
        pruned = [t for t in search if t.status == TrialStatus.PRUNED]
        from nas.results import pruned_trials

        stored = pruned_trials(store, launched.experiment_id)
    assert len(search) == 8 + PILOT
    assert pruned, "the pilot's seed noise lets the margin prune the clearly worse"
    assert [p.trial_id for p in stored] == [t.id for t in pruned]
    for row, trial in zip(stored, pruned):
        reason = row.reason
        assert isinstance(reason, PruneReason) and reason.rule == "margin" and reason.seed_dof >= 3
        assert reason.epoch == trial.epochs_done - 1  # stopped after the epoch it was judged at
        assert reason.value < reason.threshold - reason.gap  # below the bar by more than the gap
        assert reason.rank_low > 0  # the curve ranked the finished trials
    result = CliRunner().invoke(app, ["status", "p", "--db", f"sqlite:///{db}"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert f"why pruned ({min(10, len(pruned))} latest of {len(pruned)} pruned search trials)" in result.output
    assert stored[-1].reason.text()[:30] in result.output


def test_a_store_from_before_reasons_upgrades_and_its_pruned_trials_say_so(tmp_path):
    url, _ = write_old_store(tmp_path, "0009")  # before migration 0010
    from sqlalchemy import text

    from nas.db import make_engine
    from nas.results import pruned_trials

    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE nas_trials SET status = 'pruned' WHERE id = {OLD_TRIAL_ID}"))
    engine.dispose()
    with Store.open(url) as store:  # opening upgrades it
        [old] = pruned_trials(store, 1)
        assert old.trial_id == OLD_TRIAL_ID and old.reason is None
        trial_id = store.start_trial(1, "a1b2c3d4e5f6", 1, "search", epochs_planned=2, recipe_json="{}", device="cpu",
                                     code_version="test")
        reason = PruneReason("margin", 0, 0.3, 0.4, 50.0, 6, 2.0, 0.01, 3, 0.033, 0.8, 0.3, 6, "PercentilePruner")
        store.finish_trial(trial_id, TrialStatus.PRUNED, prune_reason=reason.to_json())
        assert [p.reason for p in pruned_trials(store, 1)] == [None, reason]
    result = CliRunner().invoke(app, ["status", "old", "--db", url], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "(stored before reasons were kept)" in result.output and "epoch 1: 30.0% < median 40.0%" in result.output


def test_a_retried_trial_is_not_pruned_on_its_dead_attempt_s_curve(tmp_path):
    """Issue 26 D3: Tune restarts a crashed trial from epoch 0 under the same plan; Optuna keeps
    each step's first report, so the retry was judged on the dead attempt's values."""
    import optuna

    spec = _spec(tmp_path, pruner={"kind": "median", "n_startup_trials": 0, "n_warmup_steps": 0, "margin": 0})
    db = f"sqlite:///{tmp_path / 'r.db'}"
    with Store.open(db) as store:
        controller = SearchController(spec, store, open_experiment(store, spec), db, costs=lambda arch: (1, 1))
        plan = controller.ask()
        # the first attempt: low values while nothing had finished (nothing to prune against), then it crashed
        assert not controller.should_prune(plan, {"epoch": 0, "val_acc": 0.10})
        assert not controller.should_prune(plan, {"epoch": 1, "val_acc": 0.10})
        for final in (0.6, 0.7, 0.8):  # meanwhile others finished, far above it
            controller.study.add_trial(optuna.trial.create_trial(
                value=final, params=plan.optuna_trial.params, distributions=plan.optuna_trial.distributions,
                intermediate_values={e: final for e in range(EPOCHS)}))
        # the retry, from epoch 0, far better: not judged on the dead attempt's 0.10 at epoch 1
        assert not controller.should_prune(plan, {"epoch": 0, "val_acc": 0.75})
        assert not controller.should_prune(plan, {"epoch": 1, "val_acc": 0.75})
        assert not controller.should_prune(plan, {"epoch": 2, "val_acc": 0.75})  # judged again, on its own value
        worse = controller.ask()  # the rule itself still prunes: a trial that low from the start
        assert controller.should_prune(worse, {"epoch": 0, "val_acc": 0.10})
