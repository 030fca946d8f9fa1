"""`nas ablate`: the plan, the paired statistics, the contribution table and real runs."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

import pytest
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from nas.ablation.plan import plan_variants
from nas.ablation.report import contributions
from nas.cli import app
from nas.db import Store
from nas.db.lease import Lease
from nas.models import ArchConfig, build_model, count_flops, count_params, parse_short_name
from nas.config.experiment import load_experiment
from nas.config.space import SearchSpace
from nas.trials.experiment import stored_spec
from nas.sequential import AGAINST_FIRST, Looks
from nas.stats import paired_difference, paired_t_pvalue
from tests.cifar_fixture import write_cifar
from tests.helpers import experiment_yaml

runner = CliRunner()
T_975_DF4 = 2.7764451051977987  # Student t quantile 0.975, 4 degrees of freedom (tables)

# ----------------------------------------------------------------------------- paired statistics


def test_paired_difference_matches_scipy_ttest_rel_and_a_hand_computed_ci():
    reference = [0.910, 0.905, 0.921, 0.899, 0.915]
    variant = [0.902, 0.900, 0.909, 0.897, 0.904]
    # by hand: d = variant - reference = -0.008, -0.005, -0.012, -0.002, -0.011
    d = [-0.008, -0.005, -0.012, -0.002, -0.011]
    mean = sum(d) / 5  # -0.0076
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 4)
    half = T_975_DF4 * sd / math.sqrt(5)
    result = paired_difference(variant, reference)
    assert result.n == 5
    assert result.mean == pytest.approx(-0.0076, abs=1e-12)
    assert result.std == pytest.approx(sd, rel=1e-9)
    assert (result.ci_low, result.ci_high) == pytest.approx((mean - half, mean + half), rel=1e-9)
    scipy = scipy_stats.ttest_rel(variant, reference)
    assert result.p_value == pytest.approx(scipy.pvalue, rel=1e-9)
    assert paired_t_pvalue(variant, reference) == pytest.approx(scipy.pvalue, rel=1e-9)
    ci = scipy.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert result.excludes_zero()


def test_a_difference_within_seed_noise_has_a_ci_straddling_zero():
    result = paired_difference([0.90, 0.93, 0.91], [0.92, 0.91, 0.905])
    assert result.ci_low < 0 < result.ci_high and not result.excludes_zero()
    assert result.p_value == pytest.approx(scipy_stats.ttest_rel([0.90, 0.93, 0.91], [0.92, 0.91, 0.905]).pvalue)


def test_fewer_than_two_pairs_give_a_mean_but_no_ci_or_p_value():
    one = paired_difference([0.9, None], [0.8, 0.7])
    assert one.n == 1 and one.mean == pytest.approx(0.1)
    assert math.isnan(one.ci_low) and math.isnan(one.p_value)


# ----------------------------------------------------------------------------- the plan


def _plan(reference: str, space: dict) -> list[tuple[str, str]]:
    variants = plan_variants(parse_short_name(reference), SearchSpace.from_dict(space))
    return [(v.change, v.move) for v in variants]


CIFAR_FAST_SPACE = {  # the space of search_spaces/cifar_fast.yaml, written out so the test stands alone
    "width": {"fixed": 1.0},
    **{f"{stage}.{knob}": {"choice": [0, 1]} for stage in ("L1", "L2", "L3") for knob in ("extra", "residual")},
    **{f"{stage}.deformable": {"choice": [False, True]} for stage in ("L1", "L2", "L3")},
    "drop.kind": {"choice": ["none", "stochastic_depth", "depth_dropout", "drop_path", "width_dropout"]},
    "drop.rate": {"choice": [0.1, 0.2, 0.3],
                  "when": {"drop.kind": ["stochastic_depth", "depth_dropout", "drop_path", "width_dropout"]}},
}


def test_the_plan_for_residual_l1_l3_in_the_cifar_fast_space_is_the_expected_list():
    # deformable and the drop kind are unordered choices the reference has off, and the drop
    # rate is inactive without a drop: only the counts move
    variants = plan_variants(parse_short_name("R:L1+L3"), SearchSpace.from_dict(CIFAR_FAST_SPACE))
    assert [(v.change, v.move, v.arch.short_name()) for v in variants] == [
        ("L1.extra 0 -> 1", "up", "R:L1+L3 X:L1"),
        ("L1.residual 1 -> 0", "off", "R:L3"),
        ("L2.extra 0 -> 1", "up", "R:L1+L3 X:L2"),
        ("L2.residual 0 -> 1", "up", "R:L1+L2+L3"),
        ("L3.extra 0 -> 1", "up", "R:L1+L3 X:L3"),
        ("L3.residual 1 -> 0", "off", "R:L1"),
    ]


def test_every_component_is_switched_off_and_ordered_knobs_move_one_step():
    space = {
        "width": {"choice": [0.125, 0.25, 0.5]},
        "L1.residual": {"int": [0, 3]},
        "L2.extra": {"choice": [0, 1]},
        "L2.deformable": {"choice": [False, True]},
        "L3.fractal": {"choice": [0, 2, 3]},
        "drop.kind": {"choice": ["none", "stochastic_depth"]},
        "drop.rate": {"float": [0.1, 0.3], "step": 0.1, "when": {"drop.kind": ["stochastic_depth"]}},
    }
    assert _plan("R:L1x2+L3 X:L2 F2:L3 D:L2 sd=0.2 pyr w=0.25", space) == [
        ("width 0.25 -> 0.125", "down"),
        ("width 0.25 -> 0.5", "up"),
        ("L1.residual 2 -> 0", "off"),
        ("L1.residual 2 -> 1", "down"),
        ("L1.residual 2 -> 3", "up"),
        ("L2.extra 1 -> 0", "off"),
        ("L2.deformable true -> false", "off"),
        ("L3.residual 1 -> 0", "off"),  # "remove one" is the same network: listed once
        ("L3.fractal 2 -> 0", "off"),
        ("L3.fractal 2 -> 3", "up"),
        ("drop.kind stochastic_depth -> none", "off"),  # drop.rate -> 0 is the same network
        ("drop.rate 0.2 -> 0.1", "down"),
        ("drop.rate 0.2 -> 0.3", "up"),
        ("width_schedule pyramid -> double", "off"),
    ]


def test_depth_dropout_at_rate_zero_is_its_own_variant_and_a_count_always_loses_one():
    # depth dropout's 1x1 shortcuts stay at rate 0: a different network from no drop at all
    assert _plan("R:L1x2 dd=0.5 w=0.125", {"width": {"fixed": 0.125}}) == [
        ("L1.residual 2 -> 0", "off"),
        ("L1.residual 2 -> 1", "down"),
        ("drop.kind depth_dropout -> none", "off"),
        ("drop.rate 0.5 -> 0", "off"),
    ]


def test_an_inactive_conditional_knob_gets_no_neighbours_and_the_reference_is_never_a_variant():
    space = {
        "drop.kind": {"choice": ["none", "stochastic_depth"]},
        "drop.rate": {"float": [0.1, 0.3], "step": 0.1, "when": {"drop.kind": ["stochastic_depth"]}},
        "L1.residual": {"choice": [1]},
    }
    plan = plan_variants(parse_short_name("R:L1"), SearchSpace.from_dict(space))
    assert [v.change for v in plan] == ["L1.residual 1 -> 0"]
    assert all(v.arch.hash != parse_short_name("R:L1").hash for v in plan)


# ----------------------------------------------------------------------------- a store without Ray


def _upsert(store: Store, arch: ArchConfig) -> None:
    model = build_model(arch)
    store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), count_params(model), count_flops(model))


def _fake_trial(store, exp_id, arch, seed, phase, acc, seconds=10.0):
    trial_id = store.start_trial(exp_id, arch.hash, seed, phase, epochs_planned=1, recipe_json="{}",
                                 device="cpu", code_version="test")
    store.record_epoch(trial_id, 0, train_loss=1.0, train_acc=acc, val_acc=acc, test_acc=acc,
                       epoch_seconds=seconds, cumulative_seconds=seconds)
    store.finish_trial(trial_id, "completed")
    return trial_id


@pytest.fixture
def launched_store(tmp_path):
    """A store as `nas launch` leaves it: experiment "tiny", search results, R:L1+L3 confirmed on 2 seeds."""
    spec = load_experiment(experiment_yaml(tmp_path / "tiny.yaml", confirm={"top_k": 1, "repeats": 2}))
    db = tmp_path / "nas.db"
    winner = parse_short_name("R:L1+L3 w=0.125")
    with Store.open(str(db)) as store:
        exp_id = store.ensure_experiment("tiny", config_json=json.dumps(spec.resolved(), sort_keys=True),
                                         space_yaml=spec.source_text, code_version="test")
        for i, name in enumerate(["base w=0.125", "R:L1 w=0.125", "R:L3 w=0.125", "R:L1+L3 w=0.125"]):
            _upsert(store, parse_short_name(name))
            _fake_trial(store, exp_id, parse_short_name(name), 0, "search", 0.5 + 0.1 * i)
        for seed in (10_000, 10_001):
            _fake_trial(store, exp_id, winner, seed, "confirm", 0.8)
    return db, spec, winner


def test_the_stored_experiment_rebuilds_the_spec_it_was_launched_with(launched_store):
    db, spec, _ = launched_store
    with Store.open(str(db), read_only=True) as store:
        rebuilt = stored_spec(store, "tiny")
    assert {k: v for k, v in rebuilt.resolved().items() if k != "budget"} == \
        json.loads(json.dumps({k: v for k, v in spec.resolved().items() if k != "budget"}))
    assert rebuilt.source_text == spec.source_text


def test_dry_run_prints_the_plan_and_writes_nothing(launched_store):
    db, _, winner = launched_store
    before = db.read_bytes()
    result = runner.invoke(app, ["ablate", "tiny", "--repeats", "3", "--dry-run", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert winner.hash in result.output
    assert "L1.residual 1 -> 0" in result.output and "L3.residual 1 -> 0" in result.output
    # the reference lacks seed 10002 only; each variant needs all three
    assert "2 variants x 3 paired seeds: 7 runs to do" in result.output
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["nope"], "no experiment named 'nope'"),
        (["tiny", "--repeats", "1"], "--repeats must be at least 2"),
        (["tiny", "--arch", "not-an-arch"], "--arch 'not-an-arch'"),
        (["tiny", "--arch", "0123456789ab"], "no architecture with this hash"),
        (["tiny", "--until-separated", "--repeats", "4", "--max-repeats", "3"], "--max-repeats must be at least"),
        (["tiny", "--until-separated", "--repeats", "2", "--max-repeats", "2"], "at least 3 (the first test"),
        (["tiny", "--repeats", "2"], "2 paired seeds test nothing"),
    ],
)
def test_bad_ablate_input_exits_2_and_writes_nothing(launched_store, args, needle):
    db, _, _ = launched_store
    before = db.read_bytes()
    result = runner.invoke(app, ["ablate", *args, "--dry-run", "--db", str(db)])
    assert result.exit_code == 2 and needle in result.output, result.output
    result = runner.invoke(app, ["ablate", *args, "--db", str(db)])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert db.read_bytes() == before


def test_ablate_while_a_search_writes_the_experiment_exits_2_naming_it(launched_store, tmp_path):
    db, _, _ = launched_store
    with Store.open(str(db)) as store, Lease(store, "tiny", "nas launch"):
        result = runner.invoke(app, ["ablate", "tiny", "--db", str(db), "--repeats", "3",
                                     "--data-root", str(tmp_path / "no-data-here")])
    assert result.exit_code == 2, result.output
    assert "is being written by nas launch" in result.output and f"pid {os.getpid()}" in result.output
    with Store.open(str(db), read_only=True) as store:  # refused before the plan was stored
        assert store.ablation_variants(store.get_experiment("tiny").id) == []


def test_ablate_without_a_store_exits_2_and_creates_none(tmp_path):
    db = tmp_path / "missing.db"
    result = runner.invoke(app, ["ablate", "tiny", "--db", str(db)])
    assert result.exit_code == 2 and not db.exists()


def test_the_contribution_table_pairs_seeds_tests_every_variant_as_one_family_and_sorts_by_effect(launched_store):
    db, _, winner = launched_store
    ref_acc = {10_002: 0.79, 10_003: 0.81}  # 10_000 and 10_001: the confirm results (0.8)
    drops = {  # variant -> its accuracy per seed
        "R:L3 w=0.125": {10_000: 0.70, 10_001: 0.73, 10_002: 0.68, 10_003: 0.71},  # clearly worse
        "R:L1 w=0.125": {10_000: 0.81, 10_001: 0.80, 10_002: 0.80, 10_003: 0.82},  # noise
        "base w=0.125": {10_000: 0.60, 10_001: 0.62},  # only two seeds run
    }
    with Store.open(str(db)) as store:
        exp_id = store.get_experiment("tiny").id
        store_trials = {t.seed: t for t in store.trials(experiment_id=exp_id, phase="confirm")}
        # the confirm results were 0.8 for both seeds; add the other two reference seeds in phase ablation
        for seed in (10_002, 10_003):
            _fake_trial(store, exp_id, winner, seed, "ablation", ref_acc[seed], seconds=12.0)
        for position, (name, accs) in enumerate(drops.items()):
            arch = parse_short_name(name)
            store.add_ablation_variant(exp_id, winner.hash, arch.hash, key="k", move="off",
                                       change=f"change {position}", position=position, looks=(4, 4))
            for seed, acc in accs.items():
                _fake_trial(store, exp_id, arch, seed, "ablation", acc, seconds=8.0)
        ref = {s: t.final_val_acc for s, t in store_trials.items()} | ref_acc
        report = contributions(store, "tiny", winner.hash)
    by_name = {row.short_name: row for row in report.rows}
    # one planned look at 4 seeds over 3 variants against the reference
    looks = Looks(arms=4, seeds=(4,), family=AGAINST_FIRST)
    for name, accs in drops.items():
        seeds = sorted(accs)
        row = by_name[name]
        assert row.seeds == tuple(seeds)
        scipy = scipy_stats.ttest_rel([accs[s] for s in seeds], [ref[s] for s in seeds])
        assert row.accuracy.mean == pytest.approx(sum(accs[s] - ref[s] for s in seeds) / len(seeds))
        if len(seeds) < 4:  # its seeds never reached the study's look: no test
            assert math.isnan(row.p) and not row.matters
            continue
        assert row.accuracy.p_value == pytest.approx(scipy.pvalue)
        assert row.p == pytest.approx(looks.p_value(0, scipy.pvalue)) and row.p >= scipy.pvalue
        assert row.matters == (scipy.pvalue <= looks.boundary(0))
    assert [row.short_name for row in report.rows] == ["base w=0.125", "R:L3 w=0.125", "R:L1 w=0.125"]
    assert by_name["R:L3 w=0.125"].matters and not by_name["R:L1 w=0.125"].matters
    assert by_name["R:L3 w=0.125"].params < 0 and by_name["R:L3 w=0.125"].flops < 0
    assert report.reference_accuracy.n == 4


def test_a_study_with_until_separated_spends_alpha_over_its_looks(launched_store):
    """A variant 1 point down with a steady difference: p 0.006 at 3 seeds would pass one test
    at 3 seeds, but the study planned looks 3..8, and its first look spends only a sliver."""
    db, _, winner = launched_store
    seeds = [10_000, 10_001, 10_002]
    with Store.open(str(db)) as store:
        exp_id = store.get_experiment("tiny").id
        _fake_trial(store, exp_id, winner, 10_002, "ablation", 0.8, seconds=12.0)  # confirm gave 0.8, 0.8
        arch = parse_short_name("R:L3 w=0.125")
        store.add_ablation_variant(exp_id, winner.hash, arch.hash, key="k", move="off", change="c", position=0,
                                   looks=(3, 8))
        for seed, acc in zip(seeds, (0.790, 0.789, 0.7905)):
            _fake_trial(store, exp_id, arch, seed, "ablation", acc, seconds=8.0)
        (row,) = contributions(store, "tiny", winner.hash).rows
        raw = row.accuracy.p_value
        # its p so far is the raw p (one pair, nothing spent before), but the boundary of look 1
        # of 6 is 0.05 * (3/8)^10: alpha is kept for the later looks
        assert raw < 0.01 and not row.matters and row.p == pytest.approx(raw, rel=0.02)
        # the same results judged as a study of one look at 3 seeds: it matters
        store.add_ablation_variant(exp_id, winner.hash, arch.hash, key="k", move="off", change="c", position=0,
                                   looks=(3, 3))
        (once,) = contributions(store, "tiny", winner.hash).rows
    assert once.matters and once.p < 0.05


# ----------------------------------------------------------------------------- real runs with Ray


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_cifar(tmp_path_factory.mktemp("cifar"), n_train_per_class=40, n_test_per_class=10)


@pytest.fixture(scope="module")
def local_ray():
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _seeds_by_arch(db: Path, phases=("confirm", "ablation")) -> dict[str, set[int]]:
    out: dict[str, set[int]] = defaultdict(set)
    with Store.open(str(db), read_only=True) as store:
        for phase in phases:
            for t in store.trials(phase=phase, status="completed"):
                out[t.arch_hash].add(t.seed)
    return out


@pytest.mark.slow
def test_variants_run_on_the_reference_seeds_unpruned_and_linked_to_it(tmp_path, data_root, local_ray):
    space = experiment_yaml(tmp_path / "abl.yaml", name="abl", recipe={"epochs": 2, "batch_size": 50},
                            confirm={"top_k": 1, "repeats": 2})
    db = tmp_path / "nas.db"
    args = ["--db", str(db), "--data-root", str(data_root)]
    assert runner.invoke(app, ["launch", str(space), *args]).exit_code == 0
    # A search of the same experiment still running elsewhere: ablate must leave its trial
    # and the Optuna studies alone (it runs through nas.trials, never the search controller).
    import optuna

    storage = f"sqlite:///{db}"
    studies_before = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}
    with Store.open(str(db)) as store:
        live = store.start_trial(store.get_experiment("abl").id, store.architectures()[0].hash, 99, "search",
                                 epochs_planned=2, recipe_json="{}", device="elsewhere", code_version="test")

    result = runner.invoke(app, ["ablate", "abl", "--repeats", "3", *args])
    assert result.exit_code == 0, result.output
    with Store.open(str(db), read_only=True) as store:
        assert store.get_trial(live).status == "running"
    assert {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)} == studies_before
    assert result.output.index("ablation plan") < result.output.index("[ablation]")  # plan first
    assert "contributions to" in result.output

    with Store.open(str(db), read_only=True) as store:
        exp_id = store.get_experiment("abl").id
        (reference_hash,) = {t.arch_hash for t in store.trials(experiment_id=exp_id, phase="confirm")}
        links = store.ablation_variants(exp_id, reference_hash)
        ablation = store.trials(experiment_id=exp_id, phase="ablation")
    assert len(links) == 2  # the two residual placements of this space, each switched or moved
    assert all(str(t.status) == "completed" and t.epochs_done == 2 for t in ablation)  # never pruned
    seeds = _seeds_by_arch(db)
    assert seeds[reference_hash] == {10_000, 10_001, 10_002}
    assert {t.seed for t in ablation if t.arch_hash == reference_hash} == {10_002}  # only the seed it lacked
    for link in links:
        assert seeds[link.arch_hash] == seeds[reference_hash]

    # run again: nothing new; --until-separated adds a paired seed to variants within noise only
    with Store.open(str(db), read_only=True) as store:
        before = contributions(store, "abl", reference_hash)
    result = runner.invoke(app, ["ablate", "abl", "--repeats", "3", "--until-separated", "--max-repeats", "4", *args])
    assert result.exit_code == 0, result.output
    seeds = _seeds_by_arch(db)
    for row in before.rows:
        assert seeds[row.arch_hash] == ({10_000, 10_001, 10_002} if row.matters else {10_000, 10_001, 10_002, 10_003})
    if not all(row.matters for row in before.rows):
        assert 10_003 in seeds[reference_hash]


def test_ablate_has_help_that_reads_like_documentation():
    result = runner.invoke(app, ["ablate", "--help"])
    assert result.exit_code == 0 and "--until-separated" in result.output and "study's p" in result.output


def test_neighbours_in_a_fine_stepped_range_are_computed_not_enumerated():
    from nas.ablation.plan import _neighbours
    from nas.config.space import Param

    fine = Param(key="drop.rate", kind="float", low=0.0, high=1.0, step=1e-9)  # a billion values
    assert _neighbours(fine, 0.5) == pytest.approx((0.5 - 1e-9, 0.5 + 1e-9))
    assert _neighbours(fine, 0.0)[0] is None and _neighbours(fine, 1.0)[1] is None
    steps = Param(key="L1.extra", kind="int", low=0, high=6, step=2)
    assert _neighbours(steps, 4) == (2, 6) and _neighbours(steps, 0) == (None, 2)


def test_the_migration_keeps_an_older_studys_variants_with_no_looks(tmp_path):
    from sqlalchemy import text

    from nas.db import make_engine
    from tests.old_store import write_old_store

    url, _ = write_old_store(tmp_path, "0007")  # before the planned looks were stored
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO nas_architectures VALUES ('b1b2c3d4e5f6', '{}', 'R:L1', 1, 2, "
                                "'2026-01-01 00:00:00')"))
        connection.execute(text("INSERT INTO nas_ablation_variants (experiment_id, reference_hash, arch_hash, key, "
                                "move, change, position, created_at) VALUES (1, 'a1b2c3d4e5f6', 'b1b2c3d4e5f6', "
                                "'L1.residual', 'off', 'L1.residual 1 -> 0', 0, '2026-01-01 00:00:00')"))
    engine.dispose()
    with Store.open(url) as store:  # opening upgrades it
        (link,) = store.ablation_variants(1)
        assert (link.change, link.first_look, link.last_look) == ("L1.residual 1 -> 0", None, None)
        store.add_ablation_variant(1, "a1b2c3d4e5f6", "b1b2c3d4e5f6", key="L1.residual", move="off",
                                   change="L1.residual 1 -> 0", position=0, looks=(3, 6))
        (link,) = store.ablation_variants(1)
    assert (link.first_look, link.last_look) == (3, 6)  # the latest plan's looks
