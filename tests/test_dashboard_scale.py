"""The dashboard's reads sized for 100,000 trials, checked on a small seeded store against
what the store's own per-trial reads give: the trials table's filters, order and row limit
(in SQL) and the count it shows, the parsed architecture fields, the rank correlations'
one-query read, and the insight's box plot of many trials."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import event
from streamlit.testing.v1 import AppTest

from nas.dashboard import figures, trial_queries, ui
from nas.dashboard.seed import seed_store
from nas.db import Store
from nas.models.arch import ArchConfig
from nas.search.curve_ranks import curve_rank_correlation, rank_correlations
from nas.trials.plan import judged_accuracy
from tests.helpers import APP, TIMEOUT_S

EXPERIMENT = "cifar_fast"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    path = tmp_path_factory.mktemp("dashboard-scale") / "nas.db"
    return seed_store(f"sqlite:///{path}", with_ablation=True)


@pytest.fixture(scope="module")
def every_trial(seeded):
    """Every trial of the experiment with its architecture's fields, read trial by trial."""
    with Store.open(seeded.url, read_only=True) as store:
        rows = []
        for t in store.trials(experiment_id=store.get_experiment(EXPERIMENT).id):
            config = ArchConfig.from_json(store.get_architecture(t.arch_hash).config_json)
            rows.append(dict(id=t.id, arch_hash=t.arch_hash, status=t.status, phase=t.phase,
                             accuracy=judged_accuracy(t.final_val_acc, t.final_test_acc),
                             l3_residual=config.L3.residual))
    return rows


def _engine(seeded):
    return Store.open(seeded.url, read_only=True).engine


def _residual_free_hashes(every_trial) -> tuple[str, ...]:
    return tuple(sorted({t["arch_hash"] for t in every_trial if t["l3_residual"] == 0}))


FILTERS = {
    "none": lambda trials: ((), (), None),
    "pruned": lambda trials: (("pruned",), (), None),
    "confirm": lambda trials: ((), ("confirm",), None),
    "completed search, no L3 residual": lambda trials: (("completed",), ("search",), _residual_free_hashes(trials)),
}


def _kept(every_trial, statuses, phases, hashes) -> list[dict]:
    return [t for t in every_trial if (not statuses or t["status"] in statuses)
            and (not phases or t["phase"] in phases) and (hashes is None or t["arch_hash"] in hashes)]


# ---- the trials table -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FILTERS))
def test_trials_filtered_in_sql_are_the_trials_a_filter_over_every_trial_keeps(seeded, every_trial, name):
    statuses, phases, hashes = FILTERS[name](every_trial)
    kept = _kept(every_trial, statuses, phases, hashes)
    assert kept  # the filter keeps something to compare
    engine = _engine(seeded)
    rows = trial_queries.trial_rows(engine, seeded.url, EXPERIMENT, statuses, phases, hashes)
    assert rows["id"].tolist() == [t["id"] for t in kept]
    assert trial_queries.count_trials(engine, seeded.url, EXPERIMENT, statuses, phases, hashes) == len(kept)


@pytest.mark.parametrize("order", list(trial_queries.TABLE_ORDERS))
def test_the_row_limit_takes_the_first_trials_in_the_chosen_order(seeded, every_trial, order):
    statuses, phases, hashes = FILTERS["none"](every_trial)
    kept = _kept(every_trial, statuses, phases, hashes)
    ranked = {
        "start order": sorted(kept, key=lambda t: t["id"]),
        "latest first": sorted(kept, key=lambda t: -t["id"]),
        "accuracy, best first": sorted(kept, key=lambda t: (t["accuracy"] is None, -(t["accuracy"] or 0), t["id"])),
    }[order]
    rows = trial_queries.trial_rows(_engine(seeded), seeded.url, EXPERIMENT, order=order, limit=5)
    assert rows["id"].tolist() == [t["id"] for t in ranked[:5]]


def test_a_space_key_filter_keeping_more_architectures_than_sql_takes_parameters_still_counts(seeded, every_trial):
    engine = _engine(seeded)
    # SQLite's default limit (this build's is 250,000; PostgreSQL's psycopg: 65,535)
    event.listen(engine, "connect", lambda connection, _: connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER,
                                                                              32_766))
    engine.dispose()  # connections opened from here on have the limit
    real = _residual_free_hashes(every_trial)
    many = real + tuple(f"{i:012x}" for i in range(40_000))
    expected = len(_kept(every_trial, (), (), real))
    assert trial_queries.count_trials(engine, seeded.url, EXPERIMENT, (), (), many) == expected


def test_space_key_filters_keep_the_architectures_with_a_chosen_value_of_every_key(seeded, every_trial):
    archs = trial_queries.experiment_archs(_engine(seeded), seeded.url, EXPERIMENT)
    assert set(archs["arch_hash"]) == {t["arch_hash"] for t in every_trial}
    assert trial_queries.matching_archs(archs, {"L3.residual": [], "width": []}) is None
    assert trial_queries.matching_archs(archs, {"L3.residual": [0]}) == _residual_free_hashes(every_trial)


