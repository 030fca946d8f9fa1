"""Building blocks of the fast CIFAR-10 ResNet family.

ConvBN is conv3x3 -> BatchNorm -> ReLU, the unit of the whole family; a residual block
is two of them around a shortcut (Page, "How to train your ResNet", 2018). Where a block
widens the channels (the pyramid schedule), the identity shortcut is zero-padded (Han, Kim
& Kim, "Deep Pyramidal Residual Networks", CVPR 2017). A fractal block is FractalNet's
self-similar expansion (Larsson, Maire & Shakhnarovich, ICLR 2017). A clique block is
CliqueNet's loop of layers updated twice with the same weights (Yang, Zhong, Shen & Lin,
"Convolutional Neural Networks with Alternately Updated Clique", CVPR 2018). Which join a
residual block uses (plain, stochastic depth, depth dropout, drop-path) is a module passed
in; see `nas.models.drop`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas.models.drop import ResidualJoin, drop_path_join

ConvLayer = Callable[[int, int], nn.Module]  # (in_channels, out_channels) -> a 3x3 conv, padding 1


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """The family's conv: 3x3, padding 1, no bias (BN follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1x1 conv without bias (BN follows): mixes channels, e.g. a clique block's transition."""
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class ConvBN(nn.Module):
    """3x3 conv (no bias: BN follows) -> BatchNorm -> ReLU [-> drop]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        conv_layer: ConvLayer = conv3x3,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
        drop_layer: Callable[[], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.conv = conv_layer(in_channels, out_channels)
        self.bn = norm_layer(out_channels)
        self.act = act_layer(inplace=True)
        self.drop = drop_layer() if drop_layer is not None else nn.Identity()  # no weights: keys unchanged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.bn(x)
        x = self.act(x)
        return self.drop(x)


class PadChannels(nn.Module):
    """Identity shortcut to more channels: the new channels are zeros (PyramidNet)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - x.shape[1]))

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}"


def conv1x1_shortcut(in_channels: int, out_channels: int) -> nn.Conv2d:
    """Depth dropout's trainable shortcut t_n: a 1x1 conv that starts as the identity
    (zero-padded where channels grow), made without touching the random state."""
    conv = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 0, 0].fill_diagonal_(1.0)
    return conv


class ResidualBlock(nn.Module):
    """``join(x, shortcut(x), branch)``, branch = ConvBN -> ConvBN.

    Args:
        in_channels: input channels.
        out_channels: output channels (default: in_channels).
        conv_layer: the 3x3 conv of both ConvBNs (e.g. a deformable one).
        join: combines shortcut and branch (a `nas.models.drop` join); None: the plain sum.
        shortcut_layer: builds the shortcut from (in, out), e.g. `conv1x1_shortcut`; None:
            identity, zero-padded where out_channels > in_channels.
        drop_layer: after the first ConvBN (width dropout); None: nothing.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        conv_layer: ConvLayer = conv3x3,
        join: nn.Module | None = None,
        shortcut_layer: Callable[[int, int], nn.Module] | None = None,
        drop_layer: Callable[[], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        if out_channels < in_channels:
            raise ValueError(f"a residual block cannot narrow, but got {in_channels=} > {out_channels=}.")
        if shortcut_layer is not None:
            self.shortcut = shortcut_layer(in_channels, out_channels)
        elif out_channels > in_channels:
            self.shortcut = PadChannels(out_channels)
        else:
            self.shortcut = nn.Identity()
        self.branch = nn.Sequential(
            ConvBN(in_channels, out_channels, conv_layer=conv_layer, drop_layer=drop_layer),
            ConvBN(out_channels, out_channels, conv_layer=conv_layer),
        )
        self.join = join if join is not None else ResidualJoin()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.join(x, self.shortcut(x), self.branch)


class FractalBlock(nn.Module):
    """FractalNet block with `columns` columns; column c (from 0) is 2**c ConvBNs deep.

    f_1(z) = conv(z); f_C(z) = join(conv(z), f_{C-1}(f_{C-1}(z))), with consecutive joins
    merged into one, so the last join averages all C columns. In training, with
    probability `global_prob` one column (uniform) runs for the whole batch and only its
    convs are computed (global drop-path); otherwise every join drops inputs per image with
    probability `drop_prob` (local drop-path, `drop_path_join`), every column computed.

    Args:
        in_channels, out_channels: the first conv of each column maps in -> out.
        columns: C >= 1.
        conv_layer: the 3x3 conv of every ConvBN.
        drop_prob: local drop-path probability per join input.
        global_prob: share of training batches that run one column.
        generator: CPU generator of the drop decisions (None: torch's default).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        columns: int,
        *,
        conv_layer: ConvLayer = conv3x3,
        drop_prob: float = 0.0,
        global_prob: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if columns < 1:
            raise ValueError(f"columns must be at least 1, but got {columns=}.")
        self.columns = columns
        self.drop_prob = drop_prob
        self.global_prob = global_prob
        self.generator = generator
        self.conv = ConvBN(in_channels, out_channels, conv_layer=conv_layer)  # column 0
        if columns > 1:
            inner = {"conv_layer": conv_layer, "drop_prob": drop_prob, "generator": generator}
            self.first = FractalBlock(in_channels, out_channels, columns - 1, **inner)
            self.second = FractalBlock(out_channels, out_channels, columns - 1, **inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.global_prob > 0:
            if torch.rand((), generator=self.generator).item() < self.global_prob:
                return self.column(x, int(torch.randint(self.columns, (), generator=self.generator)))
        return self.join(self.paths(x))

    def paths(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of the columns, shallowest first, before the last join."""
        if self.columns == 1:
            return [self.conv(x)]
        z = self.join(self.first.paths(x))
        return [self.conv(x), *self.second.paths(z)]

    def column(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Column `index` alone (2**index ConvBNs); nothing else is computed."""
        if index == 0:
            return self.conv(x)
        return self.second.column(self.first.column(x, index - 1), index - 1)

    def join(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return drop_path_join(inputs, self.drop_prob, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"columns={self.columns}, drop_prob={self.drop_prob:.4g}, global_prob={self.global_prob:.4g}"


class CliqueBlock(nn.Module):
    """CliqueNet block: `layers` layers X_1..X_n, each connected both ways to every other.

    X_0 is the block input. One conv W_li per ordered pair (l -> i), l in 0..n, i in 1..n,
    l != i, so n**2 convs; f is BatchNorm -> ReLU.
      stage I:  X_i  = f(sum_{l<i} W_li * X_l)                      (X_0 included)
      stage II: X_i' = f(sum_{0<l<i} W_li * X_l' + sum_{m>i} W_mi * X_m)
    Stage II updates the layers alternately, each from the latest values of all the others,
    with the same conv modules as stage I (the forward pairs run twice, the backward pairs
    m > i once, in stage II only; X_0 only feeds stage I). Each stage has its own BatchNorm
    per layer: stage II's sums have more terms, so their statistics differ from stage I's.
    Output: the paper's block feature {X_0, X_1', ..., X_n'} (concatenated) through a 1x1
    conv-BN-ReLU transition to `out_channels` (the paper's transition, without its pooling:
    the stage has pooled already).

    Args:
        in_channels: channels of X_0.
        out_channels: channels of every layer X_i and of the output.
        layers: n >= 2 (with one layer, stage II would have nothing to update it from).
        conv_layer: the 3x3 conv of every pair (e.g. a deformable one).
    """

    def __init__(self, in_channels: int, out_channels: int, layers: int, *, conv_layer: ConvLayer = conv3x3) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError(f"a clique block needs at least 2 layers, but got {layers=}.")
        self.layers = layers
        # Key "l_i" is W_li, the conv from X_l to X_i; the keys are state_dict names.
        self.convs = nn.ModuleDict({
            f"{l}_{i}": conv_layer(in_channels if l == 0 else out_channels, out_channels)
            for i in range(1, layers + 1) for l in range(layers + 1) if l != i
        })
        self.stage1_bn = nn.ModuleList(nn.BatchNorm2d(out_channels) for _ in range(layers))
        self.stage2_bn = nn.ModuleList(nn.BatchNorm2d(out_channels) for _ in range(layers))
        self.act = nn.ReLU(inplace=True)
        self.transition = ConvBN(in_channels + layers * out_channels, out_channels, conv_layer=conv1x1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        refined = self.stage_two(self.stage_one(x))
        return self.transition(torch.cat([x, *refined], dim=1))

    def stage_one(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[X_0, X_1, ..., X_n]: each layer from the block input and the layers before it."""
        features = [x]
        for i in range(1, self.layers + 1):
            total = sum(self.convs[f"{l}_{i}"](features[l]) for l in range(i))
            features.append(self.act(self.stage1_bn[i - 1](total)))
        return features

    def stage_two(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """[X_1', ..., X_n'] from stage I's [X_0, X_1, ..., X_n]: each layer again, from the
        layers already updated (l < i) and those still from stage I (m > i)."""
        latest = list(features)  # latest[l]: X_l' once layer l is updated in stage II, else X_l
        for i in range(1, self.layers + 1):
            total = sum(self.convs[f"{l}_{i}"](latest[l]) for l in range(1, self.layers + 1) if l != i)
            latest[i] = self.act(self.stage2_bn[i - 1](total))
        return latest[1:]

    def extra_repr(self) -> str:
        return f"layers={self.layers}"


class Stage(nn.Module):
    """One insertion point L1..L3: conv -> 2x2 max-pool -> extras -> residual blocks -> fractal
    -> clique.

    Args:
        conv: the stage's conv unit (a ConvBN), run before the pool.
        extra, residual, fractal, clique: the blocks after the pool, in that order.
        pool_before_bn: pool between the conv and its BN-act (Page post 5: BN and the
            activation then run on a quarter of the pixels); else after the act.
    """

    def __init__(
        self,
        conv: nn.Module,
        *,
        extra: Sequence[nn.Module] = (),
        residual: Sequence[nn.Module] = (),
        fractal: Sequence[nn.Module] = (),
        clique: Sequence[nn.Module] = (),
        pool_before_bn: bool = False,
    ) -> None:
        super().__init__()
        self.conv = conv
        self.pool_before_bn = pool_before_bn
        self.pool = nn.MaxPool2d(2)
        # Empty Sequentials keep the state_dict keys the same shape for every config.
        self.extra = nn.Sequential(*extra)
        self.residual = nn.Sequential(*residual)
        self.fractal = nn.Sequential(*fractal)
        self.clique = nn.Sequential(*clique)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_before_bn:
            x = self.conv.act(self.conv.bn(self.pool(self.conv.conv(x))))
        else:
            x = self.pool(self.conv(x))
        x = self.extra(x)
        x = self.residual(x)
        x = self.fractal(x)
        return self.clique(x)
