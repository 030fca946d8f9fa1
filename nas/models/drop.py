"""Regularisers that drop depth or width in training; at eval every block runs, unscaled.

- Stochastic depth: Huang, Sun, Liu, Sedra, Weinberger, "Deep Networks with Stochastic
  Depth", ECCV 2016. Residual block l of L keeps its branch with probability
  p_l = 1 - l/L * (1 - p_L). Convention here: survivors are scaled by 1/p_l in training
  and eval is unscaled (the paper scales by p_l at eval instead; the expectations agree).
- Depth dropout: Guo & Gould, "Depth Dropout: Efficient Training of Residual Convolutional
  Neural Networks", DICTA 2016. The branch is bypassed per image with probability p; the
  block's shortcut is a trainable 1x1 conv t_n (so the bypass can compensate), and
  nothing is rescaled: output t_n(x) + branch(x) when kept, t_n(x) when bypassed.
- Drop-path: Larsson, Maire, Shakhnarovich, "FractalNet: Ultra-Deep Neural Networks without
  Residuals", ICLR 2017. A join averages its inputs; local drop-path drops each input per
  image with probability p and keeps at least one; global drop-path keeps one column for
  the whole batch. The residual join is a sum, i.e. 2 x the mean of its two inputs
  (shortcut, branch), and is dropped the same way.
- Width dropout: channel dropout (Tompson et al., "Efficient Object Localization Using
  Convolutional Networks", CVPR 2015), inverted scaling, for comparison.

Skipping saves compute: a branch dropped for an image is not run for it. The images that
keep it are gathered, the branch runs on them alone, and its output is added back with
`index_add`; when no image keeps it, the branch is not called at all. BatchNorm inside a
branch run on a subset normalises with that subset's statistics and updates its running
statistics from them; that is what the papers' per-image formulation implies.

Masks are drawn on the CPU from `generator` (the network's own, seeded when it is built;
None: torch's default CPU generator), so the host knows how many images survive without
waiting for the accelerator, and a seed reproduces the drops on any device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

Branch = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- shared helpers


def run_on_subset(
    base: torch.Tensor,
    x: torch.Tensor,
    branch: Branch,
    keep: torch.Tensor,
    scale: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """``base + scale * branch(x)`` on the images where `keep`; `base` alone elsewhere.

    The branch runs once, on the kept images only (nothing is computed for the others), or
    not at all when no image is kept.

    Args:
        base: what the branch output is added to, shaped like it (B, C, H, W).
        x: the branch input, B images.
        branch: the computation to skip.
        keep: (B,) bool on the CPU, which images run the branch.
        scale: a number, or a (B,) CPU tensor of per-image factors for the branch output.
    """
    index = keep.nonzero().flatten()
    if index.numel() == 0:
        return base
    per_image = isinstance(scale, torch.Tensor)
    if index.numel() == keep.numel():  # every image kept: no gather, no scatter
        y = branch(x)
        if per_image:
            return base + y * scale.to(y.device, y.dtype).view(-1, 1, 1, 1)
        return base + y if scale == 1.0 else base + y * scale
    index_dev = index.to(x.device, non_blocking=True)
    y = branch(_GatherRows.apply(x, index_dev))
    if per_image:
        y = y * scale[index].to(y.device, y.dtype).view(-1, 1, 1, 1)
        scale = 1.0
    return _AddRows.apply(base, index_dev, y.to(base.dtype), float(scale))


class _GatherRows(torch.autograd.Function):
    """``x[index]`` along dim 0; forward and backward keep the memory format (channels_last).

    (`index_select`, `index_add` and their backwards return contiguous tensors; converting
    them back to channels_last around every branch ate much of the saving measured by
    benchmarks/depth_skip_speed.py.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.shape = x.shape
        return x[index]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        out = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=_format(grad)).zero_()
        out[index] = grad  # rows are distinct: a plain write
        return out, None


