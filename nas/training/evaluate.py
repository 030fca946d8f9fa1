"""Evaluation of a trained network: accuracy, and the early-exit curve of a BranchyNet.

Also the device helpers every loop uses: bf16 autocast on CUDA, and a sync before timing.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from nas.data.tensors import CifarSplits, eval_batches
from nas.models import ArchConfig
from nas.models.exits import SWEEP_THRESHOLDS, ExitCurve, exit_flops, normalized_entropy, threshold_sweep
from nas.training.tta import tta_logits


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Accuracy of `model` in eval mode (BN running statistics, every block on)."""
    return evaluate_images(model, x, y, batch_size).sum().item() / max(1, len(y))


@torch.no_grad()
def evaluate_images(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, *,
                    tta: str = "none") -> torch.Tensor:
    """Which images of (x, y) `model` gets right in eval mode: a bool per image, in order
    (stored packed, `nas.stats.pack_correct`, so two architectures pair image by image).
    `tta`: the test-time augmentation of the logits (`nas.training.tta`)."""
    model.eval()
    parts = []
    for xb, yb in eval_batches(x, y, batch_size):
        with autocast(xb.device):
            logits = tta_logits(model, xb.contiguous(memory_format=torch.channels_last), tta)
        parts.append(logits.argmax(1) == yb)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool, device=x.device)


@torch.no_grad()
def exit_logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Every exit's float32 logits over `x` in eval mode (side exits first, then the final)."""
    model.eval()
    parts: list[list[torch.Tensor]] = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        with autocast(xb.device):
            outputs = model.forward_exits(xb.contiguous(memory_format=torch.channels_last))
        parts = parts or [[] for _ in outputs]
        for collected, logits in zip(parts, outputs):
            collected.append(logits.float())
    return [torch.cat(collected) for collected in parts]


def exit_curve(model: nn.Module, arch: ArchConfig, data: CifarSplits, batch_size: int) -> ExitCurve:
    """The early-exit curve of a trained net (BranchyNet): accuracy, mean inference FLOPs per
    image and exit shares on the val split (the test split when there is none), from one pass
    collecting every exit. Thresholds: SWEEP_THRESHOLDS (the same for every trial), the arch's
    own, and the deciles of the side exits' entropies, which resolve the curve where the
    images are (a briefly trained net has every entropy near 1)."""
    split, x, y = ("val", data.val_x, data.val_y) if len(data.val_y) else ("test", data.test_x, data.test_y)
    logits = exit_logits(model, x, batch_size)
    deciles: list[float] = []
    if len(logits) > 1 and len(y):
        entropies = torch.cat([normalized_entropy(side) for side in logits[:-1]])
        levels = torch.linspace(0.1, 0.9, 9, device=entropies.device)
        deciles = torch.quantile(entropies, levels).round(decimals=4).tolist()
    thresholds = sorted({*SWEEP_THRESHOLDS, arch.exits.threshold, *deciles})
    points = threshold_sweep(logits, y, exit_flops(model), thresholds)
    return ExitCurve(split=split, points=tuple(points))


def autocast(device: torch.device):
    # bf16 on CUDA halves memory traffic; on CPU fp32 is faster than emulated bf16.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

