"""Experiment YAML: validation, budgets, sampling, enumeration, samplers and pruners."""

from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path

import optuna
import pytest

from nas.config.experiment import (
    PrunerSpec,
    SearchSettings,
    list_budgets,
    load_experiment,
)
from nas.config.space import SearchSpace
from nas.data.config import DataConfig
from nas.errors import ConfigError
from nas.models import ArchConfig
from tests.helpers import (
    INVALID_CASES,  # (file, budget, key path, rule) per invalid YAML
)

REPO = Path(__file__).resolve().parent.parent
CIFAR_FAST = REPO / "search_spaces" / "cifar_fast.yaml"
INVALID = Path(__file__).resolve().parent / "invalid_spaces"
BINARY_KEYS = ["L1.extra", "L1.residual", "L2.extra", "L2.residual", "L3.extra", "L3.residual"]
PRIMITIVE_KEYS = ["L1.deformable", "L2.deformable", "L3.deformable", "drop.kind", "drop.rate"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _space(tmp_path: Path, space_yaml: str, extra: str = "") -> SearchSpace:
    path = _write(tmp_path, "space:\n" + textwrap.indent(textwrap.dedent(space_yaml), "  ") + extra)
    return load_experiment(path).space


CONDITIONAL = """\
    L1.residual: {choice: [0, 1]}
    L2.extra: {choice: [0, 1], when: {L1.residual: [1]}}
"""


# ---- invalid files: each names the file and the key path -------------------------------



@pytest.mark.parametrize(("name", "budget", "key_path", "rule"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_invalid_file_raises_config_error_naming_file_and_key_path(name, budget, key_path, rule):
    path = INVALID / name
    with pytest.raises(ConfigError) as info:
        load_experiment(path, budget)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert key_path in message, message
    assert rule in message, message


def test_every_invalid_file_has_a_case():
    assert sorted(p.name for p in INVALID.glob("*.yaml")) == sorted(c[0] for c in INVALID_CASES)


def test_invalid_config_errors_exit_with_code_2():
    with pytest.raises(ConfigError) as info:
        load_experiment(INVALID / "empty_choice.yaml")
    assert info.value.exit_code == 2


def test_missing_file_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_experiment(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"int": [0, 3], "step": 2}, r"space.L1.extra.step: high - low must be a multiple of step"),
        ({"int": [0, 2], "step": 0}, r"space.L1.extra.step: must be a positive integer"),
        ({"int": [1, 4], "log": True, "step": 2}, r"space.L1.extra.step: a log scale cannot have a step"),
        ({"int": [0.0, 2]}, r"space.L1.extra.int: expected \[low, high\] with an integer"),
        ({"choice": [0, [1]]}, r"space.L1.extra.choice\[1\]: must be a single value"),
        ({"choice": [0, 1], "when": "L1.residual"}, r"space.L1.extra.when: expected a mapping"),
        ({"choice": [0, 1], "step": 1}, r"space.L1.extra.step: not an option of a choice entry"),
        (3, r"space.L1.extra: expected an entry such as"),
    ],
)
def test_space_entry_rules(entry, problem):
    with pytest.raises(ConfigError, match=problem):
        SearchSpace.from_dict({"L1.residual": {"choice": [0, 1]}, "L1.extra": entry}, source="x.yaml")


def test_check_buildable_names_the_source_and_the_entry():
    space = SearchSpace.from_dict({"width": {"float": [0.5, 9.0]}})
    with pytest.raises(ConfigError, match=r"^mine.yaml: space.width.float: 9.0 does not give a valid architecture"):
        space.check_buildable("mine.yaml")


def test_a_bad_value_from_a_budget_is_named_by_its_path_in_the_budget(tmp_path):
    path = _write(tmp_path, """\
        space: {width: {fixed: 1.0}}
        budgets:
          huge: {space: {width: {fixed: 16}}}
    """)
    load_experiment(path)  # the file alone is fine
    with pytest.raises(ConfigError, match=r"budgets.huge.space.width.fixed: 16 does not give"):
        load_experiment(path, "huge")


# ---- the shipped experiment and its budget -----------------------------------------------


