"""Depth- and width-dropping primitives: stochastic depth, depth dropout, drop-path, width
dropout, and the fractal block drop-path acts on. Tiny tensors; one behaviour per test."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nas.models import ArchConfig, build_model, survival_probabilities
from nas.models.blocks import FractalBlock, ResidualBlock, conv1x1_shortcut
from nas.models.drop import (
    DepthDropout,
    DropPath,
    StochasticDepth,
    WidthDropout,
    drop_path_join,
    join_keep_mask,
    run_on_subset,
)

C = 4  # channels of the tiny blocks


def _x(batch: int = 8, channels: int = C, side: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, side, side, generator=torch.Generator().manual_seed(seed))


class CountingBranch(nn.Module):
    """A branch that records the batch size of every call; output 3 * x + 1."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        return 3 * x + 1


def _block(join: nn.Module | None = None, *, shortcut=None, drop_layer=None, seed: int = 0) -> ResidualBlock:
    torch.manual_seed(seed)
    return ResidualBlock(C, join=join, shortcut_layer=shortcut, drop_layer=drop_layer)


def _with_weights_of(block: ResidualBlock, plain: ResidualBlock) -> ResidualBlock:
    block.branch.load_state_dict(plain.branch.state_dict())
    return block


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- running a branch on a subset -----------------------------------------------------


def test_run_on_subset_runs_the_branch_on_the_kept_images_only():
    x, branch = _x(), CountingBranch()
    keep = torch.tensor([True, False, True, True, False, False, True, False])
    out = run_on_subset(x, x, branch, keep, 2.0)
    assert branch.calls == [4]
    torch.testing.assert_close(out[keep], x[keep] + 2 * (3 * x[keep] + 1))
    assert torch.equal(out[~keep], x[~keep])


def test_run_on_subset_skips_the_branch_when_no_image_is_kept():
    x, branch = _x(), CountingBranch()
    out = run_on_subset(x, x, branch, torch.zeros(8, dtype=torch.bool))
    assert branch.calls == [] and torch.equal(out, x)


def test_run_on_subset_gradients_equal_the_masked_dense_computation():
    torch.manual_seed(0)
    conv = nn.Conv2d(C, C, 3, padding=1)
    x = _x().requires_grad_()
    keep = torch.tensor([True, False, True, True, False, False, True, False])
    run_on_subset(x * 1.0, x, conv, keep, 1.5).pow(2).sum().backward()
    grads = (x.grad.clone(), conv.weight.grad.clone())
    x.grad, conv.weight.grad = None, None
    mask = keep.float().view(-1, 1, 1, 1)
    (x + 1.5 * mask * conv(x)).pow(2).sum().backward()
    torch.testing.assert_close(grads[0], x.grad)
    torch.testing.assert_close(grads[1], conv.weight.grad)


def test_run_on_subset_keeps_channels_last_both_ways():
    x = _x().contiguous(memory_format=torch.channels_last).requires_grad_()
    keep = torch.tensor([True, False] * 4)
    out = run_on_subset(x * 1.0, x, CountingBranch(), keep)
    assert out.is_contiguous(memory_format=torch.channels_last)
    out.sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


# ---- stochastic depth -----------------------------------------------------------------


def test_stochastic_depth_eval_is_deterministic_and_runs_every_branch_unscaled():
    block = _block(StochasticDepth(0.3)).eval()
    x = _x()
    first, second = block(x), block(x)
    assert torch.equal(first, second)
    assert torch.equal(first, x + block.branch(x))
    counting = CountingBranch()
    block.join(x, x, counting)
    assert counting.calls == [8]


def test_stochastic_depth_at_survival_1_equals_the_plain_block_exactly():
    plain = _block().train()
    block = _with_weights_of(_block(StochasticDepth(1.0), seed=1), plain).train()
    x = _x()
    assert torch.equal(block(x), plain(x))


def test_stochastic_depth_at_survival_0_never_calls_the_branch():
    join, branch, x = StochasticDepth(0.0, generator=_gen()).train(), CountingBranch(), _x()
    for _ in range(5):
        assert torch.equal(join(x, x, branch), x)
    assert branch.calls == []


