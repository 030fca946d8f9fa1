"""Evaluation noise: every accuracy is stored with the images it was measured on, and a single
trial's binomial standard error is shown beside it (nas status, nas launch, nas export, the
dashboard). The store is written directly, as `nas launch` records trials."""

from __future__ import annotations

import math

import pytest
import yaml
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from nas.cli import app
from nas.dashboard import ui
from nas.db import Store
from nas.db.schema import Phase
from nas.models import parse_short_name
from nas.search.launch import trial_line
from nas.stats import binomial_se, mean_binomial_se
from nas.trials.plan import TrialPlan
from tests.helpers import APP, TIMEOUT_S

runner = CliRunner()
EXPERIMENT = "noisy"
MEASURED = parse_short_name("R:L1 w=0.125")  # its trials record the images (1,000 val)
OLDER = parse_short_name("R:L3 w=0.125")  # its trials come from a store that did not


# ---- the standard error -------------------------------------------------------------------


def test_binomial_se_is_sqrt_p_one_minus_p_over_n():
    # by hand: 0.45 * 0.55 = 0.2475; / 1000 = 0.0002475; sqrt = 0.0157321...
    assert binomial_se(0.45, 1000) == pytest.approx(0.0157321, abs=1e-7)
    assert binomial_se(0.5, 10_000) == pytest.approx(0.005)  # sqrt(0.25 / 10,000)
    assert binomial_se(1.0, 500) == 0.0  # every image right: no binomial spread


@pytest.mark.parametrize(("p", "n"), [(0.45, None), (None, 1000), (math.nan, 1000), (0.45, 0)])
def test_binomial_se_of_an_unknown_accuracy_or_size_is_nan(p, n):
    assert math.isnan(binomial_se(p, n))


def test_binomial_se_refuses_an_accuracy_outside_0_to_1():
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\].*p=45"):
        binomial_se(45, 1000)  # a percentage, not a fraction


def test_mean_binomial_se_averages_the_known_ones_only():
    se = mean_binomial_se([(0.45, 1000), (0.5, 10_000), (0.6, None)])
    assert se == pytest.approx((0.0157321 + 0.005) / 2, abs=1e-7)
    assert math.isnan(mean_binomial_se([(0.6, None)]))


# ---- a store with fake trials ---------------------------------------------------------------


def _fake_trial(store, exp_id, arch, seed, phase, acc, val_images):
    trial_id = store.start_trial(exp_id, arch.hash, seed, phase, epochs_planned=1, recipe_json="{}",
                                 device="cpu", code_version="test")
    store.record_epoch(trial_id, 0, train_loss=1.0, train_acc=acc, val_acc=acc, test_acc=acc - 0.01,
                       epoch_seconds=10.0, cumulative_seconds=10.0, val_images=val_images,
                       test_images=None if val_images is None else 10_000)
    store.finish_trial(trial_id, "completed")
    return trial_id


@pytest.fixture
def noisy_store(tmp_path):
    db = tmp_path / "nas.db"
    with Store.open(str(db)) as store:
        exp_id = store.ensure_experiment(EXPERIMENT)
        for arch in (MEASURED, OLDER):
            store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), 100_000, 10_000_000)
        for seed, acc in ((10_000, 0.45), (10_001, 0.55)):  # the same SE: p(1 - p) is symmetric
            _fake_trial(store, exp_id, MEASURED, seed, Phase.CONFIRM, acc, 1000)
            _fake_trial(store, exp_id, OLDER, seed, Phase.CONFIRM, acc - 0.05, None)
    return db


def test_nas_status_shows_each_architectures_eval_se_with_its_images(noisy_store):
    result = runner.invoke(app, ["status", EXPERIMENT, "--db", str(noisy_store)])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "architecture" in line)
    assert header.rstrip(" ┃│").endswith("eval SE")  # the last column
    measured = next(line for line in result.output.splitlines() if MEASURED.hash in line)
    older = next(line for line in result.output.splitlines() if OLDER.hash in line)
    assert measured.rstrip(" │").endswith("±1.57% (1,000)")
    assert older.rstrip(" │").endswith("-")  # unknown in an older store: no number made up


