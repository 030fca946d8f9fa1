"""The builder composes the primitives: pyramidal widths, fractal stages, drops, deformable
stages, alone and together; their FLOPs against hand counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.models import ArchConfig, build_model, count_flops, stage_channels, unit_channels
from nas.models.blocks import PadChannels, ResidualBlock
from nas.models.deform import DeformConv2d

R13 = {"L1": {"residual": 1}, "L3": {"residual": 1}}


def _conv_flops(c_in: int, c_out: int, side: int, k: int = 3) -> int:
    return 2 * c_in * c_out * k * k * side * side


# ---- pyramidal widths -----------------------------------------------------------------


def test_pyramid_grows_by_equal_steps_between_the_double_schedules_ends():
    data = {"L1": {"residual": 2, "extra": 1}, "L2": {"fractal": 2}, "L3": {"residual": 1}}
    double = unit_channels(ArchConfig.from_dict(data))
    pyramid = unit_channels(ArchConfig.from_dict({**data, "width_schedule": "pyramid"}))
    widths = pyramid["prep"] + pyramid["L1"] + pyramid["L2"] + pyramid["L3"]
    assert len(widths) == 1 + 4 + 2 + 2  # prep; L1 conv, extra, 2 residual; L2 conv, fractal; L3 conv, residual
    assert widths[0] == double["prep"][0] == 64 and widths[-1] == double["L3"][-1] == 512
    steps = [b - a for a, b in zip(widths, widths[1:])]
    assert max(steps) - min(steps) <= 1  # (512 - 64) / 8 = 56, up to rounding


def test_double_schedule_keeps_the_stage_widths():
    arch = ArchConfig.from_dict({"width": 0.5, "L1": {"residual": 2}})
    assert unit_channels(arch) == {"prep": [32], "L1": [64, 64, 64], "L2": [128], "L3": [256]}
    assert stage_channels(arch) == {"prep": 32, "L1": 64, "L2": 128, "L3": 256}


def test_pyramid_residual_blocks_widen_with_a_zero_padded_identity():
    model = build_model(ArchConfig.from_dict({"width": 0.25, **R13, "width_schedule": "pyramid"}))
    block = model.l1.residual[0]
    assert isinstance(block.shortcut, PadChannels)
    with torch.no_grad():  # branch output 0: the block is its shortcut
        block.branch[1].bn.weight.zero_()
        block.branch[1].bn.bias.zero_()
    x = torch.randn(2, block.branch[0].conv.in_channels, 4, 4)
    out = block.eval()(x)
    assert out.shape[1] > x.shape[1]
    assert torch.equal(out[:, : x.shape[1]], x) and not out[:, x.shape[1]:].any()


def test_pyramid_flops_equal_a_hand_count():
    arch = ArchConfig.from_dict({"width": 0.25, **R13, "width_schedule": "pyramid"})
    w = unit_channels(arch)
    (prep,), (l1, r1), (l2,), (l3, r3) = w["prep"], w["L1"], w["L2"], w["L3"]
    expected = (
        _conv_flops(3, prep, 32) + _conv_flops(prep, l1, 32)
        + _conv_flops(l1, r1, 16) + _conv_flops(r1, r1, 16)  # widening residual block at L1
        + _conv_flops(r1, l2, 16) + _conv_flops(l2, l3, 8)
        + _conv_flops(l3, r3, 4) + _conv_flops(r3, r3, 4)
        + 2 * r3 * 10
    )
    assert count_flops(build_model(arch)) == expected


# ---- fractal stages and drops in the counts -------------------------------------------


@pytest.mark.parametrize("columns", [1, 2, 3])
def test_a_fractal_stage_adds_two_to_the_columns_minus_one_convs(columns):
    base = count_flops(build_model(ArchConfig(width=0.25)))
    arch = ArchConfig.from_dict({"width": 0.25, "L2": {"fractal": columns}})
    c = stage_channels(arch)["L2"]
    assert count_flops(build_model(arch)) - base == (2**columns - 1) * _conv_flops(c, c, 8)


def test_depth_dropout_adds_the_1x1_shortcuts_and_other_drops_cost_nothing_at_eval():
    base = count_flops(build_model(ArchConfig.from_dict({"width": 0.25, **R13})))
    c = stage_channels(ArchConfig(width=0.25))
    for kind in ("stochastic_depth", "drop_path", "width_dropout"):
        arch = ArchConfig.from_dict({"width": 0.25, **R13, "drop": {"kind": kind, "rate": 0.3}})
        assert count_flops(build_model(arch)) == base
    dd = ArchConfig.from_dict({"width": 0.25, **R13, "drop": {"kind": "depth_dropout", "rate": 0.3}})
    shortcuts = _conv_flops(c["L1"], c["L1"], 16, k=1) + _conv_flops(c["L3"], c["L3"], 4, k=1)
    assert count_flops(build_model(dd)) - base == shortcuts


def test_the_plain_network_keeps_its_state_dict_keys():
    keys = set(build_model(ArchConfig.from_dict({"width": 0.125, **R13})).state_dict())
    assert "l1.residual.0.branch.0.conv.weight" in keys and "l3.residual.0.branch.1.bn.running_mean" in keys
    assert not any(word in key for key in keys for word in ("shortcut", "offset", "mask", "fractal", "join"))


# ---- composition ----------------------------------------------------------------------

COMBINATIONS = [
    {"drop": {"kind": "stochastic_depth", "rate": 0.5}, "width_schedule": "pyramid"},
    {"drop": {"kind": "depth_dropout", "rate": 0.5}, "width_schedule": "pyramid", "L2": {"fractal": 2}},
    {"drop": {"kind": "drop_path", "rate": 0.3, "global_share": 0.5}, "L2": {"fractal": 3}},
    {"drop": {"kind": "drop_path", "rate": 0.2}, "width_schedule": "pyramid", "L2": {"fractal": 2, "deformable": True}},
    {"drop": {"kind": "width_dropout", "rate": 0.2}, "L3": {"residual": 1, "deformable": True}, "deformable_mask": True},
    {"drop": {"kind": "stochastic_depth", "rate": 0.2}, "L1": {"residual": 2, "extra": 1, "fractal": 2},
     "L3": {"residual": 2, "deformable": True}, "width_schedule": "pyramid", "deformable_mask": True},
]


@pytest.mark.parametrize("extra", COMBINATIONS, ids=lambda d: ArchConfig.from_dict({**R13, **d}).short_name())
def test_the_builder_composes_the_primitives(extra):
    arch = ArchConfig.from_dict({"width": 0.125, **R13, **extra})
    model = build_model(arch)
    x = torch.randn(4, 3, 16, 16)
    model.train()
    out = model(x)
    assert out.shape == (4, 10)
    out.square().sum().backward()
    assert model.prep.conv.weight.grad.abs().sum() > 0 and model.head.weight.grad.abs().sum() > 0
    model.eval()
    assert model(x).shape == (4, 10)
    assert model.forward_features(x).shape == (4, stage_channels(arch)["L3"])


def test_deformable_stages_make_every_3x3_conv_of_the_stage_deformable():
    arch = ArchConfig.from_dict({"width": 0.125, "L2": {"extra": 1, "residual": 1, "fractal": 2, "deformable": True}})
    model = build_model(arch)
    in_l2 = [
        m for name, m in model.l2.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and not name.endswith((".offset", ".mask"))
    ]
    deformable = [m for m in in_l2 if isinstance(m, DeformConv2d)]
    assert len(deformable) == 1 + 1 + 2 + 3  # stage conv, extra, residual branch, 3-conv fractal
    assert not any(isinstance(m, DeformConv2d) for m in model.l1.modules())


def test_residual_blocks_refuse_to_narrow():
    with pytest.raises(ValueError, match="cannot narrow"):
        ResidualBlock(8, 4)