def test_cifar_fast_loads_with_the_values_written():
    spec = load_experiment(CIFAR_FAST)
    assert spec.name == "cifar_fast" and spec.budget is None
    assert spec.recipe.epochs == 24 and spec.recipe.batch_size == 512
    assert spec.dataset_name == "cifar10" and spec.dataset == DataConfig()
    assert [p.key for p in spec.space.params] == ["width", *BINARY_KEYS, *PRIMITIVE_KEYS]
    assert spec.search.sampler == "tpe" and spec.search.n_trials == 40
    assert spec.search.directions == ["maximize", "minimize"]
    assert spec.search.pruner == PrunerSpec("median", (("n_startup_trials", 5),))  # warm-up: from the recipe
    assert (spec.confirm.top_k, spec.confirm.repeats) == (3, 5)
    assert spec.resources.max_concurrent is None and spec.resources.max_failures == 2
    assert spec.resources.gpus_per_trial == 1.0
    assert spec.source_text == CIFAR_FAST.read_text()


def test_cpu_budget_is_deep_merged_over_the_file():
    spec = load_experiment(CIFAR_FAST, budget="cpu")
    assert spec.budget == "cpu"
    assert spec.dataset.train_subset == 5000 and spec.dataset.val_size == 5000
    assert spec.dataset.flip is True  # untouched keys keep their value
    assert spec.recipe.epochs == 4 and spec.recipe.lr == 0.4
    assert spec.search.n_trials == 12 and spec.search.sampler == "tpe"
    assert dict(spec.search.pruner.options) == {"n_startup_trials": 3, "n_warmup_steps": 1}
    assert (spec.confirm.top_k, spec.confirm.repeats) == (2, 3)
    assert spec.resources.cpus_per_trial is None  # every core
    assert (spec.resources.gpus_per_trial, spec.resources.max_concurrent) == (0.0, 1)


def test_budget_replaces_a_space_entry_whole(tmp_path):
    path = _write(tmp_path, """\
        space:
          width: {fixed: 1.0}
          L1.residual: {choice: [0, 1]}
        budgets:
          small:
            space: {width: {choice: [0.25, 0.5]}}
    """)
    width = load_experiment(path, "small").space.params[0]
    assert (width.kind, width.choices) == ("choice", (0.25, 0.5))
    assert load_experiment(CIFAR_FAST, "cpu").space.params[0].value == 0.25


def test_list_budgets_names_them_in_order():
    assert list_budgets(CIFAR_FAST) == ["cpu", "page26"]


def test_resolved_is_json_and_reloads_to_the_same_space(tmp_path):
    resolved = load_experiment(CIFAR_FAST, "cpu").resolved()
    assert json.loads(json.dumps(resolved)) == resolved
    assert resolved["budget"] == "cpu" and resolved["recipe"]["epochs"] == 4
    path = _write(tmp_path, json.dumps({k: v for k, v in resolved.items() if k != "budget"}))
    assert load_experiment(path).resolved() == {**resolved, "budget": None}


def test_name_defaults_to_the_file_stem(tmp_path):
    path = _write(tmp_path, "space: {L1.residual: {choice: [0, 1]}}\n", name="my_search.yaml")
    assert load_experiment(path).name == "my_search"


def test_relative_data_root_is_taken_relative_to_the_yaml_file(tmp_path):
    path = _write(tmp_path, "dataset: {root: data}\nspace: {L1.residual: {choice: [0, 1]}}\n")
    assert load_experiment(path).dataset.root == str(tmp_path.resolve() / "data")


def test_exponent_floats_are_numbers_not_strings(tmp_path):
    path = _write(tmp_path, "recipe: {lr: 4e-1, weight_decay: 5.0e-4}\nspace: {L1.residual: {fixed: 1}}\n")
    recipe = load_experiment(path).recipe
    assert (recipe.lr, recipe.weight_decay) == (0.4, 5e-4)


