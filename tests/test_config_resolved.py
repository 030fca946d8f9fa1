"""A stored experiment is rebuilt from its `resolved()` form, without a YAML file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from nas.config.experiment import ExperimentSpec, list_budgets, load_experiment
from nas.data.config import DataConfig
from nas.errors import ConfigError

SPACES = sorted((Path(__file__).resolve().parent.parent / "search_spaces").glob("*.yaml"))
CASES = [(path, budget) for path in SPACES for budget in [None, *list_budgets(path)]]


@pytest.mark.parametrize(("path", "budget"), CASES, ids=[f"{p.name}:{b}" for p, b in CASES])
def test_from_resolved_gives_back_the_spec_of_every_shipped_space(path, budget):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a space that selects on test_acc warns; not the point here
        spec = load_experiment(path, budget)
        stored = json.loads(json.dumps(spec.resolved()))  # as the store keeps it
        rebuilt = ExperimentSpec.from_resolved(stored, source=spec.path, source_text=spec.source_text)
    assert rebuilt == spec
    assert json.dumps(rebuilt.resolved()) == json.dumps(spec.resolved())


def test_the_dataset_is_a_data_config_and_resolves_with_its_name_first():
    spec = load_experiment(SPACES[0].parent / "cifar_fast.yaml", "cpu")
    assert isinstance(spec.dataset, DataConfig) and spec.dataset_name == "cifar10"
    assert list(spec.resolved()["dataset"]) == ["name", "root", "train_subset", "val_size", "split_seed",
                                                "crop_padding", "flip", "cutout"]


def test_from_resolved_checks_the_config_and_names_where_it_came_from():
    spec = load_experiment(SPACES[0].parent / "cifar_fast.yaml", "cpu")
    stored = spec.resolved()
    stored["recipe"]["epochs"] = 0
    with pytest.raises(ConfigError, match=r"^experiment 'x' \(stored\): recipe.epochs: epochs must be at least 1"):
        ExperimentSpec.from_resolved(stored, source="experiment 'x' (stored)")


def test_from_resolved_keeps_the_budget_it_ran_with_and_the_source_text():
    spec = load_experiment(SPACES[0].parent / "cifar_fast.yaml", "cpu")
    rebuilt = ExperimentSpec.from_resolved(spec.resolved(), source="stored", source_text="text")
    assert (rebuilt.budget, rebuilt.path, rebuilt.source_text) == ("cpu", "stored", "text")
