"""Building blocks of the fast CIFAR-10 ResNet family.

ConvBN is conv3x3 -> BatchNorm -> ReLU, the unit of the whole family; a residual block
is two of them around an identity shortcut (Page, "How to train your ResNet", 2018).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBN(nn.Module):
    """3x3 conv (no bias: BN follows) -> BatchNorm -> ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = norm_layer(out_channels)
        self.act = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.bn(x)
        return self.act(x)


class ResidualBlock(nn.Module):
    """x + branch(x), branch = ConvBN -> ConvBN at constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(ConvBN(channels, channels), ConvBN(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class Stage(nn.Module):
    """One insertion point L1..L3: ConvBN -> 2x2 max-pool -> extra ConvBNs -> residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, *, extra: int, residual: int) -> None:
        super().__init__()
        self.conv = ConvBN(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        # Empty Sequentials keep the state_dict keys the same shape for every config.
        self.extra = nn.Sequential(*(ConvBN(out_channels, out_channels) for _ in range(extra)))
        self.residual = nn.Sequential(*(ResidualBlock(out_channels) for _ in range(residual)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.pool(x)
        x = self.extra(x)
        return self.residual(x)
