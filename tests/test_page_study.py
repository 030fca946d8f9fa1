"""Page's study as an experiment: architectures named in the space (`arch`), the shipped
search_spaces/page_post4.yaml, and best / tied / worse over a search with seed repeats
(`nas.search.race.repeat_groups`, `nas.results.search_groups`) in nas status and the dashboard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from nas.cli import app
from nas.config.experiment import load_experiment
from nas.config.space import SearchSpace
from nas.dashboard import ui
from nas.db import Store
from nas.errors import ConfigError
from nas.models import ArchConfig, StageConfig, parse_short_name
from nas.results import arch_results, search_groups
from nas.search.race import BEST, TIED, WORSE, repeat_groups
from nas.sequential import Looks
from nas.stats import paired_difference
from tests.helpers import APP, TIMEOUT_S, experiment_yaml

runner = CliRunner()
PAGE = Path(__file__).resolve().parents[1] / "search_spaces" / "page_post4.yaml"
PAGE_VARIANTS = ["base"] + [f"{kind}:{stages}" for kind in "RX" for stages in ("L1", "L2", "L3", "L1+L3", "L1+L2+L3")]


# ----------------------------------------------------------------------------- the arch entry


def test_an_arch_entry_lists_architectures_by_short_name_and_other_entries_apply_on_top():
    space = SearchSpace.from_dict({"arch": {"choice": ["base", "R:L1+L3", "X:L2"]}, "width": {"fixed": 0.25}})
    archs = [space.arch_from_params(point) for point in space.grid()]
    assert archs == [
        ArchConfig(width=0.25),
        ArchConfig(width=0.25, L1=StageConfig(residual=1), L3=StageConfig(residual=1)),
        ArchConfig(width=0.25, L2=StageConfig(extra=1)),
    ]
    assert space.grid() == [{"arch": "base"}, {"arch": "R:L1+L3"}, {"arch": "X:L2"}]


def test_an_arch_entry_samples_through_optuna_and_conditions_may_name_it():
    import optuna

    space = SearchSpace.from_dict({
        "arch": {"choice": ["R:L1", "R:L3"]},
        "drop.kind": {"fixed": "stochastic_depth", "when": {"arch": ["R:L3"]}},
        "drop.rate": {"choice": [0.1], "when": {"arch": ["R:L3"]}},
    })
    seen = set()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        arch = space.suggest(study.ask())
        seen.add(arch.short_name())
    assert seen == {"R:L1", "R:L3 sd=0.1"}


@pytest.mark.parametrize(("space", "path", "words"), [
    ({"arch": {"choice": ["R:L1", "Q:L9"]}}, "space.arch.choice", "'Q:L9' is not an architecture's short name"),
    ({"arch": {"choice": ["R:L1+L3", "R:L3+L1"]}}, "space.arch.choice", "are the same architecture"),
    ({"arch": {"choice": ["base", "R:L1"]}, "L1.residual": {"choice": [0, 1]}}, "space.L1.residual",
     "also set by the arch entry's 'R:L1'"),
    ({"arch": {"choice": ["w=0.5"]}, "width": {"fixed": 0.25}}, "space.width", "also set by the arch entry"),
    ({"arch": {"int": [0, 3]}}, "space.arch.int", "a choice or fixed"),
    ({"arch": {"choice": [3]}}, "space.arch.choice", "expected short names"),
])
def test_a_bad_arch_entry_names_its_key_and_the_fix(space, path, words):
    with pytest.raises(ConfigError) as err:
        SearchSpace.from_dict(space, source="x.yaml")
    assert f"x.yaml: {path}: " in str(err.value) and words in str(err.value)


# ----------------------------------------------------------------------------- page_post4.yaml


def test_page_post4_is_pages_eleven_architectures_on_shared_seeds_unpruned():
    spec = load_experiment(PAGE)
    archs = [spec.space.arch_from_params(p) for p in spec.space.grid()]
    assert [a.short_name() for a in archs] == PAGE_VARIANTS
    assert len({a.hash for a in archs}) == 11
    assert spec.search.sampler == "grid" and spec.search.repeats >= 5 and spec.search.pruner.kind == "none"
    assert spec.recipe.epochs == 24 and spec.dataset.train_subset is None  # the full recipe by default


def test_page_post4_cpu_budget_is_the_study_at_cpu_scale_and_cpu_race_the_default_strategy():
    study, race = load_experiment(PAGE, budget="cpu"), load_experiment(PAGE, budget="cpu_race")
    for spec in (study, race):
        assert spec.resources.gpus_per_trial == 0 and spec.recipe.epochs == 4
        assert [a.short_name() for a in map(spec.space.arch_from_params, spec.space.grid())] == \
            [f"{name} w=0.25" for name in PAGE_VARIANTS]
        assert spec.dataset == study.dataset and spec.recipe == race.recipe  # the same trials, two strategies
    assert study.search.repeats == 5 and study.search.pruner.kind == "none" and study.confirm.top_k == 0
    assert race.search.repeats == 1 and race.search.pruner.kind == "median"
    assert race.confirm.until_separated and race.confirm.top_k >= 2


# ----------------------------------------------------------------------------- groups over repeats


def test_repeat_groups_compare_every_pair_on_the_shared_seeds():
    seeds = [0, 1, 2, 3, 4]
    lift = [0.001, -0.002, 0.0015, 0.0, 0.002]  # per-seed effect shared by every architecture
    accuracy = {
        "lead": {s: 0.50 + lift[s] for s in seeds},
        "close": {s: 0.50 + lift[s] + (0.004 if s % 2 else -0.006) for s in seeds},
        "bad": {s: 0.45 + lift[s] + 0.001 * s for s in seeds},
        "pruned": {0: 0.30},  # not every seed: not compared
    }
    groups = repeat_groups(accuracy, seeds)
    assert set(groups) == {"lead", "close", "bad"}
    assert groups["lead"].decision == BEST and math.isnan(groups["lead"].p)
    assert groups["close"].decision == TIED and groups["bad"].decision == WORSE
    # each verdict's p is its smallest pair p (against one it trails) over the race's one look
    # of 3 architectures at 5 seeds: Looks' stagewise p, at least the raw p
    looks = Looks(arms=3, seeds=(5,))
    for h in ("bad", "close"):
        raw = min(paired_difference([accuracy[h][s] for s in seeds], [accuracy[o][s] for s in seeds]).p_value
                  for o in ("lead", "close", "bad") if o != h and sum(accuracy[o].values()) > sum(accuracy[h].values()))
        assert groups[h].p == pytest.approx(looks.p_value(0, raw)) and groups[h].p >= raw


def test_repeat_groups_need_two_architectures_and_test_from_three_seeds():
    assert repeat_groups({"a": {0: 0.5, 1: 0.6}}, [0, 1]) == {}
    two = repeat_groups({"a": {0: 0.5, 1: 0.6}, "b": {0: 0.4, 1: 0.41}}, [0, 1])
    assert two["a"].decision == BEST and two["b"].decision == TIED and math.isnan(two["b"].p)


def _trial(store, exp_id, name, seed, acc, status="completed"):
    arch = parse_short_name(name)
    store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), 1000, 1_000_000)
    trial_id = store.start_trial(exp_id, arch.hash, seed, "search", epochs_planned=1, recipe_json="{}",
                                 device="cpu", code_version="test")
    store.record_epoch(trial_id, 0, train_loss=1.0, train_acc=acc, val_acc=acc, test_acc=acc,
                       epoch_seconds=10.0, cumulative_seconds=10.0)
    store.finish_trial(trial_id, status, train_seconds=10.0)
    return arch


@pytest.fixture
def study_store(tmp_path):
    """A grid study on 4 shared seeds: A best, B within the noise, C clearly worse; D pruned."""
    spec = load_experiment(experiment_yaml(
        tmp_path / "study.yaml", name="study",
        space={"arch": {"choice": ["R:L1", "R:L3", "X:L2", "base"]}, "width": {"fixed": 0.125}},
        search={"sampler": "grid", "repeats": 4, "pruner": {"kind": "none"}}, confirm={"top_k": 0}))
    db = tmp_path / "nas.db"
    values = {"R:L1 w=0.125": [0.60, 0.62, 0.61, 0.63], "R:L3 w=0.125": [0.61, 0.60, 0.62, 0.615],
              "X:L2 w=0.125": [0.50, 0.51, 0.505, 0.52]}
    with Store.open(str(db)) as store:
        exp_id = store.ensure_experiment("study", config_json=json.dumps(spec.resolved(), sort_keys=True),
                                         space_yaml=spec.source_text, code_version="test")
        archs = {name: _trial(store, exp_id, name, seed, acc)
                 for name, accs in values.items() for seed, acc in enumerate(accs)}
        archs["base w=0.125"] = _trial(store, exp_id, "base w=0.125", 0, 0.2, status="pruned")
    return db, archs


def test_a_search_with_seed_repeats_reports_best_not_separated_worse(study_store):
    db, archs = study_store
    with Store.open(str(db), read_only=True) as store:
        groups = search_groups(store, "study")
        rows = arch_results(store, "study", "search")
    assert {h: g.decision for h, g in groups.items()} == {
        archs["R:L1 w=0.125"].hash: BEST, archs["R:L3 w=0.125"].hash: TIED, archs["X:L2 w=0.125"].hash: WORSE}
    assert [r.short_name for r in rows] == ["R:L1 w=0.125", "R:L3 w=0.125", "X:L2 w=0.125"]
    assert rows[0].decision == "best" and rows[1].decision.startswith("not separated (p=")
    assert "could detect >= " in rows[1].decision
    assert rows[2].decision.startswith("worse (p=")


def test_nas_status_shows_the_search_decision_of_a_study(study_store):
    db, archs = study_store
    result = runner.invoke(app, ["status", "study", "--db", str(db)])
    assert result.exit_code == 0, result.output
    line = {name: next(line for line in result.output.splitlines() if arch.hash in line)
            for name, arch in archs.items() if name != "base w=0.125"}
    assert "best" in line["R:L1 w=0.125"] and "not separated (p=" in line["R:L3 w=0.125"]
    assert "worse (p=" in line["X:L2 w=0.125"]


def test_a_search_without_repeats_has_no_decision(tmp_path):
    spec = load_experiment(experiment_yaml(tmp_path / "one.yaml", name="one"))
    with Store.open(str(tmp_path / "nas.db")) as store:
        exp_id = store.ensure_experiment("one", config_json=json.dumps(spec.resolved(), sort_keys=True),
                                         space_yaml=spec.source_text, code_version="test")
        for seed, name in enumerate(["R:L1", "R:L3"]):
            _trial(store, exp_id, name, 0, 0.5 + seed / 10)
        assert search_groups(store, "one") == {}
        assert all(r.decision == "" for r in arch_results(store, "one", "search"))


def test_the_dashboard_pareto_page_lists_a_studys_search_decisions(study_store, monkeypatch):
    db, archs = study_store
    monkeypatch.setenv("NAS_DB", f"sqlite:///{db}")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update({"exp": "study"})
    at.run()
    at.query_params.update({"exp": "study"})
    at.switch_page(ui.PAGES["pareto"]).run()
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe[1].value
    decisions = dict(zip(table["short_name"], table["decision"]))
    assert decisions["R:L1 w=0.125"] == "best"
    assert decisions["R:L3 w=0.125"].startswith("not separated") and decisions["X:L2 w=0.125"].startswith("worse")
