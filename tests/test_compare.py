"""`nas compare`: the shared architectures, their results in each experiment, and the rank
correlation with its bootstrap CIs, on two small experiments with hand-worked answers
(tests/compare_stores.py), in one store and across two."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from nas.cli import app
from nas.compare import (
    ARCHITECTURE_COLUMNS,
    CORRELATION_COLUMNS,
    Entry,
    Source,
    compare,
    kendall,
    parse_sources,
    read_comparison,
    spearman,
)
from nas.errors import ConfigError
from nas.stats import summarize
from tests.compare_stores import CHEAP, FULL, KENDALL, MEANS, SHARED, SPEARMAN, arch, one_store, two_stores, write_experiment

runner = CliRunner()


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    return one_store(tmp_path_factory.mktemp("compare") / "one.db")


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return two_stores(tmp_path_factory.mktemp("compare2"))


def flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


# ---- the statistics -------------------------------------------------------------------------


def test_the_hand_worked_example_agrees_with_scipy():
    cheap, full = MEANS["cheap"], MEANS["full"]
    assert stats.spearmanr(cheap, full).statistic == pytest.approx(SPEARMAN)
    assert stats.kendalltau(cheap, full).statistic == pytest.approx(KENDALL)
    assert float(spearman(cheap, full)) == pytest.approx(SPEARMAN)
    assert float(kendall(cheap, full)) == pytest.approx(KENDALL)


def test_vectorised_spearman_and_kendall_equal_scipy_row_by_row_with_ties():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(50, 7)).astype(float)  # few values: many ties, as a bootstrap draws them
    y = x + rng.integers(0, 3, size=(50, 7))
    rho, tau = spearman(x, y), kendall(x, y)
    for i in range(50):
        want_rho, want_tau = stats.spearmanr(x[i], y[i]).statistic, stats.kendalltau(x[i], y[i]).statistic
        assert (math.isnan(rho[i]) and math.isnan(want_rho)) or rho[i] == pytest.approx(want_rho)
        assert (math.isnan(tau[i]) and math.isnan(want_tau)) or tau[i] == pytest.approx(want_tau)


def entries(means, seeds=None):
    seeds = seeds or [(m,) for m in means]
    return [Entry(f"h{i}", f"a{i}", "search", summarize(s), tuple(s)) for i, (m, s) in enumerate(zip(means, seeds))]


def sources(*names):
    return [Source(n, "sqlite:///x.db", n) for n in names]


def test_the_bootstrap_over_architectures_is_scipy_on_seeded_resamples_of_them():
    a, b = [0.6, 0.55, 0.5, 0.45, 0.40, 0.42], [0.85, 0.88, 0.8, 0.7, 0.75, 0.71]
    result = compare(sources("a", "b"), [entries(a), entries(b)], match="hash", resamples=500, seed=7)
    index = np.random.default_rng(7).integers(0, 6, size=(500, 6))  # the draws compare makes first
    rho = np.array([stats.spearmanr(np.take(a, i), np.take(b, i)).statistic for i in index])
    tau = np.array([stats.kendalltau(np.take(a, i), np.take(b, i)).statistic for i in index])
    c = result.correlations[0]
    assert c.spearman_ci == pytest.approx(tuple(np.percentile(rho[np.isfinite(rho)], [2.5, 97.5])))
    assert c.kendall_ci == pytest.approx(tuple(np.percentile(tau[np.isfinite(tau)], [2.5, 97.5])))
    assert (c.resamples, c.seed) == (500, 7)
    assert math.isnan(c.spearman_seed_ci[0])  # one seed each: no seed-level CI


def test_the_seed_bootstrap_widens_when_the_seeds_overlap_and_repeats_under_its_seed():
    means_a, means_b = [0.60, 0.55, 0.50, 0.45], [0.85, 0.88, 0.80, 0.70]
    tight = [[(m - 0.01, m, m + 0.01) for m in means] for means in (means_a, means_b)]
    loose = [[(m - 0.10, m, m + 0.10) for m in means] for means in (means_a, means_b)]
    run = lambda seeds: compare(sources("a", "b"), [entries(means_a, seeds[0]), entries(means_b, seeds[1])],  # noqa: E731
                                match="hash", resamples=400, seed=1).correlations[0]
    assert run(tight).spearman_seed_ci == pytest.approx((SPEARMAN, SPEARMAN))  # no resample reorders them
    low, high = run(loose).spearman_seed_ci
    assert low < SPEARMAN - 0.5 and high == pytest.approx(1.0)
    assert run(loose) == run(loose)


# ---- one store --------------------------------------------------------------------------------


def test_two_experiments_in_one_store_share_the_architectures_named_alike_without_width(one):
    result = read_comparison(parse_sources(["cheap", "full"], one), resamples=500)
    assert result.match == "name"  # widths differ (0.25, 1): hashes never match
    assert result.keys == SHARED
    assert result.only == {"cheap": ["X:L3"], "full": ["R:L2"]}
    frame = result.architectures_frame()
    assert list(frame.columns) == list(ARCHITECTURE_COLUMNS)
    for label in ("cheap", "full"):
        rows = frame[frame["experiment"] == label].set_index("architecture").loc[SHARED]
        assert rows["accuracy_mean"].tolist() == pytest.approx(MEANS[label])
        assert rows["arch_hash"].tolist() == [arch(k, 0.25 if label == "cheap" else 1.0).hash for k in SHARED]
    full = frame[frame["experiment"] == "full"].set_index("architecture")
    # R:L1 and R:L3 from confirm (3 seeds beat search's 2), with the Student t CI over them
    assert full.loc["R:L1", ["phase", "seeds"]].tolist() == ["confirm", 3]
    assert full.loc["base", ["phase", "seeds"]].tolist() == ["search", 2]
    want = summarize(FULL["confirm"]["R:L3"])
    assert full.loc["R:L3", ["accuracy_ci_low", "accuracy_ci_high"]].tolist() == pytest.approx([want.ci_low, want.ci_high])
    assert full["rank"].loc[SHARED].tolist() == [2, 1, 3, 4]
    c = result.correlations[0]
    assert (c.a, c.b, c.n) == ("cheap", "full", 4)
    assert (c.spearman, c.kendall) == pytest.approx((SPEARMAN, KENDALL))
    assert c.spearman_seed_ci == pytest.approx((SPEARMAN, SPEARMAN))  # see compare_stores: seeds never reorder
    assert c.kendall_seed_ci == pytest.approx((KENDALL, KENDALL))
    assert c.same_best is False  # cheap's best R:L1 is full's second


def test_the_cli_table_shows_the_shared_architectures_and_the_correlation_line(one):
    result = runner.invoke(app, ["compare", "cheap", "full", "--db", one, "--resamples", "500"])
    assert result.exit_code == 0, result.output
    out = flat(result.stdout)
    assert "4 shared architectures, matched by short name without width (cheap w=0.25; full w=1)" in out
    assert "R:L3 55.00% [52.52, 57.48] 3 search 2 88.00% [85.52, 90.48] 3 confirm 1" in out
    assert "only in cheap (1): X:L3" in out and "only in full (1): R:L2" in out
    assert "Spearman rho +0.80" in out and "Kendall tau +0.67" in out
    assert "+0.80 to +0.80 over seeds" in out
    assert "same best: no (cheap: R:L1; full: R:L3). Percentile bootstrap, 500 resamples each, seed 0." in out


@pytest.mark.parametrize("what,columns", [("architectures", ARCHITECTURE_COLUMNS), ("correlations", CORRELATION_COLUMNS)])
@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_each_format_round_trips_the_comparison_frame(one, tmp_path, fmt, what, columns):
    want = read_comparison(parse_sources(["cheap", "full"], one), resamples=300)
    want = want.architectures_frame() if what == "architectures" else want.correlations_frame()
    path = tmp_path / f"out.{fmt}"
    result = runner.invoke(app, ["compare", "cheap", "full", "--db", one, "--resamples", "300", "--what", what,
                                 "--format", fmt, "-o", str(path)])
    assert result.exit_code == 0, result.output
    got = (pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path) if fmt == "csv"
           else pd.read_json(io.StringIO(path.read_text()), orient="records"))
    assert list(got.columns) == list(columns)
    pd.testing.assert_frame_equal(got.astype(want.dtypes.to_dict()), want, check_dtype=fmt == "parquet")


# ---- across two stores ------------------------------------------------------------------------


def test_the_same_name_in_two_stores_is_compared_by_name_at_store(two):
    a, b = two
    result = runner.invoke(app, ["compare", f"page_post4@{a}", f"page_post4@{b}", "--resamples", "300",
                                 "--what", "correlations", "--format", "json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert (row["experiment_a"], row["experiment_b"]) == (f"page_post4@{a}", f"page_post4@{b}")
    assert (row["architectures"], row["match"]) == (4, "name")
    assert (row["spearman"], row["kendall"]) == pytest.approx((SPEARMAN, KENDALL))


def test_a_default_db_serves_the_names_without_a_store(two):
    a, b = two
    comparison = read_comparison(parse_sources(["page_post4", f"page_post4@{b}"], a), resamples=200)
    assert comparison.labels == [f"page_post4@{a}", f"page_post4@{b}"]
    assert comparison.keys == SHARED


# ---- matching -----------------------------------------------------------------------------------


def test_match_hash_finds_nothing_across_widths_and_says_to_try_name(one):
    result = runner.invoke(app, ["compare", "cheap", "full", "--db", one, "--match", "hash"])
    assert result.exit_code == 2
    assert "share 0 architectures (matched by hash; if their widths differ, try --match name)" in flat(result.stderr)


def test_width_searched_inside_an_experiment_makes_auto_match_by_hash():
    def entry(name, mean):
        return Entry(arch(name.split()[0], float(name.split("w=")[1])).hash, name, "search", summarize([mean]), (mean,))

    narrow = [entry("R:L1 w=0.25", 0.6), entry("R:L3 w=0.25", 0.5), entry("base w=0.25", 0.4)]
    searched = [entry("R:L1 w=0.25", 0.7), entry("R:L1 w=0.5", 0.75), entry("R:L3 w=0.25", 0.6),
                entry("base w=0.25", 0.5)]
    result = compare(sources("narrow", "searched"), [narrow, searched], resamples=200)
    assert result.match == "hash"  # R:L1 at w=0.25 and at w=0.5 in one experiment: a name would be ambiguous
    assert result.keys == [e.arch_hash for e in narrow]
    assert result.only == {"narrow": [], "searched": [searched[1].arch_hash]}
    with pytest.raises(ConfigError, match="'R:L1' names several architectures of one experiment"):
        compare(sources("narrow", "searched"), [narrow, searched], match="name")


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (["cheap"], "needs at least two experiments, but got 1"),
    (["cheap", "cheap"], "is given twice"),
    (["cheap", "nope"], "no experiment named 'nope' in the store; experiments: cheap, full"),
    (["cheap", "full@"], "cannot read 'full@': give NAME or NAME@STORE"),
    (["cheap", "full", "--resamples", "10"], "--resamples must be at least 100"),
    (["cheap", "full", "--format", "parquet"], "--format parquet writes a binary file"),
])
def test_bad_input_exits_2_naming_the_problem(one, args, message):
    result = runner.invoke(app, ["compare", *args, "--db", one])
    assert result.exit_code == 2, result.output
    assert message in flat(result.stderr)


def test_an_unknown_store_exits_2(one, tmp_path):
    result = runner.invoke(app, ["compare", "cheap", f"full@{tmp_path / 'missing.db'}", "--db", one])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "missing.db").exists()


def test_fewer_than_three_shared_prints_the_table_then_exits_2(tmp_path):
    url = f"sqlite:///{tmp_path / 'small.db'}"
    write_experiment(url, "cheap", CHEAP, 0.25)
    write_experiment(url, "pair", {"search": {"R:L1": (0.7, 0.72), "base": (0.6, 0.61)}}, 1.0)
    result = runner.invoke(app, ["compare", "cheap", "pair", "--db", url])
    assert result.exit_code == 2
    assert "2 shared architectures" in flat(result.stdout)  # the table is still there
    assert "R:L1" in result.stdout and "Spearman" not in result.stdout
    assert "cheap and pair share 2 architectures (matched by name" in flat(result.stderr)
    assert "a rank correlation needs at least 3" in flat(result.stderr)
