"""The results API (`nas.open(url).experiment(name)`) on a store with known contents: each
frame's columns and dtypes (`nas.frames.COLUMNS`), its values, and that reading results
imports neither torch nor Ray."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

import nas
from nas.ablation.report import contributions
from nas.db import Store
from nas.errors import ConfigError, StoreError
from nas.frames import COLUMNS, column_dtypes
from nas.results import arch_results
from nas.stats import paired_difference, summarize
from tests.results_store import (
    A,
    B,
    CODE,
    CONFIRM_SEEDS,
    CONFIRM_VAL,
    DEVICE,
    EXPERIMENT,
    FLOPS,
    PRUNE_REASON,
    PARAMS,
    TEST_IMAGES,
    VAL_IMAGES,
    known_store,
)


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    return known_store(tmp_path_factory.mktemp("results") / "nas.db")


@pytest.fixture
def exp(known):
    with nas.open(known.url) as results:
        yield results.experiment(EXPERIMENT)


def expected_columns(kind: str, dims: tuple[str, ...] = ()) -> list[str]:
    names = [c.name for c in COLUMNS[kind]]
    if dims:
        at = names.index("short_name") + 1
        names[at:at] = dims
    return names


def assert_documented_dtypes(frame: pd.DataFrame, kind: str) -> None:
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == column_dtypes(kind, frame.columns)


def test_experiments_lists_each_experiment_with_its_counts_and_best_accuracy(known):
    with nas.open(known.url) as results:
        frame = results.experiments()
    assert list(frame.columns) == expected_columns("experiments")
    assert_documented_dtypes(frame, "experiments")
    row = frame.iloc[0]
    assert (row.experiment, row.status, row.trials, row.completed, row.pruned, row.failed) == (
        EXPERIMENT, "finished", 8, 7, 1, 0)
    assert row.best_accuracy == 0.82  # A's best confirm seed
    assert row.code_version == CODE and row.finished_at >= row.created_at


def test_trials_has_a_row_per_trial_with_the_searched_dimension_as_a_column(exp, known):
    frame = exp.trials()
    # width is fixed in the space and the same for both: not a searched dimension
    assert list(frame.columns) == expected_columns("trials", ("L1.residual",))
    assert_documented_dtypes(frame, "trials")
    assert frame["trial_id"].tolist() == sorted(known.trial_ids.values())
    assert dict(zip(frame["arch_hash"], frame["L1.residual"])) == {A.hash: 1, B.hash: 0}
    a = frame.set_index("trial_id").loc[known.trial_ids["search", A.hash, 0]]
    assert (a.phase, a.status, a.short_name, a.seed) == ("search", "completed", A.short_name(), 0)
    assert (a.accuracy, a.final_val_acc, a.final_test_acc, a.final_train_loss, a.final_train_acc) == (
        0.55, 0.55, 0.54, 1.0, 0.60)
    assert (a.final_val_images, a.final_test_images, a.best_val_acc) == (VAL_IMAGES, TEST_IMAGES, 0.55)
    assert (a.train_seconds, a.epochs_done, a.epochs_planned) == (4.0, 2, 2)
    assert (a.params, a.flops, a.device, a.code_version) == (PARAMS[A.hash], FLOPS[A.hash], DEVICE, CODE)
    assert pd.isna(a.error) and a.finished_at >= a.started_at
    pruned = frame.set_index("trial_id").loc[known.trial_ids["search", B.hash, 0]]
    assert (pruned.status, pruned.epochs_done, pruned.epochs_planned, pruned.accuracy) == ("pruned", 1, 2, 0.30)
    assert pruned.why_pruned == PRUNE_REASON.text() and frame["why_pruned"].isna().sum() == len(frame) - 1


def test_epochs_has_a_row_per_trial_and_epoch(exp, known):
    frame = exp.epochs()
    assert list(frame.columns) == expected_columns("epochs")
    assert_documented_dtypes(frame, "epochs")
    assert len(frame) == 2 + 1 + 6  # A's search epochs, B's pruned one, one per confirm trial
    curve = frame[frame["trial_id"] == known.trial_ids["search", A.hash, 0]]
    assert curve["epoch"].tolist() == [0, 1]
    assert curve["val_acc"].tolist() == [0.38, 0.55] and curve["train_loss"].tolist() == [1.5, 1.0]
    assert curve["cumulative_seconds"].tolist() == [2.0, 4.0] and curve["epoch_seconds"].tolist() == [2.0, 2.0]
    assert curve["val_images"].tolist() == [VAL_IMAGES] * 2 and curve["test_images"].tolist() == [TEST_IMAGES] * 2
    assert set(curve["phase"]) == {"search"} and set(curve["short_name"]) == {A.short_name()}
    assert set(curve["seed"]) == {0} and set(curve["status"]) == {"completed"}


def test_architectures_are_nas_status_results_with_fronts_numbered_from_1(exp, known):
    frame = exp.architectures()
    assert list(frame.columns) == expected_columns("architectures", ("L1.residual",))
    assert_documented_dtypes(frame, "architectures")
    # completed trials only: B's search trial was pruned
    assert list(zip(frame["phase"], frame["arch_hash"])) == [("search", A.hash), ("confirm", A.hash), ("confirm", B.hash)]
    confirm = frame[frame["phase"] == "confirm"].set_index("arch_hash")
    # A is more accurate and smaller: the first front; B, dominated, the second
    assert confirm["pareto_front"].to_dict() == {A.hash: 1, B.hash: 2}
    assert confirm["position"].to_dict() == {A.hash: 1, B.hash: 2}
    expected = summarize(CONFIRM_VAL[A.hash])
    a = confirm.loc[A.hash]
    assert a.seeds == 3 and a.accuracy_mean == pytest.approx(0.81)
    assert (a.accuracy_ci_low, a.accuracy_ci_high, a.accuracy_sd) == pytest.approx(
        (expected.ci_low, expected.ci_high, expected.std))
    assert (a.params, a.flops, a.eval_images) == (PARAMS[A.hash], FLOPS[A.hash], VAL_IMAGES)
    assert a.decision == "best" and math.isnan(a.decision_p)
    with Store.open(known.url, read_only=True) as store:
        rows = {r.arch_hash: r for r in arch_results(store, EXPERIMENT, "confirm")}
    b = confirm.loc[B.hash]
    assert b.decision == rows[B.hash].group and b.decision_p == pytest.approx(rows[B.hash].group_p)
    assert confirm["front_share"].to_dict() == pytest.approx({h: r.front_share for h, r in rows.items()})
    search = frame[frame["phase"] == "search"].iloc[0]
    assert (search.seeds, search.position, search.pareto_front, search.accuracy_mean) == (1, 1, 1, 0.55)
    assert pd.isna(search.decision) and math.isnan(search.accuracy_ci_low)  # one seed, no repeats: no CI, no decision


def test_ablation_is_nas_ablates_contribution_table(exp, known):
    frame = exp.ablation()
    assert list(frame.columns) == expected_columns("ablation")
    assert_documented_dtypes(frame, "ablation")
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row.reference_hash, row.arch_hash, row.change, row.key, row.move, row.seeds) == (
        A.hash, B.hash, "L1.residual 1 -> 0", "L1.residual", "off", 3)
    diff = paired_difference(list(CONFIRM_VAL[B.hash]), list(CONFIRM_VAL[A.hash]))
    assert row.delta_accuracy == pytest.approx(-0.0966667, abs=1e-6)
    assert (row.delta_accuracy_ci_low, row.delta_accuracy_ci_high, row.p) == pytest.approx(
        (diff.ci_low, diff.ci_high, diff.p_value))
    with Store.open(known.url, read_only=True) as store:
        report = contributions(store, EXPERIMENT, A.hash)
    assert row.study_p == pytest.approx(report.rows[0].p) and row.matters == report.rows[0].matters
    assert (row.delta_params, row.delta_flops) == (1_000, -1_000_000)
    assert row.reference_accuracy == pytest.approx(0.81)


def test_the_searched_seeds_of_the_confirm_set_are_the_stored_ones(exp):
    trials = exp.trials()
    confirm = trials[trials["phase"] == "confirm"]
    assert sorted(set(confirm["seed"])) == list(CONFIRM_SEEDS)


def test_an_unknown_experiment_names_the_ones_there_are(known):
    with nas.open(known.url) as results, pytest.raises(ConfigError, match=r"no experiment named 'nope'.*known"):
        results.experiment("nope")


def test_opening_a_missing_store_creates_nothing(tmp_path):
    with pytest.raises(StoreError, match="no nas database"):
        nas.open(tmp_path / "missing.db")
    assert list(tmp_path.iterdir()) == []


def test_reading_every_result_imports_neither_torch_nor_ray(known):
    code = f"""
import json, sys
import nas
with nas.open({known.url!r}) as results:
    results.experiments()
    exp = results.experiment({EXPERIMENT!r})
    sizes = [len(exp.trials()), len(exp.epochs()), len(exp.architectures()), len(exp.ablation())]
print(json.dumps({{"sizes": sizes, "torch": "torch" in sys.modules, "ray": "ray" in sys.modules}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {"sizes": [8, 9, 3, 1], "torch": False, "ray": False}
