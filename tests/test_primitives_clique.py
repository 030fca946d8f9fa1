"""Clique blocks (Yang et al., "Convolutional Neural Networks with Alternately Updated Clique",
CVPR 2018): stage II reuses stage I's convs, shapes, config, short names, costs and export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.errors import ConfigError
from nas.export.write import check_against_nas, load_module, render_model
from nas.models import ArchConfig, build_model, count_flops, count_params, parse_short_name, unit_channels
from nas.models.blocks import CliqueBlock
from nas.models.deform import DeformConv2d
from nas.config.space import ARCH_KEYS

R13 = {"L1": {"residual": 1}, "L3": {"residual": 1}}


def _conv_flops(c_in: int, c_out: int, side: int, k: int = 3) -> int:
    return 2 * c_in * c_out * k * k * side * side


def _pairs(layers: int) -> list[tuple[int, int]]:
    """(l, i): every ordered pair with a conv W_li, l in 0..n, i in 1..n, l != i."""
    return [(l, i) for i in range(1, layers + 1) for l in range(layers + 1) if l != i]


# ---- the block ------------------------------------------------------------------------


def test_the_block_has_one_conv_per_ordered_pair_and_no_other_3x3_conv():
    block = CliqueBlock(8, 12, layers=3)
    assert sorted(block.convs) == sorted(f"{l}_{i}" for l, i in _pairs(3))
    assert len(block.convs) == 3**2
    convs_3x3 = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs_3x3) == 9
    assert {block.convs[f"0_{i}"].in_channels for i in (1, 2, 3)} == {8}  # from X_0
    assert {block.convs[f"{l}_{i}"].in_channels for l, i in _pairs(3) if l} == {12}


def test_the_param_count_is_one_conv_per_ordered_pair_plus_bn_and_transition():
    c_in, c, n = 8, 12, 4
    block = CliqueBlock(c_in, c, layers=n)
    convs = n * c_in * c * 9 + n * (n - 1) * c * c * 9  # from X_0, then between the layers
    bns = 2 * n * 2 * c  # one BatchNorm (weight, bias) per layer and stage
    transition = (c_in + n * c) * c + 2 * c  # 1x1 conv and its BatchNorm
    assert count_params(block) == convs + bns + transition


def test_stage_two_runs_stage_ones_conv_modules_again():
    n = 3
    block = CliqueBlock(4, 6, layers=n).eval()
    calls: dict[str, list[int]] = {key: [] for key in block.convs}
    stage = [1]
    for key, conv in block.convs.items():
        conv.register_forward_hook(lambda module, args, out, key=key: calls[key].append(stage[0]))
    features = block.stage_one(torch.randn(2, 4, 5, 5))
    stage[0] = 2
    block.stage_two(features)
    for l, i in _pairs(n):
        if l == 0:
            assert calls[f"{l}_{i}"] == [1]  # X_0 only feeds stage I
        elif l < i:
            assert calls[f"{l}_{i}"] == [1, 2]  # the same module, so the same weights, in both stages
        else:
            assert calls[f"{l}_{i}"] == [2]  # backward connections exist in stage II only


def test_a_gradient_from_stage_two_alone_reaches_the_shared_weights():
    block = CliqueBlock(4, 6, layers=3).train()
    stage_one = [f.detach() for f in block.stage_one(torch.randn(2, 4, 5, 5))]  # cut stage I off
    torch.stack(block.stage_two(stage_one)).square().sum().backward()
    for l, i in _pairs(3):
        grad = block.convs[f"{l}_{i}"].weight.grad
        if l == 0:
            assert grad is None  # stage II never reads X_0
        else:
            assert grad is not None and grad.abs().sum() > 0
    assert all(bn.weight.grad is None for bn in block.stage1_bn)


def test_stage_two_updates_each_layer_from_the_layers_after_it():
    block = CliqueBlock(4, 6, layers=3).eval()
    features = block.stage_one(torch.randn(2, 4, 5, 5))
    first = block.stage_two(features)[0]
    changed = list(features)
    changed[3] = changed[3] + 1.0  # X_3 of stage I feeds X_1' through W_31
    assert not torch.allclose(block.stage_two(changed)[0], first)
    changed_input = [torch.randn_like(features[0]), *features[1:]]
    assert torch.equal(block.stage_two(changed_input)[0], first)  # X_0 does not


def test_the_output_is_the_transition_of_the_input_and_the_stage_two_layers():
    block = CliqueBlock(4, 6, layers=2).eval()
    x = torch.randn(2, 4, 5, 5)
    refined = block.stage_two(block.stage_one(x))
    expected = block.transition(torch.cat([x, *refined], dim=1))
    out = block(x)
    assert out.shape == (2, 6, 5, 5)
    assert torch.equal(out, expected)


def test_a_clique_block_needs_two_layers():
    with pytest.raises(ValueError, match="at least 2 layers"):
        CliqueBlock(4, 4, layers=1)


# ---- in the network -------------------------------------------------------------------


def test_a_clique_block_is_one_unit_after_the_fractal_block():
    arch = ArchConfig.from_dict({"width": 0.125, "L2": {"residual": 1, "fractal": 2, "clique": 3},
                                 "width_schedule": "pyramid"})
    widths = unit_channels(arch)["L2"]
    assert len(widths) == 1 + 1 + 1 + 1  # conv, residual, fractal, clique
    block = build_model(arch).l2.clique[0]
    assert block.convs["0_1"].in_channels == widths[2]  # fed by the fractal block
    assert block.transition.bn.num_features == widths[3] > widths[2]  # the pyramid's last unit of L2


def test_a_clique_network_trains_and_evaluates():
    arch = ArchConfig.from_dict({"width": 0.125, **R13, "L2": {"clique": 2}, "L3": {"residual": 1, "clique": 3}})
    model = build_model(arch).train()
    x = torch.randn(4, 3, 16, 16)
    out = model(x)
    assert out.shape == (4, 10)
    out.square().sum().backward()
    assert model.l2.clique[0].convs["1_2"].weight.grad.abs().sum() > 0
    assert model.prep.conv.weight.grad.abs().sum() > 0
    assert model.eval()(x).shape == (4, 10)


def test_deformable_stages_make_every_pair_conv_deformable():
    model = build_model(ArchConfig.from_dict({"width": 0.125, "L2": {"clique": 3, "deformable": True}}))
    block = model.l2.clique[0]
    assert all(isinstance(conv, DeformConv2d) for conv in block.convs.values())
    assert not isinstance(block.transition.conv, DeformConv2d)  # the 1x1 transition stays plain


# ---- costs ----------------------------------------------------------------------------


@pytest.mark.parametrize("layers", [2, 3, 4])
def test_flops_count_stage_twos_conv_runs_and_params_count_each_conv_once(layers):
    base = ArchConfig(width=0.25)
    arch = ArchConfig.from_dict({"width": 0.25, "L2": {"clique": layers}})
    c = unit_channels(arch)["L2"][-1]
    n, side = layers, 8  # L2 runs at 8x8 after its pool
    runs = n + n * (n - 1) // 2 + n * (n - 1)  # stage I: X_0 and forward pairs; stage II: all pairs between layers
    transition = _conv_flops(c + n * c, c, side, k=1)
    assert count_flops(build_model(arch)) - count_flops(build_model(base)) == runs * _conv_flops(c, c, side) + transition
    params = n * n * c * c * 9 + 2 * n * 2 * c + (c + n * c) * c + 2 * c
    assert count_params(build_model(arch)) - count_params(build_model(base)) == params


# ---- config, canonical form, short names ---------------------------------------------


def test_clique_at_its_default_keeps_every_stored_hash():
    explicit = ArchConfig.from_dict({"width": 0.25, "L1": {"residual": 1, "clique": 0}, "L3": {"residual": 1}})
    assert explicit.hash == "afd4b65a62cb"  # tests/test_models.py's pinned Residual:L1+L3
    assert "clique" not in explicit.to_json()
    with_clique = ArchConfig.from_dict({"width": 0.25, **R13, "L2": {"clique": 3}})
    assert with_clique.to_json() == '{"L1":{"residual":1},"L2":{"clique":3},"L3":{"residual":1},"width":0.25}'
    assert ArchConfig.from_json(with_clique.to_json()) == with_clique


@pytest.mark.parametrize("kind", ["stochastic_depth", "depth_dropout", "drop_path", "width_dropout"])
def test_no_drop_acts_on_clique_blocks(kind):
    arch = ArchConfig.from_dict({"L2": {"clique": 3}, "drop": {"kind": kind, "rate": 0.2}})
    assert arch == ArchConfig.from_dict({"L2": {"clique": 3}})


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (1, "arch.L2: clique must be 0 (none) or between 2 and 6 layers, but got 1."),
        (7, "arch.L2: clique must be 0 (none) or between 2 and 6 layers, but got 7."),
        (-1, "but got -1."),
        (True, "arch.L2: clique must be an integer (layers; 0 = none), but got True."),
        ("3", "arch.L2: clique must be an integer (layers; 0 = none), but got '3'."),
    ],
)
def test_invalid_clique_configs_name_the_field_the_value_and_the_rule(value, needle):
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict({"L2": {"clique": value}})
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        ({"L2": {"clique": 4}}, "C4:L2"),
        ({**R13, "L2": {"clique": 3}, "width": 0.25}, "R:L1+L3 C3:L2 w=0.25"),
        ({"L1": {"clique": 2}, "L2": {"clique": 6}, "L3": {"clique": 2}}, "C2:L1+L3 C6:L2"),
        ({"L2": {"fractal": 3, "clique": 2, "deformable": True}, **R13, "width_schedule": "pyramid"},
         "R:L1+L3 F3:L2 C2:L2 D:L2 pyr"),
    ],
)
def test_clique_short_names_read_and_parse_back(data, name):
    arch = ArchConfig.from_dict(data)
    assert arch.short_name() == name
    assert parse_short_name(name) == arch


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("C3:L2x2", "R and X only"),
        ("C1:L2", "clique must be 0 (none) or between 2 and 6 layers"),
        ("C3:L4", "stages are L1, L2, L3"),
        ("Q:L2", "C4:L2"),  # the error lists the clique token
    ],
)
def test_unreadable_clique_short_names_are_config_errors(text, needle):
    with pytest.raises(ConfigError) as err:
        parse_short_name(text)
    assert needle in str(err.value)


def test_clique_is_a_searchable_key():
    assert {"L1.clique", "L2.clique", "L3.clique"} <= set(ARCH_KEYS)


# ---- export ---------------------------------------------------------------------------


@pytest.mark.parametrize("short_name", [
    "R:L1+L3 C3:L2 w=0.125",
    "C2:L1+L3 D:L1 pyr w=0.125",
    "R:L2 F2:L2 C4:L2 Dm:L2 pyr w=0.125",
])
def test_the_exported_clique_network_has_nas_keys_and_logits(short_name):
    arch = parse_short_name(short_name)
    source = render_model(arch)
    assert "class CliqueBlock" in source and "import nas" not in source
    module = load_module(source)
    # non-trivial weights: BN statistics and deformable offsets away from their init
    state = {k: v + 0.1 * torch.randn(v.shape, generator=torch.Generator().manual_seed(i)) if v.is_floating_point()
             else v for i, (k, v) in enumerate(build_model(arch, seed=3).state_dict().items())}
    assert check_against_nas(arch, module, state) <= 1e-5
    assert set(module.Net().state_dict()) == set(build_model(arch).state_dict())
