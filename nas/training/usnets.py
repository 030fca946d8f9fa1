"""Train one network for every width: universally slimmable training (US-Nets).

Yu & Huang, "Universally Slimmable Networks and Improved Training Techniques", ICCV 2019:
- **Sandwich rule.** Every step trains the max width, the min width and ``samples - 2``
  widths drawn uniformly in between: the extremes bound the performance of every width in
  between, so training them every step trains them all.
- **Inplace distillation.** The max width learns from the labels; every smaller width learns
  from the max width's predicted distribution of the same batch, detached (a soft-target
  cross-entropy: the teacher is not pulled towards its students).
- **Post-statistics of BatchNorm.** Each width needs its own BN statistics; they are not
  kept during training but recomputed after it, per evaluated width, over a few training
  batches (`recalibrate_bn`; the paper: about 2,000 images suffice).

The gradients of all widths accumulate into the shared weights and the optimizer steps once
per batch, with the fast recipe's schedule (`nas.training.recipe`). The smaller widths' losses are
averaged (each weighs 1 / (samples - 1)), where the paper's code sums them: summed, the first
channels, which every width shares, get about `samples` times a plain step's gradient, and at
the fast recipe's learning rate (0.4, set for one loss) training stalled. Measured on
R:L1+L3 w=0.25, 3,000 CIFAR-10 images, 4 epochs, samples 4: the max width's val accuracy was
13.2% summed, 30.2% averaged, 24.0% for the same net trained plainly (one seed each). With
samples 2 the two rules agree. Only the max width updates the BN
running statistics in training, so the per-epoch metrics (the max width's) mean what they
mean for a plain trial, and search, pruning and the store need no change. After training,
`accuracy_at_widths` gives the curve of accuracy against params and FLOPs; the slicing
itself is in `nas.models.width_slicing`.

Here are the US-Nets pieces; the step that applies them is `nas.training.steps.SandwichStep`,
run by the one epoch loop (`nas.training.loop`), which makes the network slimmable. Read top
to bottom in the order a trial uses them: the widths of a step, the distillation loss, then
BN recalibration and the width curve.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from nas.data.config import DataConfig
from nas.data.tensors import CifarSplits, train_batches
from nas.models import FastResNet, count_flops, count_params
from nas.models.width_slicing import extract_width
from nas.training.evaluate import autocast, evaluate
from nas.training.recipe import Recipe, SlimmableConfig

# Width ratios of the recorded curve, besides min_width and max_width: those inside (min, max).
CURVE_WIDTHS = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
CALIBRATION_IMAGES = 2000  # training images per width for BN post-statistics (US-Nets: 2,000 suffice)

# ----------------------------------------------------------------------------- one step's widths


def sandwich_widths(cfg: SlimmableConfig, generator: torch.Generator) -> list[float]:
    """The width ratios of one step: max, min, then ``samples - 2`` uniform in [min, max]."""
    draws = torch.rand(cfg.samples - 2, generator=generator, dtype=torch.float64).tolist()
    return [cfg.max_width, cfg.min_width, *(cfg.min_width + u * (cfg.max_width - cfg.min_width) for u in draws)]


def distillation_loss(logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Soft-target cross-entropy, -sum_k p_k log softmax(logits)_k, mean over the batch.

    Inplace distillation's loss: `teacher_probs` is the max width's softmax, detached. It
    differs from KL(p || q) by the teacher's entropy, a constant, so the gradients are KL's.
    """
    return -(teacher_probs * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


# ----------------------------------------------------------------------------- BN post-statistics


@torch.no_grad()
def recalibrate_bn(
    model: FastResNet,
    data: CifarSplits,
    data_cfg: DataConfig,
    *,
    batch_size: int,
    images: int = CALIBRATION_IMAGES,
    generator: torch.Generator,
) -> None:
    """Recompute every BatchNorm's running statistics of `model` from training batches.

    US-Nets' post-statistics: the running statistics are reset and recomputed in training
    mode as a cumulative average (momentum None) over ``ceil(images / batch_size)``
    augmented training batches (at most one epoch), without gradients. Leaves `model` in
    eval mode, its weights unchanged.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches, not an exponential one
    model.train()
    batches = max(1, math.ceil(images / batch_size))
    try:
        for i, (x, _) in enumerate(train_batches(data, batch_size, data_cfg, generator)):
            if i == batches:
                break
            with autocast(x.device):
                model(x.contiguous(memory_format=torch.channels_last))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()


# ----------------------------------------------------------------------------- the width curve


@dataclass(frozen=True)
class WidthPoint:
    """One width of a US-Net after training, with BN statistics recomputed for it."""

    width: float  # ratio of the architecture's width, in (0, 1]
    params: int  # of the member at this width (the sliced network)
    flops: int  # forward FLOPs per image of that member
    val_acc: float | None  # None without a val split
    test_acc: float


@dataclass(frozen=True)
class WidthCurve:
    """Accuracy against cost across the widths of one universally slimmable network."""

    points: tuple[WidthPoint, ...]  # widths ascending

    def at(self, width: float) -> WidthPoint:
        return next(p for p in self.points if p.width == width)

    def to_json(self) -> str:
        return json.dumps([asdict(p) for p in self.points])

    @classmethod
    def from_json(cls, text: str) -> WidthCurve:
        return cls(points=tuple(WidthPoint(**p) for p in json.loads(text)))


def curve_widths(cfg: SlimmableConfig) -> list[float]:
    """The widths a trial records: min, max and the `CURVE_WIDTHS` between them."""
    return sorted({cfg.min_width, cfg.max_width, *(w for w in CURVE_WIDTHS if cfg.min_width < w < cfg.max_width)})


def accuracy_at_widths(
    model: FastResNet,
    data: CifarSplits,
    data_cfg: DataConfig,
    recipe: Recipe,
    widths: list[float],
    *,
    seed: int = 0,
    calibration_images: int = CALIBRATION_IMAGES,
) -> WidthCurve:
    """Per width ratio: params, FLOPs, val and test accuracy of the trained US-Net.

    Each width is cut out as a standalone network (`extract_width`), its BN statistics are
    recomputed (`recalibrate_bn`, the same training images for every width) and it is
    evaluated; `model` itself is left unchanged.
    """
    points = []
    for width in sorted(widths):
        net = extract_width(model, width)
        recalibrate_bn(net, data, data_cfg, batch_size=recipe.batch_size, images=calibration_images,
                       generator=torch.Generator().manual_seed(seed))
        val_acc = evaluate(net, data.val_x, data.val_y, recipe.eval_batch_size) if len(data.val_y) else None
        points.append(WidthPoint(
            width=width, params=count_params(net), flops=count_flops(net), val_acc=val_acc,
            test_acc=evaluate(net, data.test_x, data.test_y, recipe.eval_batch_size),
        ))
    return WidthCurve(points=tuple(points))