def test_selecting_on_test_acc_warns_but_loads(tmp_path):
    path = _write(tmp_path, """\
        space: {L1.residual: {choice: [0, 1]}}
        search: {objectives: [{metric: test_acc, direction: maximize}]}
    """)
    with pytest.warns(UserWarning, match=r"search.objectives\[0\].metric: selecting on test_acc"):
        spec = load_experiment(path)
    assert spec.search.objectives[0].metric == "test_acc"


def test_defaults_fill_absent_sections(tmp_path):
    spec = load_experiment(_write(tmp_path, "space: {L1.residual: {choice: [0, 1]}}\n"))
    assert spec.search == SearchSettings()
    assert spec.search.objectives[0].metric == "val_acc"
    assert spec.recipe.epochs == 24 and spec.resources.max_concurrent is None


# ---- sampling --------------------------------------------------------------------------


def test_suggest_asks_for_the_conditional_param_only_when_its_condition_holds(tmp_path):
    space = _space(tmp_path, CONDITIONAL)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        arch = space.suggest(trial)
        study.tell(trial, 0.0)
        if trial.params["L1.residual"] == 1:
            assert set(trial.params) == {"L1.residual", "L2.extra"}
            assert arch.L2.extra == trial.params["L2.extra"]
        else:
            assert set(trial.params) == {"L1.residual"}
            assert arch.L2.extra == 0  # the ArchConfig default
        seen.add(tuple(sorted(trial.params.items())))
    assert len(seen) == 3  # (0), (1, 0), (1, 1)


def test_conditions_are_sampled_after_their_targets_whatever_the_order_written(tmp_path):
    space = _space(tmp_path, """\
        L2.extra: {choice: [0, 1], when: {L1.residual: [1]}}
        L1.residual: {choice: [0, 1]}
    """)
    assert [p.key for p in space.params] == ["L1.residual", "L2.extra"]
    arch = space.suggest(optuna.trial.FixedTrial({"L1.residual": 1, "L2.extra": 1}))
    assert arch == ArchConfig.from_dict({"L1": {"residual": 1}, "L2": {"extra": 1}})


def test_suggest_applies_fixed_values_without_asking_optuna():
    spec = load_experiment(CIFAR_FAST, "cpu")
    params = {**dict.fromkeys(BINARY_KEYS, 1), "drop.kind": "none"}
    arch = spec.space.suggest(optuna.trial.FixedTrial(params))  # deformable: fixed by the budget
    assert arch.width == 0.25 and arch.L3.residual == 1 and not arch.L2.deformable


def test_suggest_int_and_float_ranges(tmp_path):
    space = _space(tmp_path, """\
        width: {float: [0.25, 1.0], log: true}
        L1.extra: {int: [0, 4], step: 2}
    """)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(10):
        trial = study.ask()
        arch = space.suggest(trial)
        study.tell(trial, 0.0)
        assert 0.25 <= arch.width <= 1.0 and arch.L1.extra in (0, 2, 4)


# ---- enumeration -----------------------------------------------------------------------


def test_grid_of_cifar_fast_counts_conditional_drop_rates_and_leaves_out_fixed_keys():
    points = load_experiment(CIFAR_FAST).space.grid()
    # 2^6 placements x 2^3 deformable stages x (no drop + 4 kinds x 3 rates)
    expected = 64 * 8 * (1 + 4 * 3)
    assert len(points) == expected
    assert len({tuple(sorted(p.items())) for p in points}) == expected
    for p in points:
        keys = set(BINARY_KEYS) | set(PRIMITIVE_KEYS)
        assert set(p) == (keys if p["drop.kind"] != "none" else keys - {"drop.rate"})


def test_grid_counts_a_conditional_space(tmp_path):
    assert _space(tmp_path, CONDITIONAL).grid() == [
        {"L1.residual": 0},
        {"L1.residual": 1, "L2.extra": 0},
        {"L1.residual": 1, "L2.extra": 1},
    ]


def test_grid_counts_a_chain_of_conditions(tmp_path):
    # L3.residual in {0,1,2}; L3.extra only at L3.residual 2; L2.extra only at L3.extra 1
    space = _space(tmp_path, """\
        L3.residual: {int: [0, 2]}
        L3.extra: {choice: [0, 1], when: {L3.residual: [2]}}
        L2.extra: {choice: [0, 1, 2], when: {L3.extra: [1]}}
        width: {float: [0.25, 1.0], step: 0.25}
    """)
    # (0, 1, 2 with L3.extra 0, 2 with L3.extra 1 x 3) = 2 + 1 + 3 = 6 points, x 4 widths
    assert len(space.grid()) == 24


