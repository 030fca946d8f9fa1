"""Test-time augmentation: the logits of a network averaged over transformed copies of each
image (Page, "How to train your ResNet 8", 2018: the image and its mirror; airbench94's
`infer`, Jordan 2024, level 2: also shifted by one pixel up-left and down-right, with mirrors).

The copies go through the network as one batch; in eval mode BatchNorm uses its running
statistics, so each image's logits are those of its own copies alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def tta_logits(model: nn.Module, x: torch.Tensor, level: str) -> torch.Tensor:
    """Logits of `model` on `x` (B, 3, H, W) under test-time augmentation `level`:
    none: model(x); flip: mean of the image's and its mirror's; flip_translate: half that,
    half the mean of it over the image shifted one pixel up-left and down-right (reflect
    padding), airbench94's weighting."""
    if level == "none":
        return model(x)
    if level == "flip":
        return _mirror_mean(model, x)
    if level == "flip_translate":
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        h, w = x.shape[-2:]
        shifted = torch.cat([padded[:, :, :h, :w], padded[:, :, 2:, 2:]])
        translate = _mirror_mean(model, shifted).view(2, len(x), -1).mean(0)
        return 0.5 * _mirror_mean(model, x) + 0.5 * translate
    raise ValueError(f"tta must be none, flip or flip_translate, but got {level!r}.")


def _mirror_mean(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    both = model(torch.cat([x, x.flip(3)]).contiguous(memory_format=torch.channels_last))
    return both.view(2, len(x), -1).mean(0)
