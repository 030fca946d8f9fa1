"""The one validator of every config class: strict types, rules, unknown keys, key paths."""

from __future__ import annotations

import dataclasses
import math

import pytest

from nas.config.experiment import ConfirmSettings, Objective, PrunerSpec, Resources, SearchSettings
from nas.config.validate import Source, build, type_ok
from nas.data.config import DataConfig
from nas.errors import ConfigError
from nas.models.arch import ArchConfig, DropConfig, ExitConfig, StageConfig
from nas.training.recipe import Recipe, SlimmableConfig, slimmable_conflicts

CONFIGS = [ArchConfig, StageConfig, DropConfig, ExitConfig, Recipe, SlimmableConfig, DataConfig,
           SearchSettings, ConfirmSettings, Resources, PrunerSpec]


# ---- no silent coercion -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (Recipe, "epochs", "3"), (Recipe, "epochs", True), (Recipe, "epochs", 3.0), (Recipe, "lr", "0.1"),
        (Recipe, "test_every_epoch", 1), (StageConfig, "residual", True), (StageConfig, "deformable", 1),
        (DropConfig, "rate", True), (ArchConfig, "width", "1"), (SlimmableConfig, "samples", 4.0),
        (DataConfig, "val_size", "5"), (DataConfig, "flip", 0), (SearchSettings, "n_trials", True),
        (ConfirmSettings, "top_k", 1.0), (Resources, "gpus_per_trial", "1"), (Resources, "max_concurrent", 2.0),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_not_converted(cls, field, value):
    with pytest.raises(ConfigError, match=rf"^{field} must be .*, but got {value!r}\.$"):
        cls(**{field: value})


def test_an_int_is_a_float_and_is_stored_as_one_where_equal_configs_must_hash_the_same():
    assert ArchConfig(width=1) == ArchConfig(width=1.0) and isinstance(ArchConfig(width=1).width, float)
    assert Resources(gpus_per_trial=1).gpus_per_trial == 1.0
    assert Recipe(lr=1).lr == 1 and type(Recipe(lr=1).lr) is int  # stored recipes (and resumes) keep what was written


@pytest.mark.parametrize(
    ("cls", "field"),
    [(Recipe, "lr"), (Recipe, "warmup"), (DropConfig, "rate"), (ArchConfig, "width"), (Resources, "cpus_per_trial"),
     (SlimmableConfig, "max_width")],
)
def test_nan_fails_every_range(cls, field):
    with pytest.raises(ConfigError, match=rf"^{field} must be .*, but got nan\.$"):
        cls(**{field: math.nan})


def test_strings_are_not_tuples_and_tuples_are_checked_item_by_item():
    assert type_ok((1, 2.5), tuple[float, ...]) and not type_ok((1, "2"), tuple[float, ...])
    assert not type_ok("ab", tuple[str, ...]) and type_ok(None, int | None) and not type_ok(True, int | None)


# ---- frozen, hashable, still plain dataclasses -----------------------------------------------


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_is_a_frozen_hashable_dataclass(cls):
    config = cls()
    assert hash(config) == hash(cls())
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, dataclasses.fields(cls)[0].name, None)
    assert dataclasses.replace(config) == config
    assert dataclasses.asdict(config) == dataclasses.asdict(cls(**{f.name: getattr(config, f.name)
                                                                   for f in dataclasses.fields(cls)}))


def test_replace_checks_again():
    with pytest.raises(ConfigError, match="epochs must be at least 1, but got 0"):
        dataclasses.replace(Recipe(), epochs=0)


# ---- building from mappings: unknown keys, nesting, key paths ----------------------------------


def test_unknown_keys_list_the_allowed_ones_and_the_nearest():
    with pytest.raises(ConfigError, match=r"^x.yaml: confirm.topk: unknown key; allowed keys are max_repeats, "
                                          r"max_seconds, repeats, top_k, until_separated\. "
                                          r"Did you mean 'top_k'\?$"):
        build(ConfirmSettings, {"topk": 1}, Source("x.yaml"), ("confirm",))


def test_in_a_file_a_rule_is_named_at_its_key_in_code_at_its_object():
    with pytest.raises(ConfigError, match=r"^x.yaml: recipe.slimmable.samples: samples must be at least 2"):
        build(Recipe, {"slimmable": {"samples": 1}}, Source("x.yaml"), ("recipe",))
    with pytest.raises(ConfigError, match=r"^recipe.slimmable: samples must be at least 2"):
        Recipe.from_dict({"slimmable": {"samples": 1}})
    with pytest.raises(ConfigError, match=r"^arch.L1: residual must be between 0 and 8, but got 9\.$"):
        ArchConfig.from_dict({"L1": {"residual": 9}})