def test_grid_sampler_sets_n_trials_to_the_grid_size(tmp_path):
    path = _write(tmp_path, "space:\n" + textwrap.indent(CONDITIONAL, "  ") + "search: {sampler: grid, n_trials: 1}\n")
    assert load_experiment(path).search.n_trials == 3


def test_grid_int_ranges_include_both_ends(tmp_path):
    path = _write(tmp_path, "space: {L1.residual: {int: [0, 8]}, L1.extra: {int: [0, 8]}}\nsearch: {sampler: grid}\n")
    assert load_experiment(path).search.n_trials == 81


@pytest.mark.parametrize("entry", ["L1.extra: {int: [0, 2000000000]}", "width: {float: [0.1, 8.0], step: 1.0e-8}"],
                         ids=["int", "float"])
def test_a_grid_over_a_range_of_billions_is_refused_before_its_values_are_made(tmp_path, monkeypatch, entry):
    from nas.config.space import MAX_GRID_POINTS, Param

    made = Param.values

    def values(param: Param) -> tuple:  # making 2e9 values would take the machine's memory
        if param.kind in ("int", "float") and (param.high - param.low) / param.step > MAX_GRID_POINTS:
            raise AssertionError(f"the values of {param.key}'s range were made")
        return made(param)

    monkeypatch.setattr(Param, "values", values)
    path = _write(tmp_path, f"space: {{{entry}}}\nsearch: {{sampler: grid}}\n")
    with pytest.raises(ConfigError, match=r"search\.sampler: grid: space: the grid has more than 100000 points"):
        load_experiment(path)


@pytest.mark.parametrize("step", ["5.0e-324", "1.0e-300"], ids=["subnormal", "tiny"])
def test_a_step_too_small_to_count_the_values_of_its_range_is_refused(tmp_path, step):
    # (high - low) / 5e-324 is inf: the multiple-of-step check raised OverflowError in round()
    path = _write(tmp_path, f"space: {{width: {{float: [0.1, 1.0], step: {step}}}}}\n")
    with pytest.raises(ConfigError, match=r"space\.width\.step: step .* makes more than 2147483647 values"):
        load_experiment(path)


@pytest.mark.parametrize(
    "space",
    [
        "arch: {choice: [" + "x" * 5000 + "]}",  # not a short name
        "arch: {choice: [" + "1" * 4000 + "]}",  # not a string
        "arch: {choice: [R:L1, '" + "R:L1 " * 1000 + "']}",  # the same architecture twice
        "exits.stages: {choice: [L1]}\n  exits.weights: {choice: ['" + "0.5+" * 2000 + "0.5']}",  # a grid point
    ],
    ids=["bad-name", "int-name", "same-name", "grid-point"],
)
def test_a_space_error_repeats_at_most_a_line_of_a_long_value(tmp_path, space):
    path = _write(tmp_path, f"space:\n  {space}\nsearch: {{sampler: grid}}\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message[:1000]


def test_arch_from_params_round_trips_every_grid_point():
    space = load_experiment(CIFAR_FAST, "cpu").space  # the binary placements x drop settings
    for point in space.grid():
        arch = space.arch_from_params(point)
        assert arch == space.suggest(optuna.trial.FixedTrial(point))
        placements = {key: value for key, value in point.items() if key in BINARY_KEYS}
        assert {key: getattr(getattr(arch, key[:2]), key[3:]) for key in BINARY_KEYS} == placements
        has_blocks = any(point[f"{stage}.residual"] for stage in ("L1", "L2", "L3"))
        # a drop with no residual block to act on is the plain net: canonicalised to none
        assert arch.drop.kind == (point["drop.kind"] if has_blocks else "none")


def test_arch_from_params_accepts_fixed_values_and_ignores_inactive_ones(tmp_path):
    space = _space(tmp_path, CONDITIONAL + "    width: {fixed: 0.5}\n")
    arch = space.arch_from_params({"L1.residual": 0, "L2.extra": 1, "width": 0.5})
    assert arch == ArchConfig(width=0.5)


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"L1.residual": 1}, "params.L2.extra: missing"),
        ({"L1.residual": 2}, "params.L1.residual: 2 is not a value"),
        ({"L1.residual": 0, "L9.x": 1}, "params.L9.x: not a key"),
    ],
)
def test_arch_from_params_rejects_params_the_space_cannot_give(tmp_path, params, problem):
    space = _space(tmp_path, CONDITIONAL)
    with pytest.raises(ConfigError, match=problem):
        space.arch_from_params(params)