def test_stochastic_depth_scales_survivors_by_one_over_survival():
    join, branch, x = StochasticDepth(0.5, generator=_gen(3)).train(), CountingBranch(), _x(batch=64)
    out = join(x, x, branch)
    kept = ~torch.isclose(out, x).flatten(1).all(1)
    assert branch.calls == [int(kept.sum())] and 0 < kept.sum() < 64
    torch.testing.assert_close(out[kept], x[kept] + (3 * x[kept] + 1) / 0.5)


def test_stochastic_depth_keeps_images_with_the_survival_probability():
    join, branch, x = StochasticDepth(0.7, generator=_gen(5)).train(), CountingBranch(), _x(batch=100, side=1)
    for _ in range(40):
        join(x, x, branch)
    assert sum(branch.calls) / 4000 == pytest.approx(0.7, abs=0.03)


def test_survival_follows_the_linear_rule():
    assert survival_probabilities(4, 0.5) == pytest.approx([0.875, 0.75, 0.625, 0.5])
    assert survival_probabilities(1, 0.3) == pytest.approx([0.7])  # L = 1: the only block is the last
    assert survival_probabilities(0, 0.3) == []


def test_survival_is_counted_over_residual_blocks_of_the_whole_net():
    arch = ArchConfig.from_dict({
        "width": 0.125, "L1": {"residual": 2}, "L2": {"residual": 1}, "L3": {"residual": 3},
        "drop": {"kind": "stochastic_depth", "rate": 0.6},
    })
    model = build_model(arch)
    found = [m.survival for m in model.modules() if isinstance(m, StochasticDepth)]
    assert found == pytest.approx([1 - l / 6 * 0.6 for l in range(1, 7)])


# ---- depth dropout --------------------------------------------------------------------


def _dd_block(rate: float, seed: int = 0) -> ResidualBlock:
    return _block(DepthDropout(rate, generator=_gen(seed)), shortcut=conv1x1_shortcut, seed=seed)


def test_depth_dropout_eval_runs_every_branch_without_rescaling():
    block = _dd_block(0.5).eval()
    with torch.no_grad():
        block.shortcut.weight.mul_(0.5)  # a trained t_n, not the identity
    x = _x()
    assert torch.equal(block(x), block(x))
    torch.testing.assert_close(block(x), block.shortcut(x) + block.branch(x))


def test_depth_dropout_at_rate_0_equals_the_plain_block_exactly():
    plain = _block().train()
    block = _with_weights_of(_dd_block(0.0, seed=1), plain).train()
    x = _x()
    assert torch.equal(block(x), plain(x))  # t_n starts as the identity


def test_depth_dropout_at_rate_1_never_calls_the_branch():
    join, branch, x = DepthDropout(1.0, generator=_gen()).train(), CountingBranch(), _x()
    shortcut = 0.5 * x
    for _ in range(5):
        assert torch.equal(join(x, shortcut, branch), shortcut)
    assert branch.calls == []


def test_depth_dropout_bypasses_images_and_does_not_rescale_the_kept():
    join, branch, x = DepthDropout(0.5, generator=_gen(2)).train(), CountingBranch(), _x(batch=64)
    shortcut = 0.5 * x
    out = join(x, shortcut, branch)
    kept = ~torch.isclose(out, shortcut).flatten(1).all(1)
    assert branch.calls == [int(kept.sum())] and 0 < kept.sum() < 64
    torch.testing.assert_close(out[kept], shortcut[kept] + 3 * x[kept] + 1)


@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_gradients_reach_the_1x1_shortcut(rate):
    block = _dd_block(rate).train()
    block(_x()).square().sum().backward()
    assert block.shortcut.weight.grad is not None and block.shortcut.weight.grad.abs().sum() > 0


def test_depth_dropout_shortcut_starts_as_the_zero_padded_identity():
    conv = conv1x1_shortcut(3, 5)
    x = _x(channels=3)
    out = conv(x)
    assert torch.equal(out[:, :3], x) and torch.equal(out[:, 3:], torch.zeros_like(out[:, 3:]))