class _AddRows(torch.autograd.Function):
    """``base`` with ``alpha * y`` added to rows `index`; keeps the memory format both ways."""

    @staticmethod
    def forward(ctx, base: torch.Tensor, index: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.alpha = alpha
        return base.clone(memory_format=torch.preserve_format).index_add_(0, index, y, alpha=alpha)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        rows = grad[index]
        return grad, None, rows.mul_(ctx.alpha) if ctx.alpha != 1.0 else rows, None


def _format(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def join_keep_mask(
    batch: int,
    inputs: int,
    drop_prob: float,
    global_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which inputs of a join each image keeps: (batch, inputs) bool on the CPU.

    With probability `global_prob` the whole batch keeps one input, drawn uniformly
    (global drop-path); otherwise each image drops each input with probability
    `drop_prob` and, where it would drop them all, keeps one drawn uniformly (local).
    """
    if global_prob > 0 and torch.rand((), generator=generator).item() < global_prob:
        column = torch.randint(inputs, (), generator=generator).item()
        keep = torch.zeros(batch, inputs, dtype=torch.bool)
        keep[:, column] = True
        return keep
    keep = torch.rand(batch, inputs, generator=generator) >= drop_prob
    lost = (~keep.any(1)).nonzero().flatten()
    if lost.numel():
        keep[lost, torch.randint(inputs, (lost.numel(),), generator=generator)] = True
    return keep


# ----------------------------------------------------------------------------- residual joins


def stochastic_depth(
    x: torch.Tensor,
    shortcut: torch.Tensor,
    branch: Branch,
    survival: float,
    training: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``shortcut + branch(x)``, the branch kept per image with probability `survival`.

    In training the kept branch outputs are scaled by 1/survival and the dropped images do
    not run the branch; at eval every image runs it, unscaled.
    """
    if not training or survival >= 1.0:
        return shortcut + branch(x)
    keep = torch.rand(len(x), generator=generator) < survival
    return run_on_subset(shortcut, x, branch, keep, 1.0 / survival if survival > 0 else 1.0)


def depth_dropout(
    x: torch.Tensor,
    shortcut: torch.Tensor,
    branch: Branch,
    drop_prob: float,
    training: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``shortcut + branch(x)``, the branch bypassed per image with probability `drop_prob`.

    Nothing is rescaled, in training or at eval; `shortcut` is t_n(x), the block's 1x1 conv.
    """
    if not training or drop_prob <= 0.0:
        return shortcut + branch(x)
    keep = torch.rand(len(x), generator=generator) >= drop_prob
    return run_on_subset(shortcut, x, branch, keep)


def drop_path_residual(
    x: torch.Tensor,
    shortcut: torch.Tensor,
    branch: Branch,
    drop_prob: float,
    global_prob: float = 0.0,
    training: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The residual join ``shortcut + branch(x)`` = 2 x mean, with FractalNet's drop-path.

    In training each image keeps a random non-empty subset of {shortcut, branch} (see
    `join_keep_mask`) and gets 2 x the mean of what it kept, which is unbiased: its
    expectation is the eval output. Images that drop the branch do not run it.
    """
    if not training or (drop_prob <= 0.0 and global_prob <= 0.0):
        return shortcut + branch(x)
    keep = join_keep_mask(len(x), 2, drop_prob, global_prob, generator)
    factor = 2.0 / keep.sum(1)  # 2 x mean over the kept inputs
    shortcut_scale = (keep[:, 0] * factor).to(shortcut.device, shortcut.dtype).view(-1, 1, 1, 1)
    return run_on_subset(shortcut * shortcut_scale, x, branch, keep[:, 1], factor)


def drop_path_join(
    inputs: Sequence[torch.Tensor],
    drop_prob: float,
    training: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FractalNet's join: the element-wise mean of `inputs`; in training, local drop-path.

    Each image drops each input with probability `drop_prob`, keeps at least one, and
    averages what it kept. (Global drop-path picks a column before the inputs are
    computed; see `nas.models.blocks.FractalBlock`.)
    """
    if len(inputs) == 1:
        return inputs[0]
    stacked = torch.stack(list(inputs))  # (n, B, C, H, W)
    if not training or drop_prob <= 0.0:
        return stacked.mean(0)
    keep = join_keep_mask(stacked.shape[1], len(inputs), drop_prob, 0.0, generator).to(stacked.dtype)
    weights = (keep / keep.sum(1, keepdim=True)).t()  # (n, B)
    return (stacked * weights.to(stacked.device).view(*weights.shape, 1, 1, 1)).sum(0)


def width_dropout(
    x: torch.Tensor,
    drop_prob: float,
    training: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Channel dropout: each (image, channel) map is zeroed with probability `drop_prob`,
    the others scaled by 1/(1 - drop_prob) in training; identity at eval."""
    if not training or drop_prob <= 0.0:
        return x
    if drop_prob >= 1.0:
        return x * 0.0
    keep = torch.rand(x.shape[0], x.shape[1], generator=generator) >= drop_prob
    mask = keep.to(x.dtype).div_(1.0 - drop_prob).to(x.device)
    return x * mask.view(*mask.shape, 1, 1)


# ----------------------------------------------------------------------------- modules


class ResidualJoin(nn.Module):
    """The plain residual join: ``shortcut + branch(x)``."""

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor, branch: Branch) -> torch.Tensor:
        return shortcut + branch(x)


class StochasticDepth(nn.Module):
    """Residual join with stochastic depth (see `stochastic_depth`)."""

    def __init__(self, survival: float, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= survival <= 1.0:
            raise ValueError(f"survival must be in [0, 1], but got {survival=}.")
        self.survival = survival
        self.generator = generator

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor, branch: Branch) -> torch.Tensor:
        return stochastic_depth(x, shortcut, branch, self.survival, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"survival={self.survival:.4g}"


class DepthDropout(nn.Module):
    """Residual join with depth dropout (see `depth_dropout`); pair it with a 1x1 shortcut."""

    def __init__(self, drop_prob: float, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= drop_prob <= 1.0:
            raise ValueError(f"drop_prob must be in [0, 1], but got {drop_prob=}.")
        self.drop_prob = drop_prob
        self.generator = generator

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor, branch: Branch) -> torch.Tensor:
        return depth_dropout(x, shortcut, branch, self.drop_prob, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.4g}"


class DropPath(nn.Module):
    """Residual join with FractalNet drop-path (see `drop_path_residual`)."""

    def __init__(
        self, drop_prob: float, global_prob: float = 0.0, *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        for name, value in (("drop_prob", drop_prob), ("global_prob", global_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], but got {name}={value}.")
        self.drop_prob = drop_prob
        self.global_prob = global_prob
        self.generator = generator

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor, branch: Branch) -> torch.Tensor:
        return drop_path_residual(
            x, shortcut, branch, self.drop_prob, self.global_prob, self.training, self.generator
        )

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.4g}, global_prob={self.global_prob:.4g}"


class WidthDropout(nn.Module):
    """Channel dropout (see `width_dropout`)."""

    def __init__(self, drop_prob: float, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= drop_prob <= 1.0:
            raise ValueError(f"drop_prob must be in [0, 1], but got {drop_prob=}.")
        self.drop_prob = drop_prob
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return width_dropout(x, self.drop_prob, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.4g}"
