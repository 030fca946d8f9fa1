"""Early exits: BranchyNet's side classifiers, their joint loss, and inference that leaves early.

BranchyNet (Teerapittayanon, McDanel & Kung, "BranchyNet: Fast Inference via Early Exiting
from Deep Neural Networks", ICPR 2016) adds side classifiers ("exits") part-way through a
network, trains every exit at once on the weighted sum of their losses, and at inference
lets a sample leave at the first exit whose softmax entropy is below that exit's threshold;
the final exit takes every sample still left. Here a side exit follows a stage (L1, L2; see
`ExitConfig`), the final exit is the backbone's own head, and entropies are divided by
ln(classes), so a threshold lies in [0, 1] whatever the number of classes: 0 sends every
sample to the final exit, anything above 1 (``math.inf``) sends every sample to the first.

Read in the order a trial uses it: the side head, the joint loss, which exit each sample
takes, the real early-exit forward pass, the FLOPs of leaving at each exit, and the
threshold sweep that turns one pass collecting every exit's logits into a curve of accuracy
against mean inference FLOPs per image.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nas.models.arch import STAGES
from nas.models.blocks import ConvBN
from nas.models.cost import INPUT_SHAPE, count_call_flops

# Thresholds of the recorded curve: 0 (every sample to the final exit) to 1 in steps of
# 0.05, then inf (every sample leaves at the first side exit).
SWEEP_THRESHOLDS = (*(i / 20 for i in range(21)), math.inf)

# ----------------------------------------------------------------------------- the side head


class ExitHead(nn.Module):
    """A side classifier: ConvBN (3x3, the stage's channels) -> global max-pool -> linear (no
    bias) -> logits x `logit_scale`.

    The main head's form with one conv in front, so the exit gets features of its own rather
    than sharing the backbone's (BranchyNet's branches have conv layers before their linear
    layer); the same logit scale keeps its initial logits as small as the main head's.
    """

    def __init__(self, channels: int, num_classes: int, logit_scale: float) -> None:
        super().__init__()
        self.conv = ConvBN(channels, channels)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(channels, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.pool(x).flatten(1)
        return self.head(x) * self.logit_scale


# ----------------------------------------------------------------------------- training


def exit_loss(
    exit_logits: Sequence[torch.Tensor], targets: torch.Tensor, side_weights: Sequence[float], *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """BranchyNet's joint loss: sum_n w_n * CE(exit n), the final exit weighing 1.

    Args:
        exit_logits: the side exits' logits in network order, then the final exit's.
        targets: class indices.
        side_weights: w_n of each side exit (`ExitConfig.weights`).
        label_smoothing: as in `F.cross_entropy`, for every exit.
    """
    if len(side_weights) != len(exit_logits) - 1:
        raise ValueError(f"{len(side_weights)} side weights for {len(exit_logits) - 1} side exits.")
    loss = F.cross_entropy(exit_logits[-1], targets, label_smoothing=label_smoothing)
    for weight, logits in zip(side_weights, exit_logits[:-1]):
        loss = loss + weight * F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    return loss


# ----------------------------------------------------------------------------- which exit


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) / ln(classes) of each row, in [0, 1], computed in float32."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return -(log_p.exp() * log_p).sum(1) / math.log(logits.shape[1])


def side_thresholds(thresholds: float | Sequence[float], side_exits: int) -> list[float]:
    """One threshold per side exit: a number is shared by all; a sequence gives each its own."""
    if isinstance(thresholds, (int, float)):
        return [float(thresholds)] * side_exits
    thresholds = [float(t) for t in thresholds]
    if len(thresholds) != side_exits:
        raise ValueError(f"{len(thresholds)} thresholds for {side_exits} side exits.")
    return thresholds


def exits_from_entropies(entropies: Sequence[torch.Tensor], thresholds: float | Sequence[float]) -> torch.Tensor:
    """Index of the exit each sample leaves at, from its side exits' normalised entropies:
    the first side exit k with entropy below thresholds[k], else the final exit (len(entropies))."""
    limits = side_thresholds(thresholds, len(entropies))
    if not entropies:
        raise ValueError("no side exit: every sample takes the final exit.")
    taken = torch.full_like(entropies[0], len(entropies), dtype=torch.long)
    for k in reversed(range(len(entropies))):  # the earliest exit that lets a sample go wins
        taken[entropies[k] < limits[k]] = k
    return taken


def exits_taken(exit_logits: Sequence[torch.Tensor], thresholds: float | Sequence[float]) -> torch.Tensor:
    """Index of the exit each sample leaves at, from every exit's logits (side exits, then final)."""
    if len(exit_logits) == 1:
        return torch.zeros(exit_logits[0].shape[0], dtype=torch.long, device=exit_logits[0].device)
    return exits_from_entropies([normalized_entropy(logits) for logits in exit_logits[:-1]], thresholds)


# ----------------------------------------------------------------------------- inference


