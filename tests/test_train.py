"""The trainer: schedule, reporting, seeding, divergence, learning on real data."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from nas.data.config import DataConfig
from nas.data.tensors import load_data
from nas.errors import ConfigError
from nas.models import ArchConfig, parse_short_name
from nas.training.loop import train, train_epochs
from nas.training.recipe import Recipe, SlimmableConfig, lr_at
from nas.training.steps import SandwichStep, exit_step, make_step, plain_step
from tests.cifar_fixture import write_cifar

TINY_ARCH = ArchConfig.from_dict({"width": 0.125, "L1": {"residual": 1}})
FAST = Recipe(epochs=2, batch_size=32, eval_batch_size=64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = write_cifar(tmp_path_factory.mktemp("cifar"), n_train_per_class=20, n_test_per_class=5)
    cfg = DataConfig(root=str(root), val_size=50)
    return load_data(cfg), cfg


def test_lr_warms_up_linearly_then_decays_to_zero():
    recipe = Recipe(lr=0.4, warmup=0.25)
    assert lr_at(0, 100, recipe) == 0.0
    assert lr_at(10, 100, recipe) == pytest.approx(0.16)
    assert lr_at(25, 100, recipe) == pytest.approx(0.4)
    assert lr_at(60, 100, recipe) == pytest.approx(0.4 * 40 / 75)
    assert lr_at(100, 100, recipe) == 0.0


def test_every_epoch_is_reported_with_its_metrics(tiny):
    data, cfg = tiny
    seen = []
    result = train(TINY_ARCH, FAST, data, cfg, seed=0, on_epoch=seen.append)
    assert result.status == "completed"
    assert [m.epoch for m in seen] == [0, 1] and seen == result.epochs
    for m in seen:
        assert math.isfinite(m.train_loss) and 0 <= m.train_acc <= 1 and 0 <= m.val_acc <= 1
        assert m.epoch_seconds > 0
    assert seen[1].cumulative_seconds == pytest.approx(seen[0].epoch_seconds + seen[1].epoch_seconds)
    assert result.train_seconds == seen[-1].cumulative_seconds


def test_test_accuracy_is_measured_after_the_last_epoch_only_by_default(tiny):
    data, cfg = tiny
    result = train(TINY_ARCH, FAST, data, cfg)
    assert [m.test_acc is None for m in result.epochs] == [True, False]
    every = train(TINY_ARCH, replace(FAST, test_every_epoch=True), data, cfg)
    assert all(m.test_acc is not None for m in every.epochs)


def test_without_a_val_split_test_accuracy_is_the_curve(tmp_path):
    root = write_cifar(tmp_path, n_train_per_class=10, n_test_per_class=3)
    cfg = DataConfig(root=str(root), val_size=0)
    result = train(TINY_ARCH, FAST, load_data(cfg), cfg)
    assert all(m.val_acc is None and m.test_acc is not None for m in result.epochs)


def test_same_seed_same_result_other_seed_other_result(tiny):
    data, cfg = tiny
    a = train(TINY_ARCH, FAST, data, cfg, seed=7)
    b = train(TINY_ARCH, FAST, data, cfg, seed=7)
    c = train(TINY_ARCH, FAST, data, cfg, seed=8)
    strip = lambda r: [(m.train_loss, m.train_acc, m.val_acc, m.test_acc) for m in r.epochs]  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


# One loop, three steps: (arch, recipe) of each kind of training.
STEP_KINDS = {
    "plain": (TINY_ARCH, FAST),
    "early exits": (parse_short_name("R:L1+L3 E:L1+L2 w=0.125"), FAST),
    "sandwich": (TINY_ARCH, replace(FAST, slimmable=SlimmableConfig(min_width=0.25, samples=3))),
}


def test_the_step_is_chosen_once_from_the_arch_and_the_recipe():
    chosen = {kind: make_step(arch, recipe, seed=0) for kind, (arch, recipe) in STEP_KINDS.items()}
    assert chosen["plain"].func is plain_step and chosen["early exits"].func is exit_step
    assert chosen["early exits"].keywords["side_weights"] == (1.0, 1.0)
    assert isinstance(chosen["sandwich"], SandwichStep)


@pytest.mark.parametrize("kind", list(STEP_KINDS))
def test_the_loop_trains_every_step_kind_and_a_seed_reproduces_it(tiny, kind):
    data, cfg = tiny
    arch, recipe = STEP_KINDS[kind]
    metrics = lambda r: [{**m.to_dict(), "epoch_seconds": 0, "cumulative_seconds": 0} for m in r.epochs]  # noqa: E731
    a = train(arch, recipe, data, cfg, seed=5)
    b = train(arch, recipe, data, cfg, seed=5)
    assert a.status == "completed" and len(a.epochs) == recipe.epochs
    assert all(math.isfinite(m.train_loss) and 0 <= m.val_acc <= 1 for m in a.epochs)
    assert metrics(a) == metrics(b)  # bit-identical on CPU, every field but the seconds
    assert torch.equal(next(a.model.parameters()), next(b.model.parameters()))
    if kind == "sandwich":
        assert a.step_widths == b.step_widths and len(a.step_widths) == recipe.epochs * (150 // 32)


def test_a_non_finite_loss_ends_the_trial_as_diverged_without_raising(tiny):
    data, cfg = tiny
    poisoned = replace(data, train_x=data.train_x.clone())
    poisoned.train_x[:] = float("nan")
    seen = []
    result = train(TINY_ARCH, replace(FAST, epochs=3), poisoned, cfg, on_epoch=seen.append)
    assert result.status == "diverged"
    assert len(result.epochs) == 1 and len(seen) == 1  # stopped at the epoch it diverged
    assert math.isnan(result.final.train_loss) and result.final.test_acc is None


def test_a_callback_returning_true_stops_training(tiny):
    data, cfg = tiny
    result = train(TINY_ARCH, replace(FAST, epochs=4), data, cfg, on_epoch=lambda m: m.epoch == 1)
    assert result.status == "stopped" and len(result.epochs) == 2


def test_threads_are_set_for_the_trial_and_restored(tiny):
    data, cfg = tiny
    before = torch.get_num_threads()
    during = []
    train(TINY_ARCH, replace(FAST, epochs=1), data, cfg, threads=1,
          on_epoch=lambda m: during.append(torch.get_num_threads()))
    assert during == [1] and torch.get_num_threads() == before


def test_train_epochs_yields_every_epoch_and_stops_where_the_caller_stops(tiny):
    data, cfg = tiny
    before = torch.get_num_threads()
    recipe = replace(FAST, epochs=3)
    epochs = train_epochs(TINY_ARCH, recipe, data, cfg, seed=3, threads=1)
    first = next(epochs)
    assert [m.epoch for m in first.epochs] == [0] and torch.get_num_threads() == 1
    epochs.close()  # a pruned trial: no more epochs, threads restored at once
    assert len(first.epochs) == 1 and first.status == "completed" and torch.get_num_threads() == before
    whole = train(TINY_ARCH, recipe, data, cfg, seed=3, threads=1)
    assert first.epochs[0].train_loss == whole.epochs[0].train_loss and len(whole.epochs) == 3


def test_train_epochs_stops_after_the_epoch_that_diverged(tiny):
    data, cfg = tiny
    poisoned = replace(data, train_x=torch.full_like(data.train_x, float("nan")))
    results = list(train_epochs(TINY_ARCH, replace(FAST, epochs=3), poisoned, cfg))
    assert len(results) == 1 and results[0].status == "diverged"


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [("epochs", 0, "epochs must be at least 1"), ("batch_size", 1, "batch_size must be at least 2"),
     ("warmup", 1.0, "warmup must be in [0, 1)"), ("lr", -1.0, "lr must be positive")],
)
def test_invalid_recipes_name_the_field_and_rule(field, value, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        Recipe(**{field: value})


def test_unknown_recipe_keys_are_rejected_with_the_key_path():
    with pytest.raises(ConfigError, match=r"recipe\.epoch: unknown key"):
        Recipe.from_dict({"epoch": 3})


@pytest.mark.slow
def test_learns_well_above_chance_in_one_epoch_on_real_cifar10(real_data_root):
    # 4,000 real images, one epoch of the fast recipe: chance is 10%.
    cfg = DataConfig(root=str(real_data_root), train_subset=4000, val_size=1000)
    arch = ArchConfig.from_dict({"width": 0.25, "L1": {"residual": 1}, "L3": {"residual": 1}})
    result = train(arch, Recipe(epochs=1, batch_size=128, lr=0.2), load_data(cfg), cfg, seed=0)
    assert result.status == "completed"
    assert result.final.val_acc > 0.25, result.final
    assert result.final.test_acc > 0.25, result.final
