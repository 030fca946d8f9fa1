"""Compose an `ArchConfig` into a network.

prep ConvBN(64w) -> L1 (128w) -> L2 (256w) -> L3 (512w) -> global max-pool -> linear (no
bias) -> logits x 0.125. The output scale keeps the initial logits small, which the fast
recipe's high learning rate relies on (Page, 2018).

Everything per block is decided here, once: each unit's width (the width schedule), each
residual block's drop rate (stochastic depth counts residual blocks over the whole net),
which convs are deformable. The blocks only do what they are told.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from nas.models.arch import STAGES, ArchConfig
from nas.models.blocks import (
    CliqueBlock,
    ConvBN,
    ConvLayer,
    FractalBlock,
    ResidualBlock,
    Stage,
    conv1x1,
    conv1x1_shortcut,
    conv3x3,
)
from nas.models.deform import DeformConv2d
from nas.models.drop import DepthDropout, DropPath, StochasticDepth, WidthDropout
from nas.models.exits import ExitHead
from nas.models.trick_layers import apply_tricks
from nas.models.whitening import CHANNELS as WHITENED_CHANNELS
from nas.models.whitening import PatchWhitening

BASE_CHANNELS = {"prep": 64, "L1": 128, "L2": 256, "L3": 512}  # at width 1.0
NUM_CLASSES = 10
LOGIT_SCALE = 0.125


def unit_channels(arch: ArchConfig) -> dict[str, list[int]]:
    """Output channels of every unit: prep, then per stage [conv, *extras, *residual, fractal,
    clique] (a fractal or clique block is one unit; each is there only when the stage has it).

    ``double``: every unit of a stage has the stage's width. ``pyramid`` (PyramidNet): the
    N units after prep grow by the same step, unit k (1..N) having
    round(c_prep + (c_last - c_prep) * k / N) channels, so prep and the last unit keep the
    widths of the double schedule and the costs stay comparable.
    """
    base = {name: max(1, round(c * arch.width)) for name, c in BASE_CHANNELS.items()}
    counts = {name: _units(arch, name) for name in STAGES}
    if arch.width_schedule == "double":
        return {"prep": [base["prep"]], **{name: [base[name]] * counts[name] for name in STAGES}}
    first, last, total = base["prep"], base["L3"], sum(counts.values())
    out: dict[str, list[int]] = {"prep": [first]}
    k = 0
    for name in STAGES:
        out[name] = [max(1, round(first + (last - first) * (k + i + 1) / total)) for i in range(counts[name])]
        k += counts[name]
    return out


def stage_channels(arch: ArchConfig) -> dict[str, int]:
    """Channels leaving prep and each stage, after the width multiplier (at least 1)."""
    return {name: widths[-1] for name, widths in unit_channels(arch).items()}


def survival_probabilities(blocks: int, final_drop: float) -> list[float]:
    """Stochastic depth's linear rule: p_l = 1 - l/L * (1 - p_L) for blocks l = 1..L.

    Args:
        blocks: L, the residual blocks of the whole net (0 gives an empty list).
        final_drop: 1 - p_L, the drop probability of the last block.
    """
    return [1.0 - l / blocks * final_drop for l in range(1, blocks + 1)]


def _units(arch: ArchConfig, stage: str) -> int:
    s = getattr(arch, stage)
    return 1 + s.extra + s.residual + (1 if s.fractal else 0) + (1 if s.clique else 0)


class FastResNet(nn.Module):
    """The backbone with the insertions of one `ArchConfig`.

    Args:
        arch: the architecture.
        num_classes: logits.
        generator: CPU generator of the drop decisions in training (None: torch's
            default); `build_model` gives each network its own, seeded.
    """

    def __init__(
        self, arch: ArchConfig, num_classes: int = NUM_CLASSES, *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.arch = arch
        widths = unit_channels(arch)
        drop = arch.drop
        blocks = sum(getattr(arch, name).residual for name in STAGES)
        survival = survival_probabilities(blocks, drop.rate) if drop.kind == "stochastic_depth" else []
        tricks = arch.tricks
        if tricks.whiten:  # Page post 7: fixed whitening, then a learnable 1x1 conv-BN-act as prep
            self.whiten = PatchWhitening()  # fitted before training (`nas.training.loop`)
            self.prep = ConvBN(WHITENED_CHANNELS, widths["prep"][0], conv_layer=conv1x1)
        else:
            self.whiten = nn.Identity()  # no weights: the plain network's keys
            self.prep = ConvBN(3, widths["prep"][0])
        previous = widths["prep"][0]
        index = 0  # residual blocks so far, over the whole net
        for name in STAGES:
            stage = getattr(arch, name)
            conv_layer = _conv_layer(stage.deformable, arch.deformable_mask)
            unit = iter(widths[name])
            c = next(unit)
            conv = ConvBN(previous, c, conv_layer=conv_layer)
            extra, residual, fractal = [], [], []
            for _ in range(stage.extra):
                previous, c = c, next(unit)
                extra.append(ConvBN(previous, c, conv_layer=conv_layer))
            for _ in range(stage.residual):
                previous, c = c, next(unit)
                residual.append(_residual_block(previous, c, conv_layer, arch, survival, index, generator))
                index += 1
            if stage.fractal:
                previous, c = c, next(unit)
                fractal.append(FractalBlock(
                    previous, c, stage.fractal, conv_layer=conv_layer,
                    drop_prob=drop.rate if drop.kind == "drop_path" else 0.0,
                    global_prob=drop.global_share, generator=generator,
                ))
            clique = []  # no drop acts on clique blocks
            if stage.clique:
                previous, c = c, next(unit)
                clique.append(CliqueBlock(previous, c, stage.clique, conv_layer=conv_layer))
            setattr(self, name.lower(), Stage(conv, extra=extra, residual=residual, fractal=fractal, clique=clique,
                                              pool_before_bn=tricks.pool_before_bn))
            previous = c
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(previous, num_classes, bias=False)
        # BranchyNet side exits (`nas.models.exits`), made last so the backbone's weights
        # from a seed are those of the same net without exits; empty without exits.
        self.exits = nn.ModuleDict({
            name: ExitHead(widths[name][-1], num_classes, LOGIT_SCALE) for name in arch.exits.stages
        })
        apply_tricks(self, tricks)  # activation, ghost BN, frozen BN scales: every block alike

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.whiten(x)
        x = self.prep(x)
        x = self.l1(x)
        x = self.l2(x)
        x = self.l3(x)
        return self.pool(x).flatten(1)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x) * LOGIT_SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit: the side exits in network order, then the final one
        (which `forward` returns alone)."""
        logits = []
        x = self.prep(self.whiten(x))
        for name in STAGES:
            x = getattr(self, name.lower())(x)
            if name in self.exits:
                logits.append(self.exits[name](x))
        logits.append(self.forward_head(self.pool(x).flatten(1)))
        return logits