def _open_trials_page(seeded, monkeypatch) -> AppTest:
    monkeypatch.setenv("NAS_DB", seeded.url)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params["exp"] = EXPERIMENT
    at.run()
    at.switch_page(ui.PAGES["trials"]).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_the_trials_page_says_how_many_match_and_that_it_shows_the_first_rows(seeded, every_trial, monkeypatch):
    monkeypatch.setattr(trial_queries, "MAX_TABLE_ROWS", 7)
    at = _open_trials_page(seeded, monkeypatch)
    total = len(every_trial)
    assert at.dataframe[0].value["id"].tolist() == [t["id"] for t in every_trial[:7]]
    assert at.caption[0].value.startswith(f"{total} of {total} trials match; the table shows the first 7 "
                                          "(start order)")
    at.multiselect(key="trials_phase").select("confirm").run()
    confirm = [t["id"] for t in every_trial if t["phase"] == "confirm"]
    assert at.dataframe[0].value["id"].tolist() == confirm[:7]
    assert at.caption[0].value.startswith(f"{len(confirm)} of {total} trials match")
    at.selectbox(key="trials_order").select("accuracy, best first").run()
    best = sorted((t for t in every_trial if t["phase"] == "confirm"), key=lambda t: (-t["accuracy"], t["id"]))
    assert at.dataframe[0].value["id"].tolist() == [t["id"] for t in best[:7]]


def test_the_trials_page_draws_the_latest_matching_trials_curves(seeded, every_trial, monkeypatch):
    at = _open_trials_page(seeded, monkeypatch)
    at.selectbox(key="trials_order").select("accuracy, best first").run()
    curves = [t for fig in json_figures(at) for t in fig["data"] if t.get("mode") == "lines"]
    labels = {text.split()[0] for line in curves for text in line["text"] if text}
    assert labels == {f"#{t['id']}" for t in every_trial}  # every trial (fewer than MAX_CURVES), not the shown order


def json_figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def test_the_pareto_page_of_a_search_without_seed_repeats_ranks_no_decisions(seeded, monkeypatch):
    import nas.results

    def refuse(store, experiment, phase):  # every architecture ranked: minutes at 100,000 trials
        raise AssertionError(f"arch_results({experiment!r}, {phase!r}) computed")

    monkeypatch.setattr(nas.results, "arch_results", refuse)
    monkeypatch.setenv("NAS_DB", seeded.url)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params["exp"] = seeded.live_experiment  # a running search: completed trials, no confirm yet
    at.run()
    at.switch_page(ui.PAGES["pareto"]).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.get("plotly_chart")  # the front is drawn


# ---- architecture fields ------------------------------------------------------------------


RICH = ArchConfig.from_dict({
    "width": 0.5, "L1": {"residual": 1, "deformable": True}, "L2": {"fractal": 2, "extra": 1}, "L3": {"clique": 3},
    "deformable_mask": True, "drop": {"kind": "drop_path", "rate": 0.1}, "width_schedule": "pyramid",
    "exits": {"stages": "L1+L2", "weights": [0.5, 0.3], "threshold": 0.2},
})


def test_a_stored_config_gives_the_fields_of_its_validated_config(seeded):
    with Store.open(seeded.url, read_only=True) as store:
        stored = [a.config_json for a in store.architectures()]
    for config_json in stored + [RICH.to_json(), ArchConfig().to_json()]:
        assert trial_queries._dimensions(config_json) == trial_queries._validated_dimensions(config_json)
    assert trial_queries.arch_dimensions(RICH.to_json())["exits.stages"] == "L1+L2"


def test_a_config_with_keys_this_version_does_not_know_shows_its_raw_keys():
    text = json.dumps({"width": 0.5, "future": {"knob": 3}})
    assert trial_queries.arch_dimensions(text) == {"width": 0.5, "future.knob": 3}


# ---- search insight -----------------------------------------------------------------------


def test_the_rank_correlations_read_the_curves_the_store_reads_trial_by_trial(seeded):
    with Store.open(seeded.url, read_only=True) as store:
        experiment_id = store.get_experiment(EXPERIMENT).id
        trials = store.trials(experiment_id=experiment_id, phase="search", status="completed")
        curves = [[e.val_acc for e in store.epochs(t.id)] for t in trials]
        finals = [judged_accuracy(t.final_val_acc, t.final_test_acc) for t in trials]
        assert curve_rank_correlation(store, experiment_id) == rank_correlations(curves, finals)


def test_boxes_of_many_trials_are_drawn_from_their_quartiles():
    rng = np.random.default_rng(0)
    n = figures.WEBGL_ABOVE + 1
    trials = pd.DataFrame({"width": rng.choice([0.5, 1.0], n), "accuracy": rng.uniform(0.8, 0.9, n),
                           "short_name": "x"})
    box = figures.dimension_figure(trials, ["width"]).to_plotly_json()["data"][0]
    assert "y" not in box  # a few numbers per box, not every trial
    for i, value in enumerate(box["x"]):
        y = trials.loc[trials["width"].map(figures._label) == value, "accuracy"].to_numpy() * 100
        q1, median, q3 = np.percentile(y, [25, 50, 75])
        assert (box["q1"][i], box["median"][i], box["q3"][i]) == pytest.approx((q1, median, q3))
        assert box["upperfence"][i] == pytest.approx(y[y <= q3 + 1.5 * (q3 - q1)].max())
        assert box["lowerfence"][i] == pytest.approx(y[y >= q1 - 1.5 * (q3 - q1)].min())
