"""The fast-ResNet family: configs, canonical form, building, costs."""

from __future__ import annotations

import itertools

import pytest
import torch

from nas.errors import ConfigError
from nas.models import (
    ArchConfig,
    build_model,
    count_flops,
    count_params,
    parse_short_name,
    stage_channels,
)

RESIDUAL_L1_L3 = {"L1": {"residual": 1}, "L3": {"residual": 1}}


def _conv_flops(c_in: int, c_out: int, side: int) -> int:
    return 2 * c_in * c_out * 9 * side * side  # a multiply-add counts as 2


# ---- building -------------------------------------------------------------------------


@pytest.mark.parametrize("counts", list(itertools.product((0, 1), repeat=6)))
def test_every_extra_residual_combination_builds_and_gives_10_logits(counts):
    x1, x2, x3, r1, r2, r3 = counts
    arch = ArchConfig.from_dict({
        "width": 0.125,
        "L1": {"extra": x1, "residual": r1},
        "L2": {"extra": x2, "residual": r2},
        "L3": {"extra": x3, "residual": r3},
    })
    model = build_model(arch)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert len(model.l1.extra) == x1 and len(model.l3.residual) == r3


def test_features_have_the_width_of_the_last_stage():
    arch = ArchConfig(width=0.25)
    feats = build_model(arch).forward_features(torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, stage_channels(arch)["L3"]) == (2, 128)


def test_building_is_deterministic_for_a_seed_and_differs_across_seeds():
    arch = ArchConfig.from_dict({"width": 0.125, **RESIDUAL_L1_L3})
    a, b, c = build_model(arch, seed=3), build_model(arch, seed=3), build_model(arch, seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.prep.conv.weight, c.prep.conv.weight)


def test_building_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(ArchConfig(width=0.125), seed=9)
    assert torch.equal(torch.rand(3), expected)


# ---- canonical form -------------------------------------------------------------------


def test_hash_is_stable_across_releases():
    # Stored results refer to architectures by this hash: it must never change for an
    # existing config. If this fails, the canonical form changed.
    assert ArchConfig.from_dict({"width": 0.25, **RESIDUAL_L1_L3}).hash == "afd4b65a62cb"
    assert ArchConfig().hash == "44136fa355b3"  # sha256("{}")


def test_canonical_json_leaves_out_defaults_and_sorts_keys():
    arch = ArchConfig.from_dict({"L3": {"residual": 1, "extra": 0}, "width": 0.5, "L1": {"residual": 1}})
    assert arch.to_json() == '{"L1":{"residual":1},"L3":{"residual":1},"width":0.5}'


def test_config_json_config_round_trips_exactly():
    arch = ArchConfig.from_dict({"width": 0.75, "L1": {"extra": 2, "residual": 1}, "L2": {"extra": 1}})
    again = ArchConfig.from_json(arch.to_json())
    assert again == arch and again.hash == arch.hash and again.to_json() == arch.to_json()


def test_int_and_float_width_are_the_same_architecture():
    assert ArchConfig(width=1).hash == ArchConfig(width=1.0).hash


def test_short_name_reads_like_the_literature_and_parses_back():
    arch = ArchConfig.from_dict({"width": 0.25, "L1": {"residual": 1}, "L2": {"extra": 1}, "L3": {"residual": 2}})
    assert arch.short_name() == "R:L1+L3x2 X:L2 w=0.25"
    assert parse_short_name(arch.short_name()) == arch
    assert ArchConfig().short_name() == "base"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"L4": {"residual": 1}}, "arch.L4: unknown key"),
        ({"L1": {"residul": 1}}, "arch.L1.residul: unknown key"),
        ({"L1": {"residual": -1}}, "arch.L1: residual must be between 0 and 8"),
        ({"L2": {"extra": 1.5}}, "arch.L2: extra must be an integer"),
        ({"L2": {"extra": True}}, "arch.L2: extra must be an integer"),
        ({"L1": [1]}, "arch.L1: expected a mapping"),
        ({"width": 0}, "width must be in (0, 8]"),
        ({"width": "wide"}, "width must be a number"),
    ],
)
def test_invalid_configs_name_the_key_and_the_rule(data, needle):
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict(data)
    assert needle in str(err.value)


def test_unreadable_short_name_is_a_config_error():
    with pytest.raises(ConfigError, match="stages are L1, L2, L3"):
        parse_short_name("R:L4")


# ---- costs ----------------------------------------------------------------------------


def test_baseline_flops_equal_a_hand_count():
    c = stage_channels(ArchConfig())
    expected = (
        _conv_flops(3, c["prep"], 32)
        + _conv_flops(c["prep"], c["L1"], 32)  # stage convs run before their pool
        + _conv_flops(c["L1"], c["L2"], 16)
        + _conv_flops(c["L2"], c["L3"], 8)
        + 2 * c["L3"] * 10  # linear head
    )
    assert count_flops(build_model(ArchConfig())) == expected


def test_residual_blocks_add_two_convs_at_the_pooled_resolution():
    base = count_flops(build_model(ArchConfig(width=0.25)))
    r13 = count_flops(build_model(ArchConfig.from_dict({"width": 0.25, **RESIDUAL_L1_L3})))
    c = stage_channels(ArchConfig(width=0.25))
    assert r13 - base == 2 * _conv_flops(c["L1"], c["L1"], 16) + 2 * _conv_flops(c["L3"], c["L3"], 4)


def test_params_equal_a_hand_count():
    c = stage_channels(ArchConfig())
    conv_bn = lambda i, o: i * o * 9 + 2 * o  # noqa: E731 - conv weights + BN scale/shift
    expected = (
        conv_bn(3, c["prep"]) + conv_bn(c["prep"], c["L1"]) + conv_bn(c["L1"], c["L2"])
        + conv_bn(c["L2"], c["L3"]) + c["L3"] * 10
    )
    assert count_params(build_model(ArchConfig())) == expected


def test_counting_flops_keeps_the_training_mode():
    model = build_model(ArchConfig(width=0.125))
    model.train()
    count_flops(model)
    assert model.training