@torch.no_grad()
def early_exit_forward(model: nn.Module, x: torch.Tensor,
                       thresholds: float | Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """BranchyNet inference on a `FastResNet` (in eval mode): each sample leaves at the first
    side exit whose normalised entropy is below its threshold, and the samples that left are
    not run further; the final exit takes the rest.

    Returns:
        The logits of the exit each sample took, and that exit's index (side exits in
        network order from 0, the final exit last).
    """
    model.eval()
    limits = side_thresholds(thresholds, len(model.exits))
    n = x.shape[0]
    rows = torch.arange(n, device=x.device)  # which input each remaining sample is
    taken = torch.full((n,), len(model.exits), dtype=torch.long, device=x.device)
    out: torch.Tensor | None = None
    k = 0
    h = model.prep(x)
    for name in STAGES:
        h = getattr(model, name.lower())(h)
        if name not in model.exits:
            continue
        logits = model.exits[name](h)
        if out is None:
            out = logits.new_empty((n, logits.shape[1]))
        leave = normalized_entropy(logits) < limits[k]
        out[rows[leave]] = logits[leave]
        taken[rows[leave]] = k
        h, rows = h[~leave], rows[~leave]
        k += 1
        if rows.numel() == 0:
            return out, taken  # every sample has left: the rest of the net never runs
    final = model.forward_head(model.pool(h).flatten(1))
    if out is None:
        out = final.new_empty((n, final.shape[1]))
    out[rows] = final
    return out, taken


def exit_flops(model: nn.Module) -> list[int]:
    """FLOPs per image of leaving at each exit: side exits in network order, then the final one.

    Leaving at side exit k costs the backbone up to its stage plus every side head up to and
    including k's; the final exit costs the whole backbone, every side head and the main
    head. Counted segment by segment on one image with `count_call_flops` (the conventions
    of `count_flops`, so a net without exits gives ``[count_flops(model)]``).
    """
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *INPUT_SHAPE, device=next(model.parameters()).device)
    out: list[int] = []
    try:
        x, spent = count_call_flops(model.prep, x)
        for name in STAGES:
            x, flops = count_call_flops(getattr(model, name.lower()), x)
            spent += flops
            if name in model.exits:
                _, flops = count_call_flops(model.exits[name], x)
                spent += flops
                out.append(spent)
        _, flops = count_call_flops(lambda h: model.forward_head(model.pool(h).flatten(1)), x)
        out.append(spent + flops)
    finally:
        model.train(was_training)
    return out


# ----------------------------------------------------------------------------- the curve


@dataclass(frozen=True)
class ExitPoint:
    """The early-exit network at one threshold, over a set of images."""

    threshold: float  # normalised entropy below which a side exit lets a sample leave
    accuracy: float  # share of images right, each classified by the exit it left at
    mean_flops: float  # FLOPs per image up to and including the exit taken, averaged over images
    exit_shares: tuple[float, ...]  # share of images leaving at each exit: side exits, then the final


@dataclass(frozen=True)
class ExitCurve:
    """`ExitPoint`s across thresholds (ascending), measured on one split."""

    split: str  # val | test: the images measured
    points: tuple[ExitPoint, ...]

    def at(self, threshold: float) -> ExitPoint:
        """The point measured at exactly `threshold` (KeyError if it was not swept)."""
        for point in self.points:
            if point.threshold == threshold:
                return point
        raise KeyError(f"threshold {threshold} was not swept; swept: {[p.threshold for p in self.points]}.")

    def to_json(self) -> str:
        """JSON for `tune.report` (``Infinity`` for the inf threshold; `json.loads` reads it)."""
        return json.dumps({"split": self.split, "points": [asdict(p) for p in self.points]})

    @classmethod
    def from_json(cls, text: str) -> ExitCurve:
        data = json.loads(text)
        points = tuple(ExitPoint(**{**p, "exit_shares": tuple(p["exit_shares"])}) for p in data["points"])
        return cls(split=data["split"], points=points)


def threshold_sweep(
    exit_logits: Sequence[torch.Tensor], labels: torch.Tensor, flops_per_exit: Sequence[float],
    thresholds: Sequence[float] = SWEEP_THRESHOLDS,
) -> list[ExitPoint]:
    """From one pass collecting every exit's logits: the accuracy, mean inference FLOPs and
    exit shares that early-exit inference would give at each (shared) threshold.

    Args:
        exit_logits: (images, classes) logits of each exit, side exits first, final last.
        labels: the images' classes.
        flops_per_exit: `exit_flops` of the network.
        thresholds: normalised-entropy thresholds, each shared by every side exit.
    """
    n, exits = len(labels), len(exit_logits)
    if len(flops_per_exit) != exits:
        raise ValueError(f"{len(flops_per_exit)} FLOP counts for {exits} exits.")
    labels = labels.to(exit_logits[0].device)
    correct = torch.stack([logits.argmax(1) == labels for logits in exit_logits])  # (exits, images)
    flops = torch.tensor([float(f) for f in flops_per_exit], dtype=torch.float64, device=labels.device)
    entropies = [normalized_entropy(logits) for logits in exit_logits[:-1]]  # once, not per threshold
    images = torch.arange(n, device=labels.device)
    points = []
    for threshold in thresholds:
        taken = exits_from_entropies(entropies, threshold) if entropies else torch.zeros_like(images)
        shares = torch.bincount(taken, minlength=exits).double() / max(1, n)
        points.append(ExitPoint(
            threshold=float(threshold),
            accuracy=correct[taken, images].double().mean().item() if n else 0.0,
            mean_flops=flops[taken].mean().item() if n else 0.0,
            exit_shares=tuple(shares.tolist()),
        ))
    return points
