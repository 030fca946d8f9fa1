"""The dashboard's pages, run headless with Streamlit's AppTest on a seeded store.

Assertions are on the data behind each chart and table, recomputed here from the store
(`nas.db.Store` reads) and `nas.stats`, not from the dashboard's own query module.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sqlite3
from collections import defaultdict
from pathlib import Path

import optuna
import pytest
from streamlit.testing.v1 import AppTest

from nas.dashboard import queries, serve, ui
from nas.dashboard.seed import DIMENSIONS, seed_store
from nas.db import Store
from nas.results import arch_results
from nas.stats import pareto_front, summarize
from tests.helpers import APP, TIMEOUT_S, figures_of, trace
from tests.postgres_schema import fresh_schema_url

EXPERIMENT = "cifar_fast"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    path = tmp_path_factory.mktemp("dashboard") / "nas.db"
    return seed_store(f"sqlite:///{path}", with_ablation=True)


@pytest.fixture
def open_page(seeded, monkeypatch):
    """``open_page("pareto", exp=..., arch=...)``: the app after a run of that page."""
    monkeypatch.setenv("NAS_DB", seeded.url)
    return _opener()


def _opener():
    def open_page(page: str = "experiments", **query: str) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
        at.query_params.update(query)
        at.run()
        if page != "experiments":
            at.query_params.update(query)
            at.switch_page(ui.PAGES[page]).run()
        assert not at.exception, [e.message for e in at.exception]
        return at

    return open_page


def curve_count(line: dict) -> int:
    """Curves in a line trace that draws several, separated by None gaps."""
    return sum(1 for i, y in enumerate(line["y"]) if y is not None and (i == 0 or line["y"][i - 1] is None))


def completed(store: Store, phase: str) -> dict[str, list]:
    experiment = store.get_experiment(EXPERIMENT)
    by_arch = defaultdict(list)
    for t in store.trials(experiment_id=experiment.id, phase=phase, status="completed"):
        by_arch[t.arch_hash].append(t)
    return by_arch


# ---- an empty or missing store ----------------------------------------------------------


@pytest.mark.parametrize("page", list(ui.PAGES))
def test_every_page_of_an_empty_store_says_how_to_launch_a_search(page, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Store.open(url).close()  # the schema, no experiments
    monkeypatch.setenv("NAS_DB", url)
    at = _opener()(page)
    assert "No experiments yet" in at.info[0].value
    assert [c.value for c in at.code] == [ui.LAUNCH_COMMAND]


def test_a_missing_database_says_how_to_launch_and_is_not_created(tmp_path, monkeypatch):
    path = tmp_path / "nowhere.db"
    monkeypatch.setenv("NAS_DB", f"sqlite:///{path}")
    at = _opener()("pareto")
    assert "No experiments yet" in at.info[0].value
    assert at.code[0].value == "nas launch search_spaces/cifar_fast.yaml"
    assert not path.exists()


@pytest.mark.parametrize("page", list(ui.PAGES))
def test_every_page_of_an_experiment_without_trials_yet_says_so(page, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    with Store.open(url) as store:
        store.ensure_experiment("just_started")
    monkeypatch.setenv("NAS_DB", url)
    at = _opener()(page, exp="just_started")
    if page == "experiments":
        assert at.dataframe[0].value["trials"].tolist() == [0]
    else:
        assert at.info, "expected a message saying there is nothing to show yet"


def test_a_database_that_is_no_nas_store_shows_why_it_cannot_be_read(tmp_path, monkeypatch):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    monkeypatch.setenv("NAS_DB", f"sqlite:///{path}")
    at = _opener()("experiments")
    assert "Cannot read the store" in at.error[0].value
    assert "no nas tables" in at.error[0].value


def test_a_file_that_is_no_database_is_one_error_line_not_an_exception(tmp_path, monkeypatch):
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a database\n" * 100)
    monkeypatch.setenv("NAS_DB", f"sqlite:///{path}")
    at = _opener()("experiments")  # the opener asserts that no exception reached the page
    assert len(at.error) == 1 and "file is not a database" in at.error[0].value
    assert "\n" not in at.error[0].value


# ---- experiments ------------------------------------------------------------------------


def test_experiments_page_counts_each_experiments_trials_by_status(open_page, seeded):
    at = open_page("experiments")
    table = at.dataframe[0].value.set_index("name")
    with Store.open(seeded.url, read_only=True) as store:
        for name in (seeded.experiment, seeded.live_experiment):
            trials = store.trials(experiment_id=store.get_experiment(name).id)
            row = table.loc[name]
            assert row["trials"] == len(trials)
            assert row["completed"] == sum(t.status == "completed" for t in trials)
            assert row["pruned"] == sum(t.status == "pruned" for t in trials)
            assert row["failed"] == sum(t.status in ("failed", "diverged") for t in trials)
            assert row["running"] == sum(t.status == "running" for t in trials)
            best = max(t.final_val_acc for t in trials if t.status == "completed")
            assert row["best_accuracy"] == pytest.approx(best * 100)
    assert table.loc[seeded.live_experiment, "status"] == "running"


def test_experiments_page_refreshes_itself_while_an_experiment_runs(open_page):
    at = open_page("experiments")
    assert any(f"every {ui.REFRESH_S} s" in c.value for c in at.caption)


# ---- Pareto front -----------------------------------------------------------------------


@pytest.mark.parametrize("cost", ["train_seconds", "params", "flops"])
def test_pareto_front_is_the_set_nas_stats_computes(open_page, seeded, cost):
    at = open_page("pareto", exp=EXPERIMENT)
    at.radio(key="pareto_cost").set_value(cost).run()
    with Store.open(seeded.url, read_only=True) as store:
        by_arch = completed(store, "search")
        hashes = sorted(by_arch)
        arch = {h: store.get_architecture(h) for h in hashes}
    cost_of = {
        "train_seconds": lambda h: sum(t.train_seconds for t in by_arch[h]) / len(by_arch[h]),
        "params": lambda h: arch[h].params, "flops": lambda h: arch[h].flops,
    }[cost]
    points = [[sum(t.final_val_acc for t in by_arch[h]) / len(by_arch[h]), cost_of(h)] for h in hashes]
    expected = {hashes[i] for i in pareto_front(points, ["maximize", "minimize"])}

    front = trace(at, "Pareto front")
    assert {c[0] for c in front["customdata"]} == expected
    others = trace(at, "architectures")
    assert {c[0] for c in others["customdata"]} == set(hashes) - expected
    assert front["x"] == sorted(front["x"])  # joined from cheap to expensive
    assert at.dataframe[0].value["arch_hash"].tolist() == [c[0] for c in front["customdata"]]


def test_pareto_axes_carry_units(open_page):
    at = open_page("pareto", exp=EXPERIMENT)
    titles = []
    for cost in ("train_seconds", "params", "flops"):
        at.radio(key="pareto_cost").set_value(cost).run()
        layout = figures_of(at)[0]["layout"]
        titles.append(layout["xaxis"]["title"]["text"])
        assert layout["yaxis"]["title"]["text"] == "Accuracy (%)"
    assert titles == ["Train time per run (s)", "Parameters (millions)", "FLOPs per image (MFLOPs)"]


def test_pareto_draws_confirmed_architectures_with_their_95_percent_ci(open_page, seeded):
    at = open_page("pareto", exp=EXPERIMENT)
    confirmed = trace(at, "confirmed (mean ± 95% CI)")
    with Store.open(seeded.url, read_only=True) as store:
        by_arch = completed(store, "confirm")
    assert {c[0] for c in confirmed["customdata"]} == set(seeded.confirmed_hashes)
    for (arch_hash, *_), y, plus, minus in zip(confirmed["customdata"], confirmed["y"],
                                               confirmed["error_y"]["array"], confirmed["error_y"]["arrayminus"]):
        s = summarize([t.final_val_acc for t in by_arch[arch_hash]])
        assert s.n == 3
        assert y == pytest.approx(s.mean * 100)
        assert plus == pytest.approx((s.ci_high - s.mean) * 100)
        assert minus == pytest.approx((s.mean - s.ci_low) * 100)


def test_pareto_lists_each_confirmed_architecture_with_the_confirm_race_decision(open_page, seeded):
    from nas.config.experiment import ConfirmSettings
    from nas.search.race import GROUP_ORDER, replay

    at = open_page("pareto", exp=EXPERIMENT)
    table = at.dataframe[1].value  # the confirmed architectures
    with Store.open(seeded.url, read_only=True) as store:
        by_arch = completed(store, "confirm")
        settings = ConfirmSettings(**json.loads(store.get_experiment(EXPERIMENT).config_json)["confirm"])
    accuracy = {h: {t.seed: t.final_val_acc for t in trials} for h, trials in by_arch.items()}
    groups = replay(accuracy, list(accuracy), settings).groups()
    assert dict(zip(table["arch_hash"], table["decision"])) == {h: g.text() for h, g in groups.items()}
    assert [g.decision for g in groups.values()].count("best") == 1
    assert table["rank"].tolist() == list(range(1, len(table) + 1))  # listed as `nas export --rank` counts
    ordered = [GROUP_ORDER[groups[h].decision] for h in table["arch_hash"]]
    assert ordered == sorted(ordered)
    # each one's Pareto front, numbered from 1 as in `nas status`, and how sure it is
    with Store.open(seeded.url, read_only=True) as store:
        results = arch_results(store, EXPERIMENT, "confirm")
    shares = {r.arch_hash: r.front_share for r in results}
    assert dict(zip(table["arch_hash"], table["front_share"])) == pytest.approx(shares)
    assert dict(zip(table["arch_hash"], table["pareto_front"])) == {r.arch_hash: r.rank + 1 for r in results}
    assert min(table["pareto_front"]) == 1  # the first front is 1, not 0
    assert all(0.0 <= v <= 1.0 for v in shares.values())


def test_pareto_hover_shows_the_short_architecture_form(open_page, seeded):
    at = open_page("pareto", exp=EXPERIMENT)
    with Store.open(seeded.url, read_only=True) as store:
        for name in ("Pareto front", "architectures"):
            t = trace(at, name)
            assert "%{customdata[1]}" in t["hovertemplate"]
            for arch_hash, short_name, _ in t["customdata"]:
                assert short_name == store.get_architecture(arch_hash).short_name


def test_choosing_an_architecture_on_the_pareto_page_opens_it(open_page, seeded):
    at = open_page("pareto", exp=EXPERIMENT)
    target = seeded.confirmed_hashes[1]
    at.selectbox(key="pareto_open").select(target).run()
    at.button(key="pareto_open_button").click().run()
    assert not at.exception
    assert at.title[0].value == "Architecture"
    assert at.query_params["arch"] in (target, [target])
    assert target in at.caption[0].value


def test_a_chart_selection_names_the_architecture_of_its_point():
    event = {"selection": {"points": [{"x": 1.0, "y": 90.0, "customdata": ["abc123def456", "R:L1", "3"]}]}}
    assert ui.selected_hash(event) == "abc123def456"
    assert ui.selected_hash({"selection": {"points": []}}) is None
    assert ui.selected_hash(None) is None


# ---- architecture -----------------------------------------------------------------------


def test_architecture_page_shows_config_costs_curves_and_the_export_command(open_page, seeded):
    arch_hash = seeded.confirmed_hashes[0]
    at = open_page("architecture", exp=EXPERIMENT, arch=arch_hash)
    with Store.open(seeded.url, read_only=True) as store:
        arch = store.get_architecture(arch_hash)
        runs = [t for t in store.trials(experiment_id=store.get_experiment(EXPERIMENT).id)
                if t.arch_hash == arch_hash]
        confirm_acc = summarize([t.final_val_acc for t in runs if t.phase == "confirm"])
    assert at.header[0].value == arch.short_name
    assert json.loads(at.json[0].value) == json.loads(arch.config_json)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters"] == f"{arch.params / 1e6:.3f} M"
    assert metrics["FLOPs per image"] == f"{arch.flops / 1e6:.1f} M"
    assert metrics["Accuracy, mean ± std (confirm, 3 seeds)"] == ui.mean_pm(confirm_acc.mean, confirm_acc.std)
    assert runs[0].device in at.caption[1].value
    assert [c.value for c in at.code] == [f"nas export {EXPERIMENT} --arch {arch_hash} --out winner/"]
    stages = at.dataframe[0].value
    assert stages["stage"].tolist() == ["prep", "L1", "L2", "L3", "head"]
    assert stages["channels"].tolist()[:4] == ["16", "32", "64", "128"]  # width 0.25

    curves = figures_of(at)[0]
    seed_lines = [t for t in curves["data"] if t.get("mode") == "lines" and t["name"].startswith("seed")]
    assert sorted(t["name"] for t in seed_lines) == sorted(f"seed {t.seed} ({t.phase})" for t in runs)
    assert all(curve_count(t) == 1 for t in seed_lines)  # every seed of every phase, once
    mean = trace(at, "mean")
    assert len(mean["y"]) == seeded.epochs
    assert "mean ± std" in {t["name"] for t in curves["data"]}
    timing = at.dataframe[1].value
    assert sorted(timing["id"]) == sorted(t.id for t in runs)
    assert set(timing["device"]) == {runs[0].device}


def test_architecture_page_shows_the_seeded_stores_evaluation_noise(open_page, seeded):
    from nas.stats import binomial_se

    arch_hash = seeded.confirmed_hashes[0]
    at = open_page("architecture", exp=EXPERIMENT, arch=arch_hash)
    with Store.open(seeded.url, read_only=True) as store:
        runs = [t for t in store.trials(experiment_id=store.get_experiment(EXPERIMENT).id)
                if t.arch_hash == arch_hash and t.status == "completed" and t.phase == "confirm"]
    assert {t.final_val_images for t in runs} == {1000}  # the seeded store says what each accuracy was scored on
    se = sum(binomial_se(t.final_val_acc, 1000) for t in runs) / len(runs)
    caption = next(c.value for c in at.caption if c.value.startswith("Evaluation noise"))
    assert f"±{ui.percent(se)} on 1,000 images" in caption


def test_architecture_page_of_a_net_without_exits_has_no_early_exit_section(open_page, seeded):
    at = open_page("architecture", exp=EXPERIMENT, arch=seeded.confirmed_hashes[0])
    assert "Early exits" not in [s.value for s in at.subheader]
    assert len(figures_of(at)) == 1  # the learning curves only


def test_architecture_page_draws_an_exit_nets_accuracy_vs_inference_flops_and_exit_shares(tmp_path, monkeypatch):
    from nas.models import parse_short_name

    url = f"sqlite:///{tmp_path / 'exits.db'}"
    arch = parse_short_name("R:L1+L3 E:L1+L2 w=0.25")
    points = [  # as a trial's last result brings them: thresholds ascending
        {"threshold": 0.0, "accuracy": 0.80, "mean_flops": 60e6, "exit_shares": [0.0, 0.0, 1.0]},
        {"threshold": 0.5, "accuracy": 0.75, "mean_flops": 40e6, "exit_shares": [0.5, 0.2, 0.3]},
        {"threshold": math.inf, "accuracy": 0.60, "mean_flops": 20e6, "exit_shares": [1.0, 0.0, 0.0]},
    ]
    with Store.open(url) as store:
        experiment_id = store.ensure_experiment("exits")
        store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), 400_000, 50_000_000)
        trial_id = store.start_trial(experiment_id, arch.hash, 0, "search", epochs_planned=1, recipe_json="{}",
                                     device="cpu", code_version="test")
        store.record_epoch(trial_id, 0, train_loss=1.0, train_acc=0.5, val_acc=0.8, test_acc=None,
                           epoch_seconds=1.0, cumulative_seconds=1.0)
        store.finish_trial(trial_id, "completed")
        store.save_exit_curve(trial_id, "val", points)
    monkeypatch.setenv("NAS_DB", url)
    at = _opener()("architecture", exp="exits", arch=arch.hash)
    assert "Early exits" in [s.value for s in at.subheader]
    line = trace(at, "accuracy vs mean inference FLOPs")
    assert line["x"] == pytest.approx([p["mean_flops"] / 1e6 for p in points])
    assert line["y"] == pytest.approx([p["accuracy"] * 100 for p in points])
    assert line["customdata"] == ["0", "0.5", "∞"]
    chosen = trace(at, "exits.threshold 0.5")  # the operating point of mean_inference_flops
    assert (chosen["x"], chosen["y"]) == (pytest.approx([40.0]), pytest.approx([75.0]))
    for k, name in enumerate(["L1", "L2", "final"]):
        assert trace(at, f"exit {name}")["y"] == pytest.approx([p["exit_shares"][k] * 100 for p in points])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Mean inference FLOPs at threshold 0.5"] == "40.00 M"
    assert metrics["Accuracy at threshold 0.5"] == ui.percent(0.75)


# ---- trials -----------------------------------------------------------------------------


def test_trials_page_lists_every_trial_of_the_experiment(open_page, seeded):
    at = open_page("trials", exp=EXPERIMENT)
    table = at.dataframe[0].value
    assert sorted(table["id"]) == sorted(seeded.search_ids + seeded.confirm_ids + seeded.ablation_ids)
    assert set(DIMENSIONS) <= set(table.columns)  # the searched space keys


def test_trials_page_filters_by_status_phase_and_space_key(open_page, seeded):
    at = open_page("trials", exp=EXPERIMENT)
    at.multiselect(key="trials_status").select("pruned").run()
    assert sorted(at.dataframe[0].value["id"]) == sorted(seeded.pruned_ids)
    # each pruned trial says why: its epoch, value, the threshold and the seed-noise gap
    assert all(why.startswith(f"epoch {epochs}: ") and "seed sd 1.0 pts, 3 dof" in why
               for why, epochs in zip(at.dataframe[0].value["why_pruned"], at.dataframe[0].value["epochs"].str[0]))
    at.multiselect(key="trials_status").unselect("pruned").run()
    at.multiselect(key="trials_phase").select("confirm").run()
    assert sorted(at.dataframe[0].value["id"]) == sorted(seeded.confirm_ids)
    at.multiselect(key="trials_key_L3.residual").select(0).run()
    with Store.open(seeded.url, read_only=True) as store:
        expected = [i for i in seeded.confirm_ids
                    if json.loads(store.get_architecture(store.get_trial(i).arch_hash).config_json)
                    .get("L3", {}).get("residual", 0) == 0]
    assert sorted(at.dataframe[0].value["id"]) == sorted(expected)


def test_trials_curves_mark_pruned_trials_where_they_stopped(open_page, seeded):
    at = open_page("trials", exp=EXPERIMENT)
    at.multiselect(key="trials_status").select("pruned").run()
    stops = trace(at, "stopped here (pruned/failed)")
    with Store.open(seeded.url, read_only=True) as store:
        expected = sorted((store.get_trial(i).epochs_done, round(store.get_trial(i).final_val_acc * 100, 6))
                          for i in seeded.pruned_ids)
    assert sorted(zip(stops["x"], [round(y, 6) for y in stops["y"]])) == expected
    assert all(x < seeded.epochs for x in stops["x"])
    lines = [t for fig in figures_of(at) for t in fig["data"] if t.get("mode") == "lines"]
    assert [t["name"] for t in lines] == ["pruned"]
    assert curve_count(lines[0]) == len(seeded.pruned_ids)


# ---- search insight ---------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*low `target` values")
def test_insight_importance_is_optunas_on_the_stored_study(open_page, seeded):
    at = open_page("insight", exp=EXPERIMENT)
    bars = figures_of(at)[0]["data"][0]
    study = optuna.load_study(study_name=EXPERIMENT, storage=seeded.url)
    expected = optuna.importance.get_param_importances(study, target=lambda t: -t.values[0])
    assert dict(zip(bars["y"], bars["x"])) == pytest.approx({k: v * 100 for k, v in expected.items()})
    assert set(bars["y"]) <= set(DIMENSIONS)


def test_insight_says_why_when_importance_cannot_be_computed(open_page, seeded):
    at = open_page("insight", exp=seeded.live_experiment)  # no Optuna study was stored
    assert "Parameter importance is not available" in at.info[0].value
    assert not at.exception


def test_insight_plots_accuracy_by_each_searched_dimension(open_page, seeded):
    at = open_page("insight", exp=EXPERIMENT)
    boxes = [t for fig in figures_of(at) for t in fig["data"] if t["type"] == "box"]
    assert [b["name"] for b in boxes] == list(DIMENSIONS)
    with Store.open(seeded.url, read_only=True) as store:
        accs = sorted(t.final_val_acc * 100 for t in completed_trials(store, "search"))
    assert sorted(boxes[0]["y"]) == pytest.approx(accs)


def completed_trials(store, phase):
    return [t for ts in completed(store, phase).values() for t in ts]


def test_insight_reports_the_share_of_epochs_pruning_saved(open_page, seeded):
    at = open_page("insight", exp=EXPERIMENT)
    with Store.open(seeded.url, read_only=True) as store:
        search = [t for t in store.trials(experiment_id=store.get_experiment(EXPERIMENT).id, phase="search")
                  if t.status != "running"]
    planned = sum(t.epochs_planned for t in search)
    skipped = sum(t.epochs_planned - t.epochs_done for t in search if t.status == "pruned")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Epochs run / planned"] == f"{sum(t.epochs_done for t in search)} / {planned}"
    assert metrics["Planned epochs pruning skipped"] == ui.percent(skipped / planned, 1)


def test_insight_shows_from_which_epoch_the_curves_rank_the_final_accuracy(open_page, seeded):
    from nas.search.curve_ranks import curve_rank_correlation

    at = open_page("insight", exp=EXPERIMENT)
    shown = next(df.value for df in at.dataframe if "rho" in df.value.columns)
    with Store.open(seeded.url, read_only=True) as store:
        expected = curve_rank_correlation(store, store.get_experiment(EXPERIMENT).id)
    assert list(shown["epoch"]) == [r.epoch + 1 for r in expected]
    assert list(shown["rho"]) == pytest.approx([r.rho for r in expected], nan_ok=True)
    assert shown["rho"].iloc[-1] == pytest.approx(1.0)  # the last epoch is the final accuracy


# ---- ablations --------------------------------------------------------------------------


def test_ablations_page_says_how_to_run_an_ablation(open_page, seeded):
    at = open_page("ablations", exp=seeded.live_experiment)
    assert f"No ablation of {seeded.live_experiment} yet" in at.info[0].value
    assert at.code[0].value == f"nas ablate {seeded.live_experiment}"


def test_ablations_page_shows_the_contribution_table_nas_ablate_computes(open_page, seeded):
    from nas.ablation.report import contributions

    at = open_page("ablations", exp=EXPERIMENT)
    with Store.open(seeded.url, read_only=True) as store:
        report = contributions(store, EXPERIMENT, seeded.confirmed_hashes[0])
        by_arch = completed(store, "ablation")
        reference = {t.seed: t.final_val_acc for t in completed(store, "confirm")[seeded.confirmed_hashes[0]]}
    table = at.dataframe[0].value
    assert table["arch_hash"].tolist() == [r.arch_hash for r in report.rows]
    assert set(table["arch_hash"]) == set(by_arch)
    for row in table.itertuples(index=False):
        paired = [t.final_val_acc - reference[t.seed] for t in by_arch[row.arch_hash]]
        assert row.delta == pytest.approx(sum(paired) / len(paired) * 100)  # paired by seed
    bars = figures_of(at)[0]["data"][0]
    assert bars["y"] == [r.change for r in report.rows]
    assert bars["error_x"]["array"] == pytest.approx(
        [(r.accuracy.ci_high - r.accuracy.mean) * 100 for r in report.rows])


# ---- read-only, queries, serving --------------------------------------------------------


def test_browsing_every_page_leaves_the_store_byte_for_byte_unchanged(open_page, seeded):
    path = Path(seeded.url.removeprefix("sqlite:///"))
    # the database and its WAL; not the -shm, WAL's shared-memory index, which readers write
    # too (read marks, its rebuild when the last connection had closed): it holds no data
    files = sorted(f for f in path.parent.glob(path.name + "*") if not f.name.endswith("-shm"))
    assert path in files
    before = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    for page in ui.PAGES:
        open_page(page, exp=EXPERIMENT)
    assert {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files} == before


def test_the_dashboard_engine_refuses_writes(seeded):
    engine = queries.open_engine(seeded.url)
    with engine.connect() as connection, pytest.raises(Exception, match="readonly|read-only|query_only"):
        connection.exec_driver_sql("DELETE FROM nas_trials")


@pytest.mark.parametrize("seed", range(5))
def test_front_mask_agrees_with_nas_stats_on_ties_duplicates_and_nans(seed):
    rng = random.Random(seed)
    acc = [rng.choice([0.8, 0.85, 0.9, 0.95]) for _ in range(60)]
    cost = [float(rng.randint(1, 8)) for _ in range(60)]
    acc[3], cost[3] = math.nan, 1.0
    mask = queries.front_mask(acc, cost)
    finite = [i for i in range(60) if i != 3]
    expected = {finite[k] for k in pareto_front([[acc[i], cost[i]] for i in finite], ["maximize", "minimize"])}
    assert {i for i, on in enumerate(mask) if on} == expected


def test_serve_runs_streamlit_on_the_app_with_the_store_in_the_environment(tmp_path):
    argv = serve.command(8765)
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4] == str(APP)
    assert argv[argv.index("--server.port") + 1] == "8765"
    assert argv[argv.index("--server.headless") + 1] == "true"
    env = serve.environment(str(tmp_path / "x.db"))
    assert env["NAS_DB"] == f"sqlite:///{(tmp_path / 'x.db').as_posix()}"
    with pytest.raises(ValueError, match="port must be an integer from 1 to 65535"):
        serve.command(70000)


# ---- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture
def postgres_url():
    """A URL whose search_path is a fresh schema, dropped afterwards."""
    # let go of the dashboard's pooled connections before the schema is dropped
    with fresh_schema_url("nas_dash", before_drop=queries.open_store.clear) as url:
        yield url


@pytest.mark.postgres
def test_every_page_reads_a_postgresql_store(postgres_url, monkeypatch):
    seeded = seed_store(postgres_url, n_search=12, with_ablation=True)
    monkeypatch.setenv("NAS_DB", postgres_url)
    open_page = _opener()
    for page in ui.PAGES:
        at = open_page(page, exp=EXPERIMENT)
        assert not at.error, [e.value for e in at.error]
    at = open_page("pareto", exp=EXPERIMENT)
    with Store.open(postgres_url, read_only=True) as store:
        by_arch = completed(store, "search")
    hashes = sorted(by_arch)
    points = [[sum(t.final_val_acc for t in by_arch[h]) / len(by_arch[h]),
               sum(t.train_seconds for t in by_arch[h]) / len(by_arch[h])] for h in hashes]
    expected = {hashes[i] for i in pareto_front(points, ["maximize", "minimize"])}
    assert {c[0] for c in trace(at, "Pareto front")["customdata"]} == expected
    at = open_page("insight", exp=EXPERIMENT)
    assert "Parameter importance is not available" not in " ".join(i.value for i in at.info)
    assert len(seeded.search_ids) == 12