def test_a_value_from_the_budget_is_named_by_its_path_in_the_budget():
    src = Source("x.yaml", "cpu", {"recipe": {"epochs": 0}})
    with pytest.raises(ConfigError, match=r"^x.yaml: budgets.cpu.recipe.epochs: epochs must be at least 1"):
        build(Recipe, {"epochs": 0, "lr": 0.4}, src, ("recipe",))
    with pytest.raises(ConfigError, match=r"^x.yaml: recipe.lr: lr must be positive"):  # not from the budget
        build(Recipe, {"epochs": 1, "lr": 0}, src, ("recipe",))


def test_a_required_field_is_named_with_its_choices():
    with pytest.raises(ConfigError, match=r"search.objectives\[0\].direction: missing; give one of maximize, minimize"):
        build(SearchSettings, {"objectives": [{"metric": "val_acc"}]}, Source("x.yaml"), ("search",))
    assert build(SearchSettings, {"objectives": [{"metric": "flops", "direction": "minimize"}]},
                 Source("x.yaml"), ("search",)).objectives == (Objective("flops", "minimize"),)


def test_a_choice_suggests_the_nearest_value():
    with pytest.raises(ConfigError, match=r"width_schedule must be one of double, pyramid, but got 'pyramd'\. "
                                          r"Did you mean 'pyramid'\?"):
        ArchConfig(width_schedule="pyramd")


def test_null_for_an_optional_nested_config_is_none_and_for_a_required_one_its_defaults():
    assert Recipe.from_dict({"slimmable": None}).slimmable is None
    assert ArchConfig.from_dict({"drop": None}) == ArchConfig()
    with pytest.raises(ConfigError, match=r"recipe.slimmable: expected a mapping such as \{min_width: 0.25, "
                                          r"samples: 4\} or null, but got True"):
        Recipe.from_dict({"slimmable": True})


# ---- slimmable support is decided without torch ------------------------------------------------


def test_slimmable_conflicts_name_each_unsupported_primitive_and_nothing_else():
    assert slimmable_conflicts(ArchConfig().to_flat()) == []
    flat = {"L2.fractal": 2, "L1.clique": 3, "L3.deformable": True, "exits.stages": "L1",
            "drop.kind": "stochastic_depth", "width": 0.5, "L1.residual": 2}
    assert slimmable_conflicts(flat) == ["L2.fractal=2", "L1.clique=3", "L3.deformable=True",
                                         "exits.stages='L1'", "drop.kind='stochastic_depth'"]
    assert slimmable_conflicts({"exits.stages": "", "drop.kind": "none", "L2.fractal": 0,
                                "width_schedule": "pyramid"}) == []


# ---- non-finite floats and upper bounds: refused before anything is written -----------------


def _float_fields():
    """(class, field) for every field of every config whose type takes a float."""
    import typing

    from nas.config.validate import type_ok as takes
    for cls in CONFIGS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init and takes(0.5, hints[f.name]) and not takes("x", hints[f.name]):
                yield cls, f.name


@pytest.mark.parametrize(("cls", "field"), list(_float_fields()), ids=lambda v: getattr(v, "__name__", v))
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_field_refuses_non_finite_values_without_a_rule_of_its_own(cls, field, value):
    with pytest.raises(ConfigError, match=rf"^{field} must be a finite number, but got {value!r}\.$"):
        cls(**{field: value})


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"min_resource": 0, "max_resource": 4}, "min_resource"),  # log(4 / 0): ZeroDivisionError
        ({"max_resource": 0}, "max_resource"),  # log(0): ValueError math domain error
        ({"reduction_factor": 1, "max_resource": 9}, "reduction_factor"),  # log base 1: ZeroDivisionError
        ({"bootstrap_count": -1, "max_resource": 9}, "bootstrap_count"),
    ],
    ids=["min_resource-0", "max_resource-0", "reduction_factor-1", "bootstrap_count-negative"],
)
def test_hyperband_options_optuna_checks_only_at_the_first_prune_are_checked_up_front(options, named):
    with pytest.raises(ConfigError, match=rf"^HyperbandPruner rejects .*{named}"):
        PrunerSpec(kind="hyperband", options=tuple(sorted(options.items())))