def _conv_layer(deformable: bool, modulated: bool) -> ConvLayer:
    if not deformable:
        return conv3x3
    return partial(DeformConv2d, kernel_size=3, padding=1, bias=False, modulated=modulated)


def _residual_block(
    in_channels: int,
    out_channels: int,
    conv_layer: ConvLayer,
    arch: ArchConfig,
    survival: list[float],
    index: int,
    generator: torch.Generator | None,
) -> ResidualBlock:
    """Residual block number `index` (from 0, over the whole net) with the arch's drop."""
    kind, rate = arch.drop.kind, arch.drop.rate
    join, shortcut, drop_layer = None, None, None
    if kind == "stochastic_depth":
        join = StochasticDepth(survival[index], generator=generator)
    elif kind == "depth_dropout":
        join, shortcut = DepthDropout(rate, generator=generator), conv1x1_shortcut
    elif kind == "drop_path":
        join = DropPath(rate, arch.drop.global_share, generator=generator)
    elif kind == "width_dropout":
        drop_layer = partial(WidthDropout, rate, generator=generator)
    return ResidualBlock(
        in_channels, out_channels, conv_layer=conv_layer, join=join, shortcut_layer=shortcut, drop_layer=drop_layer
    )


def build_model(arch: ArchConfig, *, seed: int = 0) -> FastResNet:
    """Build the network with weights drawn from `seed`, leaving global RNG state alone.

    The network's drop decisions in training come from its own CPU generator, seeded from
    `seed` too, so a seed reproduces a training run's drops as well as its weights.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FastResNet(arch, generator=generator)