# ---- drop-path ------------------------------------------------------------------------


def test_join_keep_mask_keeps_at_least_one_input_per_image():
    keep = join_keep_mask(500, 3, 0.9, generator=_gen())
    assert keep.any(1).all()
    assert (keep.sum(1) == 1).float().mean() > 0.9  # at p = 0.9 most rows were rescued


def test_join_keep_mask_drops_inputs_with_probability_p():
    keep = join_keep_mask(4000, 2, 0.2, generator=_gen())
    # p, less the rescued rows: each loses both inputs with p**2 and gets one of the two back
    assert (~keep).float().mean() == pytest.approx(0.2 - 0.2**2 / 2, abs=0.015)


def test_global_join_keep_mask_keeps_one_column_for_the_whole_batch():
    for seed in range(5):
        keep = join_keep_mask(16, 3, 0.0, global_prob=1.0, generator=_gen(seed))
        assert (keep.sum(1) == 1).all() and (keep == keep[0]).all()


def test_drop_path_eval_is_the_plain_sum_and_runs_every_branch():
    block = _block(DropPath(0.5, 0.5)).eval()
    x = _x()
    assert torch.equal(block(x), block(x))
    assert torch.equal(block(x), x + block.branch(x))


def test_drop_path_at_rate_0_equals_the_plain_block_exactly():
    plain = _block().train()
    block = _with_weights_of(_block(DropPath(0.0, 0.0), seed=1), plain).train()
    x = _x()
    assert torch.equal(block(x), plain(x))


def test_drop_path_gives_twice_the_mean_of_the_kept_inputs():
    join, branch = DropPath(0.5, generator=_gen(4)).train(), CountingBranch()
    x = torch.ones(400, 1, 1, 1)  # shortcut 1, branch 4: outputs 2 (shortcut only), 5 (both), 8 (branch only)
    out = join(x, x, branch).flatten()
    assert set(out.tolist()) == {2.0, 5.0, 8.0}
    assert branch.calls == [int((out != 2.0).sum())]  # images that dropped the branch did not run it
    assert out.mean().item() == pytest.approx(5.0, abs=0.3)  # unbiased: the eval output


def test_global_drop_path_picking_the_shortcut_never_calls_the_branch():
    join, x = DropPath(0.0, 1.0, generator=_gen(1)).train(), _x()
    outcomes = set()
    for _ in range(12):
        branch = CountingBranch()
        out = join(x, x, branch)
        if branch.calls:
            assert branch.calls == [8] and torch.equal(out, 2 * (3 * x + 1))
            outcomes.add("branch")
        else:
            assert torch.equal(out, 2 * x)
            outcomes.add("shortcut")
    assert outcomes == {"branch", "shortcut"}


def test_drop_path_join_is_the_mean_at_eval_and_of_the_kept_inputs_in_training():
    inputs = [torch.full((300, 1, 1, 1), v) for v in (0.0, 3.0, 9.0)]
    assert torch.equal(drop_path_join(inputs, 0.5, training=False), torch.stack(inputs).mean(0))
    out = drop_path_join(inputs, 0.5, training=True, generator=_gen()).flatten()
    subset_means = {0.0, 3.0, 9.0, 1.5, 4.5, 6.0, 4.0}
    assert set(out.tolist()) <= subset_means and len(set(out.tolist())) > 3


# ---- fractal block --------------------------------------------------------------------


def _count_convs(block: nn.Module) -> list[int]:
    calls: list[int] = []
    for module in block.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    return calls


@pytest.mark.parametrize("columns", [1, 2, 3])
def test_fractal_block_eval_runs_every_conv_once(columns):
    torch.manual_seed(0)
    block = FractalBlock(C, C, columns, drop_prob=0.5, global_prob=0.5).eval()
    calls = _count_convs(block)
    x = _x()
    assert torch.equal(block(x), block(x))
    assert len(calls) == 2 * (2**columns - 1)  # two passes