@pytest.mark.parametrize(("cls", "field"), list(_float_fields()), ids=lambda v: getattr(v, "__name__", v))
def test_every_float_field_refuses_an_integer_too_large_for_a_float(cls, field):
    # YAML reads 400 digits as an int: it passed `positive()`, then float() of it raised OverflowError
    with pytest.raises(ConfigError, match=rf"^{field} must be a finite number, but got 1000000"):
        cls(**{field: 10**400})


def test_an_exit_weight_too_large_for_a_float_is_refused_not_an_overflow():
    with pytest.raises(ConfigError, match=r"weights must be finite numbers, but got 1000000"):
        ExitConfig(stages=("L1",), weights=10**400)


def test_a_pruner_error_that_repeats_a_long_value_repeats_at_most_a_line_of_it():
    with pytest.raises(ConfigError) as info:  # Optuna: "The value of `reduction_factor` is -1000...0, but must be ..."
        PrunerSpec(kind="successive_halving", options=(("reduction_factor", -(10**300)),))
    message = str(info.value)
    assert message.startswith("SuccessiveHalvingPruner rejects {'reduction_factor': -1000")
    assert len(message) < 400 and "\n" not in message, message


@pytest.mark.parametrize(("kind", "option"), [("successive_halving", "min_early_stopping_rate"),
                                              ("median", "n_warmup_steps"), ("hyperband", "reduction_factor")])
def test_an_integer_pruner_option_past_any_count_of_trials_or_steps_is_refused(tmp_path, kind, option):
    # min_early_stopping_rate: 2**63 passed, then the first prune computed 3 ** 2**63 and never returned
    from nas.config.experiment import load_experiment
    from tests.helpers import experiment_yaml

    path = experiment_yaml(tmp_path / "x.yaml", search={"pruner": {"kind": kind, option: 2**63}})
    with pytest.raises(ConfigError, match=rf"search\.pruner\.{option}: must be at most 100000 \(a count of "):
        load_experiment(path)


def test_non_finite_floats_inside_tuples_are_refused_too():
    with pytest.raises(ConfigError, match="options must be a finite number"):
        PrunerSpec(kind="median", options=(("margin", math.inf),))


def test_a_rule_made_of_two_names_the_one_failed_and_both_in_its_type_words():
    with pytest.raises(ConfigError, match=r"^epochs must be at least 1, but got 0\.$"):
        Recipe(epochs=0)
    with pytest.raises(ConfigError, match=r"^epochs must be at most 10000, but got 10001\.$"):
        Recipe(epochs=10_001)
    with pytest.raises(ConfigError, match=r"^epochs must be an integer >= 1 and <= 10000, but got 'x'\.$"):
        Recipe(epochs="x")


# ---- YAML that costs more than it says; values echoed at most a line ---------------------


