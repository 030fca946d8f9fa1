"""The dashboard's Compare page, run headless with Streamlit's AppTest on two small experiments
with hand-worked answers (tests/compare_stores.py)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from nas.dashboard import ui
from nas.db import Store
from tests.compare_stores import CHEAP, MEANS, SHARED, one_store, write_experiment
from tests.helpers import APP, TIMEOUT_S, figures_of


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    return one_store(tmp_path_factory.mktemp("dashboard_compare") / "one.db")


def open_compare(url: str, monkeypatch, **query: str) -> AppTest:
    monkeypatch.setenv("NAS_DB", url)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.run()
    at.query_params.update(query)
    at.switch_page(ui.PAGES["compare"]).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_the_page_shows_the_shared_architectures_the_correlations_and_the_scatter(url, monkeypatch):
    at = open_compare(url, monkeypatch, cmp="cheap,full")
    assert at.multiselect[0].value == ["cheap", "full"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Spearman rho": "+0.80", "Kendall tau": "+0.67", "Same best architecture": "no"}
    assert "4 shared architectures" in at.caption[0].value and "cheap: w=0.25; full: w=1" in at.caption[0].value
    frame = at.dataframe[0].value
    for label in ("cheap", "full"):
        rows = frame[frame["experiment"] == label].set_index("architecture").loc[SHARED]
        assert rows["accuracy"].tolist() == pytest.approx([m * 100 for m in MEANS[label]])
    [scatter] = figures_of(at)[0]["data"]
    assert scatter["text"] == SHARED
    assert scatter["x"] == pytest.approx([m * 100 for m in MEANS["cheap"]])
    assert scatter["y"] == pytest.approx([m * 100 for m in MEANS["full"]])


def test_matching_by_hash_across_widths_shares_nothing_and_says_so(url, monkeypatch):
    at = open_compare(url, monkeypatch, cmp="cheap,full")
    at.radio(key="cmp_match").set_value("hash").run()
    assert "0 shared architectures" in at.caption[0].value
    assert "needs at least 3 shared architectures" in at.warning[0].value
    assert not at.metric


def test_a_store_with_one_experiment_says_to_run_another_budget(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'single.db'}"
    write_experiment(url, "cheap", CHEAP, 0.25)
    at = open_compare(url, monkeypatch)
    assert "Comparing needs two experiments" in at.info[0].value
    assert at.code[0].value == "nas launch search_spaces/page_post4.yaml --budget cpu"


def test_an_experiment_without_results_is_named_not_a_crash(url, tmp_path, monkeypatch):
    other = f"sqlite:///{tmp_path / 'new.db'}"
    write_experiment(other, "cheap", CHEAP, 0.25)
    with Store.open(other) as store:
        store.ensure_experiment("just_started")
    at = open_compare(other, monkeypatch, cmp="cheap,just_started")
    assert "'just_started' has no completed search or confirm trials yet" in at.info[0].value
