"""Page's timeline as a shipped experiment (issue 28): `search_spaces/page_tricks.yaml` is his
training tricks on Residual:L1+L3 in his order, each added to the last, and its full set
ablates leave-one-out, one variant per trick (`nas ablate --only tricks`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.ablation.plan import cumulative_chain, plan_variants
from nas.config.experiment import load_experiment
from nas.errors import ConfigError
from nas.models import parse_short_name

YAML = Path(__file__).resolve().parents[1] / "search_spaces" / "page_tricks.yaml"


def page_order(ema_decay: float) -> list[tuple[str, object]]:
    """Page's posts 5-8 after label smoothing: 64 s pool before BN, 52 CELU, 46 ghost BN, 43 frozen
    BN scales, 36 whitening, 33.5 EMA, 26 flip TTA."""
    return [("tricks.pool_before_bn", True), ("tricks.activation", "celu"), ("tricks.ghost_batch", 32),
            ("tricks.freeze_bn_scale", True), ("tricks.whiten", True), ("tricks.ema_decay", ema_decay),
            ("tricks.tta", "flip")]


def grid_archs(spec):
    return [spec.space.arch_from_params(point) for point in spec.space.grid()]


@pytest.mark.parametrize(("budget", "width", "ema_decay"), [(None, 1.0, 0.998), ("cpu", 0.25, 0.9)])
def test_the_steps_are_pages_order_each_trick_added_to_the_last(budget, width, ema_decay):
    spec = load_experiment(YAML, budget)
    expected = cumulative_chain(parse_short_name("R:L1+L3").replace(width=width), page_order(ema_decay))
    assert len(expected) == 8
    assert sorted(a.hash for a in grid_archs(spec)) == sorted(a.hash for a in expected)
    assert spec.search.sampler == "grid" and spec.search.pruner.kind == "none" and spec.search.repeats >= 3


def test_the_cpu_budget_is_cifar_fasts_cpu_scale():
    spec = load_experiment(YAML, "cpu")
    assert (spec.dataset.train_subset, spec.dataset.val_size, spec.recipe.epochs) == (5000, 5000, 4)
    assert spec.resources.gpus_per_trial == 0


@pytest.mark.parametrize(("budget", "ema_decay"), [(None, 0.998), ("cpu", 0.9)])
def test_the_full_set_ablates_leave_one_out_one_variant_per_trick(budget, ema_decay):
    spec = load_experiment(YAML, budget)
    full = max(grid_archs(spec), key=lambda a: len(a.short_name()))  # the last step: every trick
    variants = plan_variants(full, spec.space, only="tricks")
    keys = [key for key, _ in page_order(ema_decay)]
    assert sorted(v.key for v in variants) == sorted(keys)  # one each, nothing else (no ghost 32 -> 31)
    assert all(v.move == "off" for v in variants)
    for variant in variants:  # the full set with exactly that trick at its default
        flat, ref = variant.arch.to_flat(), full.to_flat()
        assert [k for k in flat if flat[k] != ref[k]] == [variant.key]


def test_without_only_the_plan_also_switches_the_residual_blocks_off():
    spec = load_experiment(YAML, "cpu")
    full = max(grid_archs(spec), key=lambda a: len(a.short_name()))
    keys = [v.key for v in plan_variants(full, spec.space)]
    assert {"L1.residual", "L3.residual"} <= set(keys) and len(keys) == len(set(keys)) == 9


def test_a_tricks_integer_is_a_setting_not_a_count_that_moves_down():
    variants = plan_variants(parse_short_name("R:L1x2 t.ghost_batch=32"), load_experiment(YAML, "cpu").space)
    assert [(v.key, v.after) for v in variants if v.key == "tricks.ghost_batch"] == [("tricks.ghost_batch", 0)]
    assert ("L1.residual", "down", 1) in {(v.key, v.move, v.after) for v in variants}  # a stage's count still moves


def test_a_cumulative_step_that_changes_nothing_is_refused():
    with pytest.raises(ConfigError, match="changes nothing"):
        cumulative_chain(parse_short_name("R:L1+L3"), [("tricks.whiten", True), ("tricks.whiten", True)])


CIFAR_FAST = YAML.with_name("cifar_fast.yaml")


def test_cifar_fasts_page26_budget_is_pages_last_configuration_in_every_sampled_trial():
    """The full recipe's option (issue 28, item 4): Page's final set (his last step, EMA and flip
    TTA included) on every architecture the search samples, 10 epochs; the rest as the full search."""
    import optuna
    import torch

    from nas.models import build_model

    full, spec = load_experiment(CIFAR_FAST), load_experiment(CIFAR_FAST, "page26")
    assert spec.recipe.epochs == 10 and full.recipe.epochs == 24
    assert spec.resources.gpus_per_trial == 1 and spec.dataset.train_subset is None  # a GPU budget
    assert spec.recipe.batch_size % 32 == 0  # the ghost batches divide it
    page = dict(page_order(0.998))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    searched = set()
    for _ in range(40):
        arch = spec.space.suggest(study.ask())
        flat = arch.to_flat()
        assert {k: flat[k] for k in page} == page
        searched.add((arch.L1.residual, arch.L3.residual, arch.drop.kind))
    assert len(searched) > 4  # the architecture is still searched
    # every kind of block the search can sample builds and runs with the tricks on (width 1/8)
    torch.manual_seed(0)
    for _ in range(6):
        arch = spec.space.suggest(study.ask()).replace(width=0.125)
        model = build_model(arch).train()
        assert model(torch.randn(64, 3, 32, 32)).shape == (64, 10)