def test_fractal_block_at_rate_0_is_the_mean_of_its_columns():
    torch.manual_seed(0)
    block = FractalBlock(C, 6, 2).train()
    x = _x()
    expected = (block.conv(x) + block.second.conv(block.first.conv(x))) / 2
    torch.testing.assert_close(block(x), expected)


def test_global_drop_path_computes_one_column_only():
    torch.manual_seed(0)
    block = FractalBlock(C, C, 3, global_prob=1.0, generator=_gen(2)).train()
    calls = _count_convs(block)
    depths = set()
    for _ in range(12):
        calls.clear()
        block(_x())
        depths.add(len(calls))
    assert depths <= {1, 2, 4} and len(depths) > 1  # column c is 2**c convs deep


def test_fractal_column_is_the_chain_of_its_convs():
    torch.manual_seed(0)
    block = FractalBlock(C, C, 2).eval()
    x = _x()
    assert torch.equal(block.column(x, 1), block.second.conv(block.first.conv(x)))


# ---- width dropout --------------------------------------------------------------------


def test_width_dropout_eval_is_the_identity_and_rate_0_the_plain_block():
    x = _x()
    assert torch.equal(WidthDropout(0.5).eval()(x), x)
    plain = _block().train()
    block = _with_weights_of(_block(drop_layer=lambda: WidthDropout(0.0), seed=1), plain).train()
    assert torch.equal(block(x), plain(x))


def test_width_dropout_zeroes_whole_channels_and_rescales_the_rest():
    x = _x(batch=16, channels=32).abs() + 1
    out = WidthDropout(0.25, generator=_gen()).train()(x)
    zero = (out == 0).flatten(2).all(2)
    kept = ~zero
    assert torch.allclose(out[kept], x[kept] / 0.75)
    assert zero.float().mean().item() == pytest.approx(0.25, abs=0.06)


def test_width_dropout_at_rate_1_zeroes_everything():
    assert torch.equal(WidthDropout(1.0).train()(_x()), torch.zeros(8, C, 6, 6))


# ---- the network ----------------------------------------------------------------------

DROPS = [
    {"kind": "stochastic_depth", "rate": 0.5},
    {"kind": "depth_dropout", "rate": 0.5},
    {"kind": "drop_path", "rate": 0.3, "global_share": 0.5},
    {"kind": "width_dropout", "rate": 0.3},
]


def _net(drop: dict, **extra) -> nn.Module:
    return build_model(ArchConfig.from_dict({
        "width": 0.125, "L1": {"residual": 1}, "L2": {"fractal": 2}, "L3": {"residual": 2}, "drop": drop, **extra,
    }))


@pytest.mark.parametrize("drop", DROPS, ids=lambda d: d["kind"])
def test_network_eval_is_deterministic_and_runs_every_block_on_every_image(drop):
    model = _net(drop).eval()
    calls = []
    for name, module in model.named_modules():
        if name.endswith("branch") or (isinstance(module, nn.Conv2d) and "fractal" in name):
            module.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(model(x), model(x))
    assert calls == [4] * len(calls) and len(calls) == 2 * (3 + 3)  # 3 branches + 3 fractal convs, twice


def test_network_drops_are_reproducible_from_the_build_seed_and_leave_the_global_rng_alone():
    x = torch.randn(8, 3, 16, 16)
    a, b = _net(DROPS[0]).train(), _net(DROPS[0]).train()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    outs_a = [a(x) for _ in range(2)]
    assert torch.equal(torch.rand(3), expected)
    outs_b = [b(x) for _ in range(2)]
    assert all(torch.equal(p, q) for p, q in zip(outs_a, outs_b))


def test_stochastic_depth_at_rate_1_never_runs_the_last_block_in_training():
    model = _net({"kind": "stochastic_depth", "rate": 1.0}).train()
    calls = []
    model.l3.residual[1].branch.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    for _ in range(3):
        model(torch.randn(4, 3, 16, 16))
    assert calls == []


def test_deepcopy_keeps_the_drop_generator_shared_within_the_copy():
    model = copy.deepcopy(_net(DROPS[1]))
    joins = [m for m in model.modules() if isinstance(m, DepthDropout)]
    assert joins[0].generator is joins[1].generator is not None