def test_arch_results_carry_the_eval_size_and_the_mean_per_trial_se(noisy_store):
    from nas.results import arch_results

    with Store.open(str(noisy_store), read_only=True) as store:
        rows = {r.arch_hash: r for r in arch_results(store, EXPERIMENT, Phase.CONFIRM)}
    assert rows[MEASURED.hash].eval_images == 1000
    assert rows[MEASURED.hash].eval_se == pytest.approx(0.0157321, abs=1e-7)
    assert rows[OLDER.hash].eval_images is None and math.isnan(rows[OLDER.hash].eval_se)


def test_exported_config_yaml_carries_the_eval_size_and_se(noisy_store, tmp_path):
    out = tmp_path / "winner"
    result = runner.invoke(app, ["export", EXPERIMENT, "--arch", MEASURED.hash, "--out", str(out),
                                 "--format", "yaml", "--db", str(noisy_store)])
    assert result.exit_code == 0, result.output
    text = (out / "config.yaml").read_text()
    metrics = yaml.safe_load(text)["metrics"]
    assert metrics["eval_images"] == 1000
    assert metrics["eval_se"] == pytest.approx(0.015732, abs=1e-6)
    assert "eval_se is one seed's binomial standard error" in text


# ---- nas launch's trial lines -----------------------------------------------------------------


def test_a_launch_trial_line_shows_the_se_after_the_accuracy_when_the_images_are_known():
    plan = TrialPlan(MEASURED, 0, Phase.SEARCH)
    plan.last = {"epoch": 3, "val_acc": 0.45, "test_acc": None, "val_images": 1000, "cumulative_seconds": 24.1}
    assert "epoch  4/4  acc 45.00% ±1.57%  completed   24.1 s" in trial_line("search 1/12", plan, "completed", 4)
    plan.last = {"epoch": 3, "val_acc": 0.45, "cumulative_seconds": 24.1}  # an older worker's result
    assert "epoch  4/4  acc 45.00%  completed   24.1 s" in trial_line("search 1/12", plan, "completed", 4)


def test_without_a_val_split_the_trial_line_uses_the_test_images():
    plan = TrialPlan(MEASURED, 0, Phase.SEARCH)
    plan.last = {"epoch": 0, "val_acc": None, "test_acc": 0.5, "val_images": None, "test_images": 10_000}
    assert "acc 50.00% ±0.50%" in trial_line("search 1/1", plan, "completed", 1)


# ---- the dashboard ----------------------------------------------------------------------------


def _page(url: str, page: str, monkeypatch, **query: str) -> AppTest:
    monkeypatch.setenv("NAS_DB", url)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update(query)
    at.run()
    at.query_params.update(query)
    at.switch_page(ui.PAGES[page]).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_dashboard_trials_table_shows_each_trials_se_and_images(noisy_store, monkeypatch):
    at = _page(f"sqlite:///{noisy_store}", "trials", monkeypatch, exp=EXPERIMENT)
    table = at.dataframe[0].value.set_index("arch_hash")
    measured, older = table.loc[MEASURED.hash], table.loc[OLDER.hash]
    assert measured["eval_images"].tolist() == [1000, 1000]
    assert measured["eval_se"].tolist() == pytest.approx([1.57321] * 2, abs=1e-5)  # percentage points
    assert older["eval_images"].isna().all() and older["eval_se"].isna().all()


def test_dashboard_architecture_page_states_the_evaluation_noise(noisy_store, monkeypatch):
    at = _page(f"sqlite:///{noisy_store}", "architecture", monkeypatch, exp=EXPERIMENT, arch=MEASURED.hash)
    captions = [c.value for c in at.caption]
    assert any("binomial SE ±1.57% on 1,000 images" in c and "seed std of 7.07%" in c for c in captions)
    timing = at.dataframe[1].value
    assert timing["eval_images"].tolist() == [1000, 1000]