def _bomb(levels: int = 9) -> str:
    """Nested aliases: a few lines that stand for 10**levels values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nspace: {{L1.residual: {{choice: *a{levels - 1}}}}}\n"


def _alias_chain(links: int = 4, depth: int = 30) -> str:
    """Each alias nested `depth` deep inside the next: under the depth limit per level, over it in all."""
    lines = [f"a0: &a0 {'[' * depth}1{']' * depth}"]
    lines += [f"a{i}: &a{i} {'[' * depth}*a{i - 1}{']' * depth}" for i in range(1, links)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (_bomb(), "expands to more than 100,000 values"),
        ("space: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested more than 64 levels"),
        ("space: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n", "nested more than 64 levels"),
        (_alias_chain(), "nests more than 64 levels deep through its aliases"),
        ("space: &a [*a]\n", "refers to a value that contains it"),
        ("space: 2020-13-45\n", "ValueError"),
        ("space: " + "1" * 5000 + "\n", "ValueError"),
    ],
    ids=["alias-bomb", "deep-lists", "deep-mappings", "alias-chain", "recursive-alias", "bad-date", "huge-int"],
)
def test_yaml_that_costs_more_than_it_says_is_one_line_naming_the_file(tmp_path, text, needle):
    from nas.config.experiment import load_experiment

    path = tmp_path / "costly.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and needle in message and "Fix the YAML" in message
    assert "\n" not in message and len(message) < 300


def test_a_control_character_is_named_by_its_line_and_column_in_one_line(tmp_path):
    from nas.config.experiment import load_experiment

    path = tmp_path / "control.yaml"
    path.write_text("name: ok\nrecipe: {epochs: 4\x01}\n")  # PyYAML's own message spans two lines
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert str(info.value) == (f"{path}: line 2, column 19: invalid YAML: unacceptable character #x0001: "
                               "special characters are not allowed. Fix the YAML there.")


def test_a_yaml_problem_that_quotes_the_file_quotes_at_most_a_line_of_it(tmp_path):
    from nas.config.experiment import load_experiment

    path = tmp_path / "tag.yaml"
    path.write_text("space: !" + "t" * 5000 + " 1\n")  # "could not determine a constructor for the tag '!ttt...'"
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert "line 1, column 8: invalid YAML: could not determine a constructor" in message
    assert "\n" not in message and len(message) < 300 + len(str(path)) and "…" in message


def test_a_binary_or_unreadable_experiment_file_is_a_config_error(tmp_path):
    from nas.config.yaml_io import read_yaml

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        read_yaml(str(binary))
    with pytest.raises(ConfigError, match="cannot read the experiment file"):
        read_yaml(str(tmp_path / ("x" * 5000 + ".yaml")), what="experiment file")


@pytest.mark.parametrize(
    "space",
    [
        {"L1.residual": {"choice": "x" * 10_000}},  # not a list
        {"L1.residual": {"choice": [0, "y" * 10_000]}},  # not a valid value
        {"L1.residual": {"fixed": ["z" * 100] * 1000}},  # not a single value
        {"z" * 10_000: {"choice": [0, 1]}},  # not an architecture key
    ],
    ids=["long-string", "long-choice", "long-list", "long-key"],
)
def test_an_error_echoes_at_most_a_line_of_a_long_value(tmp_path, space):
    from nas.config.experiment import load_experiment
    from tests.helpers import experiment_yaml

    path = experiment_yaml(tmp_path / "long.yaml", space=space)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert "\n" not in message and ("…" in message or "..." in message)
    assert not any(letter * 100 in message for letter in "xyz"), message[:600]  # 80 characters of it at most


@pytest.mark.parametrize("root", ["a\x00b", "\ud800x", "~nosuchuser_nas/data"], ids=["nul", "surrogate", "unknown-user"])
def test_a_data_root_the_system_cannot_open_is_refused_with_the_config(tmp_path, root):
    # these raised ValueError, UnicodeEncodeError and RuntimeError: the last in load_experiment
    # (expanding ~), the others when `nas launch` looked for the data, as tracebacks
    import yaml

    from nas.config.experiment import load_experiment

    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({"dataset": {"root": root}, "space": {"L1.residual": {"choice": [0, 1]}}}))
    with pytest.raises(ConfigError, match=r"x\.yaml: dataset\.root: root must be a folder path the system takes"):
        load_experiment(path)


@pytest.mark.parametrize("kind", [["median"], {"median": 1}])
def test_a_pruner_kind_that_is_a_list_or_mapping_is_named_not_a_type_error(tmp_path, kind):
    from nas.config.experiment import load_experiment
    from tests.helpers import experiment_yaml

    path = experiment_yaml(tmp_path / "x.yaml", search={"pruner": {"kind": kind}})
    with pytest.raises(ConfigError, match=r"x\.yaml: search\.pruner\.kind: must be one of none, median, "):
        load_experiment(path)


@pytest.mark.parametrize(
    ("file_name", "budget", "budgets", "named"),
    [
        ("new\nline.yaml", None, {}, "new line.yaml: name: "),  # the file's name (and so the default name)
        ("x.yaml", "a\nb", {"cpu": {}}, "x.yaml: budgets.a b: no such budget"),  # the budget asked for
        ("x.yaml", "cpu\n", {"cpu\n": {"recipe": {"epochs": 0}}}, "x.yaml: budgets.cpu.recipe.epochs: "),
        ("x.yaml", "y" * 1000, {"y" * 999 + "\n": {}}, "no such budget; available budgets: yyy"),  # long names
    ],
    ids=["file", "budget-asked", "budget-in-file", "long-budget"],
)
def test_names_the_user_chose_are_echoed_on_one_line(tmp_path, file_name, budget, budgets, named):
    import yaml

    from nas.config.experiment import load_experiment

    path = tmp_path / file_name
    path.write_text(yaml.safe_dump({"space": {"L1.residual": {"choice": [0, 1]}}, "budgets": budgets}))
    with pytest.raises(ConfigError) as info:
        load_experiment(path, budget)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600 and named in message, message


def test_shown_cuts_a_repr_to_one_line_of_80_characters():
    from nas.errors import shown

    nested: list = [1] * 10
    for _ in range(40):
        nested = [nested] * 10  # 10**41 values: a full repr would never end
    assert len(shown(nested)) <= 80 and len(shown("x" * 10_000)) <= 80
    assert shown("abc") == "'abc'" and shown(0.5) == "0.5" and shown("a\nb") == "'a\\nb'"