# ---- pruners and samplers ----------------------------------------------------------------


def test_pruner_kinds_build_their_optuna_classes():
    assert isinstance(PrunerSpec("none").build(), optuna.pruners.NopPruner)
    assert isinstance(PrunerSpec("median").build(), optuna.pruners.MedianPruner)
    assert isinstance(PrunerSpec("percentile", (("percentile", 25.0),)).build(), optuna.pruners.PercentilePruner)
    assert isinstance(PrunerSpec("successive_halving").build(), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(PrunerSpec("hyperband").build(), optuna.pruners.HyperbandPruner)


def test_patient_pruner_wraps_the_median_pruner_from_yaml(tmp_path):
    path = _write(tmp_path, """\
        space: {L1.residual: {choice: [0, 1]}}
        search:
          pruner: {kind: patient, patience: 2, wrapped: {kind: median, n_startup_trials: 3}}
    """)
    spec = load_experiment(path).search.pruner
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # building must not warn (PatientPruner is experimental)
        pruner = spec.build()
    assert isinstance(pruner, optuna.pruners.PatientPruner)
    assert isinstance(pruner._wrapped_pruner, optuna.pruners.MedianPruner)
    assert spec.to_dict() == {"kind": "patient", "patience": 2, "wrapped": {"kind": "median", "n_startup_trials": 3}}


def test_pruner_spec_rejects_options_optuna_rejects():
    with pytest.raises(ConfigError, match="MedianPruner"):
        PrunerSpec("median", (("n_startup_trials", -1),))


@pytest.mark.parametrize(
    ("sampler", "cls"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("nsga2", optuna.samplers.NSGAIISampler),
        ("grid", optuna.samplers.RandomSampler),
    ],
)
def test_build_sampler_gives_the_named_optuna_sampler(sampler, cls):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # building one must not warn (grid is experimental)
        assert isinstance(SearchSettings(sampler=sampler, seed=3).build_sampler(), cls)


@pytest.mark.parametrize("sampler", ["tpe", "random", "nsga2"])
def test_build_sampler_is_seeded(sampler):
    spec = load_experiment(CIFAR_FAST, "cpu")

    def first_archs(seed: int) -> list[str]:
        settings = SearchSettings(sampler=sampler, seed=seed, objectives=spec.search.objectives)
        study = optuna.create_study(directions=settings.directions, sampler=settings.build_sampler())
        out = []
        for i in range(12):
            trial = study.ask()
            out.append(spec.space.suggest(trial).hash)
            study.tell(trial, [i % 3, i % 5])
        return out

    assert first_archs(7) == first_archs(7)
    assert first_archs(7) != first_archs(8)


def test_grid_sampler_runs_every_point_of_a_conditional_space_once(tmp_path):
    path = _write(tmp_path, "space:\n" + textwrap.indent(CONDITIONAL, "  ") + "search: {sampler: grid}\n")
    spec = load_experiment(path)
    study = optuna.create_study(sampler=spec.search.build_sampler())
    for point in spec.space.grid():  # what the driver does for sampler: grid
        study.enqueue_trial(point)
    study.optimize(lambda t: float(spec.space.suggest(t).L2.extra), n_trials=len(spec.space.grid()))
    assert sorted(tuple(sorted(t.params.items())) for t in study.trials) == sorted(
        tuple(sorted(p.items())) for p in spec.space.grid()
    )
