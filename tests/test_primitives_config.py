"""Config of the primitives: drop, deformable, fractal, width schedule. Validation, canonical
form (stored hashes unchanged), short names, and the YAML spaces that search them."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from nas.config.experiment import list_budgets, load_experiment
from nas.config.space import ARCH_KEYS
from nas.errors import ConfigError
from nas.models import ArchConfig, DropConfig, StageConfig, parse_short_name

SPACES = sorted((Path(__file__).resolve().parent.parent / "search_spaces").glob("*.yaml"))
R13 = {"L1": {"residual": 1}, "L3": {"residual": 1}}


# ---- canonical form -------------------------------------------------------------------


def test_new_fields_at_their_defaults_keep_every_stored_hash():
    explicit = ArchConfig.from_dict({
        "width": 0.25, "L1": {"residual": 1, "fractal": 0, "deformable": False}, "L3": {"residual": 1},
        "drop": {"kind": "none", "rate": 0.0, "global_share": 0.0},
        "width_schedule": "double", "deformable_mask": False,
    })
    assert explicit.hash == "afd4b65a62cb"  # tests/test_models.py's pinned Residual:L1+L3
    assert explicit.to_json() == '{"L1":{"residual":1},"L3":{"residual":1},"width":0.25}'


def test_canonical_json_of_the_primitives():
    arch = ArchConfig.from_dict({
        **R13, "L2": {"fractal": 3, "deformable": True}, "drop": {"kind": "stochastic_depth", "rate": 0.2},
        "width_schedule": "pyramid", "deformable_mask": True,
    })
    assert arch.to_json() == (
        '{"L1":{"residual":1},"L2":{"deformable":true,"fractal":3},"L3":{"residual":1},'
        '"deformable_mask":true,"drop":{"kind":"stochastic_depth","rate":0.2},"width_schedule":"pyramid"}'
    )
    assert ArchConfig.from_json(arch.to_json()) == arch


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ({"kind": "none", "rate": 0.3}, {}),  # no drop: the rate means nothing
        ({"kind": "stochastic_depth", "rate": 0.0}, {}),  # drops nothing: the plain net
        ({"kind": "width_dropout", "rate": 0}, {}),
        ({"kind": "drop_path", "rate": 0.0, "global_share": 0.0}, {}),
        ({"kind": "depth_dropout", "rate": 0.0}, {"kind": "depth_dropout"}),  # has 1x1 shortcuts
        ({"kind": "stochastic_depth", "rate": 0.2, "global_share": 0.5}, {"kind": "stochastic_depth", "rate": 0.2}),
        ({"kind": "drop_path", "rate": 0.0, "global_share": 0.5}, {"kind": "drop_path", "global_share": 0.5}),
    ],
)
def test_settings_that_build_the_same_network_are_stored_the_same(written, stored):
    arch = ArchConfig.from_dict({**R13, "drop": written})
    assert arch.to_dict().get("drop", {}) == stored


@pytest.mark.parametrize("kind", ["stochastic_depth", "depth_dropout", "drop_path", "width_dropout"])
def test_a_drop_without_blocks_to_drop_is_dropped(kind):
    plain = ArchConfig.from_dict({"L2": {"extra": 1, "fractal": 2}, "drop": {"kind": kind, "rate": 0.2}})
    assert plain.drop.kind == ("drop_path" if kind == "drop_path" else "none")  # drop-path acts on fractal joins
    assert ArchConfig.from_dict({"L2": {"extra": 1}, "drop": {"kind": kind, "rate": 0.2}}) == ArchConfig.from_dict(
        {"L2": {"extra": 1}}
    )


def test_deformable_mask_without_deformable_stages_is_dropped():
    assert ArchConfig.from_dict({**R13, "deformable_mask": True}) == ArchConfig.from_dict(R13)
    assert ArchConfig.from_dict({"L2": {"deformable": True}, "deformable_mask": True}).deformable_mask


def test_int_and_float_rates_are_the_same_architecture():
    a = ArchConfig.from_dict({"drop": {"kind": "depth_dropout", "rate": 1}})
    b = ArchConfig.from_dict({"drop": {"kind": "depth_dropout", "rate": 1.0}})
    assert a.hash == b.hash


# ---- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"drop": {"kind": "sd"}}, "arch.drop: kind must be one of none, stochastic_depth, depth_dropout, drop_path, width_dropout, but got 'sd'"),
        ({"drop": {"kind": "stochastic_depth", "rate": 1.5}}, "arch.drop: rate must be in [0, 1], but got 1.5"),
        ({"drop": {"kind": "drop_path", "rate": "high"}}, "arch.drop: rate must be a number in [0, 1], but got 'high'"),
        ({"drop": {"kind": "drop_path", "global_share": -0.1}}, "arch.drop: global_share must be in [0, 1], but got -0.1"),
        ({"drop": {"rat": 0.1}}, "arch.drop.rat: unknown key; allowed keys are global_share, kind, rate"),
        ({"drop": "stochastic_depth"}, "arch.drop: expected a mapping such as {kind: stochastic_depth, rate: 0.2}"),
        ({"L1": {"deformable": 1}}, "arch.L1: deformable must be true or false, but got 1"),
        ({"L2": {"fractal": 5}}, "arch.L2: fractal must be between 0 and 4 columns (0 = none), but got 5"),
        ({"L2": {"fractal": True}}, "arch.L2: fractal must be an integer"),
        ({"width_schedule": "linear"}, "width_schedule must be one of double, pyramid, but got 'linear'"),
        ({"L1": {"deformable": True}, "deformable_mask": "yes"}, "deformable_mask must be true or false, but got 'yes'"),
    ],
)
def test_invalid_primitive_configs_name_the_field_the_value_and_the_rule(data, needle):
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict(data)
    assert needle in str(err.value)


def test_drop_config_must_be_a_drop_config():
    with pytest.raises(ConfigError, match="drop must be a DropConfig"):
        ArchConfig(drop={"kind": "stochastic_depth"})
    assert ArchConfig(L1=StageConfig(residual=1), drop=DropConfig("stochastic_depth", 0.1)).drop.rate == 0.1


# ---- short names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name"),
    [
        ({**R13, "width": 0.25, "drop": {"kind": "stochastic_depth", "rate": 0.2}}, "R:L1+L3 sd=0.2 w=0.25"),
        ({**R13, "drop": {"kind": "depth_dropout", "rate": 0.5}}, "R:L1+L3 dd=0.5"),
        ({**R13, "drop": {"kind": "drop_path", "rate": 0.15, "global_share": 0.5}}, "R:L1+L3 dp=0.15 dpg=0.5"),
        ({**R13, "drop": {"kind": "drop_path", "global_share": 0.5}}, "R:L1+L3 dp=0 dpg=0.5"),
        ({**R13, "drop": {"kind": "width_dropout", "rate": 0.1}}, "R:L1+L3 wd=0.1"),
        ({**R13, "L2": {"deformable": True}}, "R:L1+L3 D:L2"),
        ({"L1": {"residual": 1, "deformable": True}, "L3": {"residual": 1, "deformable": True}, "deformable_mask": True},
         "R:L1+L3 Dm:L1+L3"),
        ({**R13, "L2": {"fractal": 3}}, "R:L1+L3 F3:L2"),
        ({"L1": {"fractal": 2}, "L2": {"fractal": 3}, "L3": {"fractal": 2}}, "F2:L1+L3 F3:L2"),
        ({**R13, "width_schedule": "pyramid"}, "R:L1+L3 pyr"),
        ({"L2": {"fractal": 2}, "drop": {"kind": "drop_path", "rate": 0.2}}, "F2:L2 dp=0.2"),
        ({"L1": {"residual": 2, "extra": 1, "fractal": 4, "deformable": True}, "width": 0.5, "width_schedule": "pyramid",
          "drop": {"kind": "stochastic_depth", "rate": 0.123456789}},
         "R:L1x2 X:L1 F4:L1 D:L1 sd=0.123456789 pyr w=0.5"),
    ],
)
def test_short_names_of_the_primitives_read_and_parse_back(data, name):
    arch = ArchConfig.from_dict(data)
    assert arch.short_name() == name
    assert parse_short_name(name) == arch


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("R:L1 sd=abc", "'abc' is not a number"),
        ("R:L1 dpg=0.5", "dpg= (drop-path global share) needs dp= too"),
        ("R:L1 sd=0.1 dd=0.2", "names two drop kinds"),
        ("F3:L2x2", "R and X only"),
        ("Q:L2", "expected R:L1+L3, X:L2, F3:L2, D:L2"),
        ("R:L1 sd=1.5", "rate must be in [0, 1]"),
    ],
)
def test_unreadable_primitive_short_names_are_config_errors(text, needle):
    with pytest.raises(ConfigError) as err:
        parse_short_name(text)
    assert needle in str(err.value)


# ---- search spaces --------------------------------------------------------------------


def test_the_primitives_are_searchable_keys():
    for key in ("drop.kind", "drop.rate", "drop.global_share", "width_schedule", "deformable_mask",
                "L1.deformable", "L2.fractal", "L3.deformable"):
        assert key in ARCH_KEYS


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_loads_with_and_without_each_budget(path):
    for budget in [None, *list_budgets(path)]:
        spec = load_experiment(path, budget)
        assert spec.space.params and spec.budget == budget


PRIMITIVE_SPACES = {
    "stochastic_depth.yaml": "drop.rate",
    "depth_dropout.yaml": "drop.rate",
    "drop_path.yaml": "drop.global_share",
    "width_dropout.yaml": "drop.rate",
    "deformable.yaml": "deformable_mask",
    "pyramid.yaml": "width_schedule",
    "clique.yaml": "L2.clique",
}


@pytest.mark.parametrize(("name", "knob"), PRIMITIVE_SPACES.items())
def test_each_primitive_has_a_space_around_residual_l1_l3_with_a_cpu_budget(name, knob):
    path = SPACES[0].parent / name
    assert "cpu" in list_budgets(path)
    spec = load_experiment(path, "cpu")
    assert spec.space.params[0].key == "width" and spec.space.params[0].value == 0.25
    assert knob in [p.key for p in spec.space.params]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    arch = spec.space.suggest(study.ask())
    assert arch.L1.residual >= 1 and arch.L3.residual >= 1
