"""Compose an `ArchConfig` into a network.

prep ConvBN(64w) -> L1 (128w) -> L2 (256w) -> L3 (512w) -> global max-pool -> linear (no
bias) -> logits x 0.125. The output scale keeps the initial logits small, which the fast
recipe's high learning rate relies on (Page, 2018).
"""

from __future__ import annotations

import torch
from torch import nn

from nas.models.arch import STAGES, ArchConfig
from nas.models.blocks import ConvBN, Stage

BASE_CHANNELS = {"prep": 64, "L1": 128, "L2": 256, "L3": 512}  # at width 1.0
NUM_CLASSES = 10
LOGIT_SCALE = 0.125


def stage_channels(arch: ArchConfig) -> dict[str, int]:
    """Channels of prep and each stage after the width multiplier (at least 1)."""
    return {name: max(1, round(c * arch.width)) for name, c in BASE_CHANNELS.items()}


class FastResNet(nn.Module):
    """The backbone with the insertions of one `ArchConfig`."""

    def __init__(self, arch: ArchConfig, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.arch = arch
        channels = stage_channels(arch)
        self.prep = ConvBN(3, channels["prep"])
        previous = channels["prep"]
        for name in STAGES:
            stage = getattr(arch, name)
            setattr(self, name.lower(), Stage(previous, channels[name], extra=stage.extra, residual=stage.residual))
            previous = channels[name]
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(previous, num_classes, bias=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prep(x)
        x = self.l1(x)
        x = self.l2(x)
        x = self.l3(x)
        return self.pool(x).flatten(1)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x) * LOGIT_SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(arch: ArchConfig, *, seed: int = 0) -> FastResNet:
    """Build the network with weights drawn from `seed`, leaving global RNG state alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FastResNet(arch)
