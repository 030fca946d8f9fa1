"""Pruning that respects the recipe: never inside the LR warm-up unless the YAML says so,
and the per-epoch rank correlation that says from which epoch pruning is safe."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.config.experiment import PrunerSpec, load_experiment
from nas.db import Store
from nas.db.schema import Phase
from nas.errors import ConfigError
from nas.models import parse_short_name
from nas.search.controller import SearchController
from nas.search.curve_ranks import BOOTSTRAP_MAX_TRIALS, rank_correlations
from nas.search.pruning import (
    NoiseMargin,
    PruneReason,
    first_prunable_epoch,
    pruning_gate,
    with_warmup,
)
from nas.stats import fisher_interval, spearman
from nas.training.recipe import Recipe
from nas.trials.experiment import open_experiment


@pytest.mark.parametrize(("epochs", "warmup", "first"), [
    (24, 0.2, 4),  # warm-up 4.8 epochs: epoch 5 (index 4) is the first to end after it
    (4, 0.2, 0),  # 0.8 epochs: the first epoch already ends after it
    (10, 0.5, 4),  # exactly 5 epochs: the 5th epoch's end is the warm-up's end
    (10, 0.0, 0),
])
def test_the_first_prunable_epoch_ends_after_the_warm_up(epochs, warmup, first):
    assert first_prunable_epoch(Recipe(epochs=epochs, warmup=warmup)) == first


def test_the_yaml_n_warmup_steps_wins_over_the_recipe_even_inside_a_patient_pruner():
    recipe = Recipe(epochs=24)
    assert pruning_gate(PrunerSpec("median"), recipe) == 4
    assert pruning_gate(PrunerSpec("median", options=(("n_warmup_steps", 1),)), recipe) == 1
    patient = PrunerSpec("patient", options=(("patience", 2),),
                         wrapped=PrunerSpec("percentile", options=(("n_warmup_steps", 2), ("percentile", 25.0))))
    assert pruning_gate(patient, recipe) == 2
    assert pruning_gate(PrunerSpec("hyperband"), recipe) == 4  # no such option: the gate alone


def test_with_warmup_fills_n_warmup_steps_only_where_the_kind_takes_it_and_it_is_unset():
    recipe = Recipe(epochs=24)
    assert dict(with_warmup(PrunerSpec("median"), recipe).options) == {"n_warmup_steps": 4}
    assert dict(with_warmup(PrunerSpec("median", options=(("n_warmup_steps", 1),)), recipe).options) == \
        {"n_warmup_steps": 1}
    assert dict(with_warmup(PrunerSpec("successive_halving"), recipe).options) == {}
    wrapped = with_warmup(PrunerSpec("patient", options=(("patience", 1),), wrapped=PrunerSpec("median")), recipe)
    assert dict(wrapped.wrapped.options) == {"n_warmup_steps": 4}


def _controller(tmp_path, pruner: dict, finals=None, curve=lambda final: final) -> SearchController:
    finals = RANKED if finals is None else finals
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "warm.yaml"
    path.write_text(json.dumps({
        "name": "warm", "recipe": {"epochs": 10, "warmup": 0.4},  # warm-up ends after epoch 4 (index 3)
        "space": {"width": {"fixed": 0.125}, "L1.residual": {"choice": [0, 1]}},
        "search": {"sampler": "random", "pruner": pruner},
    }))
    spec = load_experiment(path)
    store = Store.open(f"sqlite:///{tmp_path / 'nas.db'}")
    controller = SearchController(spec, store, open_experiment(store, spec), f"sqlite:///{tmp_path / 'nas.db'}",
                                  costs=lambda arch: (1, 1))
    for i, final in enumerate(finals):  # finished trials far above anything the new trial reports
        controller.study.add_trial(optuna.trial.create_trial(
            value=final, params={"L1.residual": 1}, user_attrs={"arch_hash": f"a{i // 4}"},  # 4 seeds each
            distributions={"L1.residual": optuna.distributions.CategoricalDistribution([0, 1])},
            intermediate_values={e: curve(final) for e in range(10)}))
    return controller


# 8 finished trials around 0.9 (2 architectures x 4 seeds) whose every epoch ranks their finals
# (nas's rank gate opens)
RANKED = tuple(0.895 + 0.002 * i for i in range(8))


def _pruned_at(controller: SearchController) -> int | None:
    plan = controller.ask()
    for epoch in range(10):
        if controller.should_prune(plan, {"epoch": epoch, "val_acc": 0.1}):
            return epoch
    return None


def test_the_default_pruner_never_prunes_inside_the_warm_up(tmp_path):
    controller = _controller(tmp_path, {"kind": "median", "n_startup_trials": 0})
    assert controller.prune_from == 3
    assert _pruned_at(controller) == 3  # far below the median from the start, stopped after the warm-up


def test_a_yaml_n_warmup_steps_lets_the_pruner_decide_earlier(tmp_path):
    controller = _controller(tmp_path, {"kind": "median", "n_startup_trials": 0, "n_warmup_steps": 1})
    assert _pruned_at(controller) == 1


def test_the_main_study_labels_its_objectives(tmp_path):
    controller = _controller(tmp_path, {"kind": "none"})
    assert controller.study.metric_names == ["val_acc"]


# ---- is pruning safe? ----------------------------------------------------------------------


def test_rank_correlations_agree_with_a_hand_worked_example():
    curves = [[1, 4, 1], [2, 3, 1], [3, 2, 2], [4, 1, 3]]
    finals = [10, 20, 30, 40]
    rows = rank_correlations(curves, finals, samples=200)
    assert [r.trials for r in rows] == [4, 4, 4]
    assert rows[0].rho == pytest.approx(1.0) and rows[1].rho == pytest.approx(-1.0)
    # ties share average ranks: x ranks (1.5, 1.5, 3, 4), y ranks (1, 2, 3, 4):
    # sum dx*dy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5 -> rho = 4.5 / sqrt(22.5)
    assert rows[2].rho == pytest.approx(4.5 / math.sqrt(22.5))
    assert (rows[0].ci_low, rows[0].ci_high) == pytest.approx((1.0, 1.0))  # every resample keeps the order
    assert rows[2].ci_low <= rows[2].rho <= rows[2].ci_high


def _correlated(n: int, noise: float, seed: int = 1) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x.tolist(), (x + noise * rng.normal(size=n)).tolist()


def test_the_bootstrap_interval_is_resampling_one_pair_set_at_a_time():
    x, y = _correlated(60, 1.0)
    rng, draws = np.random.default_rng(0), []
    for _ in range(300):
        pick = rng.integers(0, len(x), len(x))
        draws.append(spearman([x[i] for i in pick], [y[i] for i in pick]))
    row = rank_correlations([[v] for v in x], y, samples=300)[0]
    assert (row.ci_low, row.ci_high) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))


@pytest.mark.parametrize("noise", [0.3, 1.0, 3.0])
def test_the_fisher_interval_agrees_with_the_bootstrap_where_it_takes_over(noise):
    x, y = _correlated(BOOTSTRAP_MAX_TRIALS, noise)
    row = rank_correlations([[v] for v in x], y)[0]  # the bootstrap, at its largest size
    assert fisher_interval(row.rho, row.trials) == pytest.approx((row.ci_low, row.ci_high), abs=0.01)


def test_many_trials_get_the_fisher_interval():
    x, y = _correlated(BOOTSTRAP_MAX_TRIALS + 1, 1.0)
    row = rank_correlations([[v] for v in x], y)[0]
    assert (row.ci_low, row.ci_high) == fisher_interval(row.rho, BOOTSTRAP_MAX_TRIALS + 1)


def test_rank_correlation_needs_three_trials_and_skips_unmeasured_epochs():
    rows = rank_correlations([[0.1, None], [0.2, 0.3]], [0.5, 0.6])
    assert all(math.isnan(r.rho) and math.isnan(r.ci_low) for r in rows)
    rows = rank_correlations([[0.1, None], [0.2, 0.3], [0.3, 0.1], [0.4, 0.2]], [1, 2, 3, 4])
    assert rows[1].trials == 3


def test_nas_status_reports_the_rank_correlation_per_epoch(tmp_path):
    db = tmp_path / "nas.db"
    arch = parse_short_name("base w=0.125")
    with Store.open(str(db)) as store:
        exp_id = store.ensure_experiment("corr")
        store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), 1, 1)
        for seed, (early, final) in enumerate([(0.1, 0.3), (0.2, 0.5), (0.3, 0.4), (0.4, 0.6)]):
            trial = store.start_trial(exp_id, arch.hash, seed, Phase.SEARCH, epochs_planned=2, recipe_json="{}",
                                      device="cpu", code_version="test")
            for epoch, acc in enumerate((early, final)):
                store.record_epoch(trial, epoch, train_loss=1.0, train_acc=acc, val_acc=acc, test_acc=None,
                                   epoch_seconds=1.0, cumulative_seconds=epoch + 1.0)
            store.finish_trial(trial, "completed")
    result = CliRunner().invoke(app, ["status", "corr", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "is pruning safe?" in result.output
    # epoch 1: early (0.1, 0.2, 0.3, 0.4) vs final (0.3, 0.5, 0.4, 0.6): ranks (1, 2, 3, 4) vs (1, 3, 2, 4)
    # -> rho = 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.8
    assert "+0.80" in result.output and "+1.00" in result.output


# ---- the noise margin ----------------------------------------------------------------------


def test_the_margin_is_nas_s_own_pruner_option_and_optuna_never_sees_it(tmp_path):
    spec = PrunerSpec("median", options=(("margin", 2.0), ("n_startup_trials", 1)))
    assert isinstance(spec.build(), optuna.pruners.MedianPruner)  # built without `margin`
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"space": {"L1.residual": {"choice": [0, 1]}},
                                "search": {"pruner": {"kind": "hyperband", "margin": 1.0}}}))
    with pytest.raises(ConfigError, match=r"search\.pruner\.margin: not an option of the hyperband pruner"):
        load_experiment(path)
    path.write_text(json.dumps({"space": {"L1.residual": {"choice": [0, 1]}},
                                "search": {"pruner": {"kind": "median", "margin": -1}}}))
    with pytest.raises(ConfigError, match=r"search\.pruner\.margin: must be >= 0"):
        load_experiment(path)


def _done(by_arch: dict[str, list[float]], finals=None) -> list[optuna.trial.FrozenTrial]:
    """Completed trials with one value at epoch 0, grouped into architectures (their seeds)."""
    trials = []
    for arch, values in by_arch.items():
        for value in values:
            final = value if finals is None else finals[len(trials)]
            trials.append(optuna.trial.create_trial(value=final, intermediate_values={0: value},
                                                    user_attrs={"arch_hash": arch}))
    return trials


def test_the_noise_is_the_seeds_pooled_spread_alone_with_a_t_quantile_for_its_dof():
    rule = NoiseMargin(percentile=50.0, margin=2.0, rank_gate=False)
    # three architectures with two seeds each (3 dof), worked by hand:
    # a: 0.40, 0.44 -> m2 0.0008; b: 0.30, 0.32 -> 0.0002; d: 0.50, 0.52 -> 0.0002; pooled var 0.0012 / 3
    by_arch = {"a": [0.40, 0.44], "b": [0.30, 0.32], "d": [0.50, 0.52], "c": [0.45]}
    reason = rule.decide(_done(by_arch), 0, 0.10, maximize=True)
    assert reason.seed_dof == 3 and reason.seed_sd == pytest.approx(0.02)
    # t with 3 dof at Phi(2) = 0.97725 is 3.3068 (a z of 2 would be a 7% tail, not 2.3%); no binomial term
    assert reason.gap == pytest.approx(3.3068 * 0.02, rel=1e-4)
    assert reason.threshold == pytest.approx(0.44)  # the median of the seven values
    assert rule.decide(_done(by_arch), 0, 0.44 - 3.3068 * 0.02 + 1e-4, maximize=True) is None  # just within
    assert rule.decide(_done(by_arch), 0, 0.44 - 3.3068 * 0.02 - 1e-4, maximize=True) is not None  # just beyond


def test_without_enough_seed_repeats_the_noise_is_unknown_and_nothing_is_pruned():
    rule = NoiseMargin(percentile=50.0, margin=2.0, rank_gate=False)
    assert rule.decide(_done({"a": [0.40], "b": [0.42], "c": [0.44]}), 0, 0.0, maximize=True) is None
    two_dof = {"a": [0.40, 0.44], "b": [0.30, 0.32], "c": [0.5]}  # under MIN_SEED_DOF = 3
    assert rule.decide(_done(two_dof), 0, 0.0, maximize=True) is None


def test_the_margin_s_one_sided_error_holds_in_simulation_where_a_z_margin_s_did_not():
    """A trial whose true value is the threshold, seed noise sigma, the spread known from a
    pilot (3 architectures x 2 seeds): stopped in Phi(-2) = 2.3% of draws, through
    `NoiseMargin.decide`; 2 sd-hat (the old rule) stops 7.0% (a t with 3 dof)."""
    rng = np.random.default_rng(5)
    rule = NoiseMargin(percentile=50.0, margin=2.0, rank_gate=False)
    draws, stopped, z_stopped = 4000, 0, 0
    for _ in range(draws):
        means = rng.normal(0.5, 0.05, 9)  # 9 architectures, 3 of them on 2 seeds
        by_arch = {f"a{i}": list(m + 0.01 * rng.standard_normal(2 if i < 3 else 1)) for i, m in enumerate(means)}
        threshold = float(np.median([v for values in by_arch.values() for v in values]))
        value = threshold + 0.01 * rng.standard_normal()
        reason = rule.decide(_done(by_arch), 0, value, maximize=True)
        stopped += reason is not None
        sd = math.sqrt(sum((v[0] - v[1]) ** 2 / 2 for v in list(by_arch.values())[:3]) / 3)
        z_stopped += value < threshold - 2 * sd
    se = math.sqrt(0.02275 * (1 - 0.02275) / draws)
    assert abs(stopped / draws - 0.02275) < 3 * se
    assert z_stopped / draws > 0.05  # what the margin as 2 sd-hat would have done


def test_a_prune_reason_round_trips_as_json_and_reads_as_a_sentence():
    reason = PruneReason("margin", 2, 0.412, 0.479, 50.0, 9, 2.0, 0.009, 3, 0.0298, 0.71, 0.21, 9, "PercentilePruner")
    assert PruneReason.from_json(reason.to_json()) == reason
    assert PruneReason.from_json("not json") is None and PruneReason.from_json(None) is None
    text = reason.text()
    assert text.startswith("epoch 3: 41.2% < median 47.9% - 3.0 pts") and "3 dof" in text and "rho 0.71" in text
    bare = PruneReason("optuna", 0, 0.1, pruner="HyperbandPruner")
    assert PruneReason.from_json(bare.to_json()) == bare and "HyperbandPruner" in bare.text()


def test_curve_ranks_finals_on_hand_worked_examples():
    from nas.search.pruning import MIN_RANK_TRIALS, curve_ranks_finals

    assert MIN_RANK_TRIALS == 6
    finals = [0.30, 0.35, 0.40, 0.45, 0.50, 0.55]
    assert curve_ranks_finals([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], finals)  # rho 1
    assert not curve_ranks_finals([0.6, 0.5, 0.4, 0.3, 0.2, 0.1], finals)  # rho -1: ranks them backwards
    assert not curve_ranks_finals([0.1, 0.2, 0.3, 0.4, 0.5], finals[:5])  # 5 trials: too few to tell
    # rho 0.8857 (one swap: ranks 2,1,3,4,6,5): z = atanh(0.8857) = 1.404 > 1.96 * sqrt(1.06 / 3) = 1.165
    assert curve_ranks_finals([0.2, 0.1, 0.3, 0.4, 0.6, 0.5], finals)
    # rho 0.7714 (ranks 3,1,2,4,6,5): z = 1.024 < 1.165, not yet beyond chance
    assert not curve_ranks_finals([0.3, 0.1, 0.2, 0.4, 0.6, 0.5], finals)


def test_the_search_never_prunes_at_an_epoch_whose_curve_does_not_rank_the_finished_trials(tmp_path):
    pruner = {"kind": "median", "n_startup_trials": 0, "n_warmup_steps": 0}
    # late starters: the finished trials' curves rank their finals backwards, so a curve far below
    # says nothing yet; Optuna alone, margin 0, would prune it
    backwards = _controller(tmp_path / "b", pruner, curve=lambda final: 1.8 - final)
    assert _pruned_at(backwards) is None
    too_few = _controller(tmp_path / "f", pruner, finals=RANKED[:5])  # 5 finished (3 seed dof): the gate stays shut
    assert _pruned_at(too_few) is None
    assert _pruned_at(_controller(tmp_path / "r", pruner)) == 0  # ranked: pruned at once
    optuna_rule = _controller(tmp_path / "o", {**pruner, "margin": 0}, curve=lambda final: 1.8 - final)
    assert _pruned_at(optuna_rule) == 0


def test_the_search_keeps_a_trial_optuna_would_prune_when_it_is_within_the_noise(tmp_path):
    controller = _controller(tmp_path, {"kind": "median", "n_startup_trials": 0, "n_warmup_steps": 0})
    plan = controller.ask()
    # the finished trials are 2 architectures x 4 seeds 0.002 apart: seed sd 0.00258 (6 dof), gap
    # 2.5165 x 0.00258 = 0.0065 below the median 0.902: 0.899 is below it (Optuna prunes) but within
    assert not controller.should_prune(plan, {"epoch": 0, "val_acc": 0.899})
    plan = controller.ask()
    assert controller.should_prune(plan, {"epoch": 0, "val_acc": 0.80})
    reason = PruneReason.from_json(plan.prune_reason)
    assert reason.rule == "margin" and reason.seed_dof == 6
    assert reason.gap == pytest.approx(2.5165 * 0.0025820, rel=1e-3)
    exact = _controller(tmp_path / "m0", {"kind": "median", "n_startup_trials": 0, "n_warmup_steps": 0, "margin": 0})
    plan = exact.ask()
    assert exact.should_prune(plan, {"epoch": 0, "val_acc": 0.899})
    assert PruneReason.from_json(plan.prune_reason).rule == "optuna"
