"""The training steps: what one batch does to the weights, for each kind of training.

The epoch loop (`nas.training.loop`) is the same for every kind; only the step differs:
- **plain**: cross-entropy with label smoothing on the network's logits;
- **early exits** (BranchyNet: Teerapittayanon, McDanel & Kung, ICPR 2016): the weighted
  sum of every exit's loss (`nas.models.exits.exit_loss`), accuracy of the final exit;
- **sandwich rule** (US-Nets: Yu & Huang, ICCV 2019; see `nas.training.usnets`): the max
  width learns from the labels and alone updates the BN running statistics, the min width
  and ``samples - 2`` random widths learn from its detached predictions.

A step runs the forward and backward passes of one batch (images already channels_last):
the loop zeroes the gradients before it and steps the optimizer after it, so a step that
trains several outputs just lets their gradients accumulate. It returns

    (loss, logits, others)

``loss`` the loss on the labels (what ``train_loss`` averages), ``logits`` those accuracy
is counted on, ``others`` the summed losses of the other outputs trained, detached, or None:
the loop only checks it for divergence, once an epoch, so no step waits for the device.

The step is chosen once per trial (`make_step`); per batch it is one call, with nothing
built but what the batch itself needs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from nas.models import ArchConfig
from nas.models.exits import exit_loss
from nas.models.width_slicing import set_bn_updates, set_width
from nas.training.evaluate import autocast
from nas.training.recipe import Recipe, SlimmableConfig
from nas.training.usnets import distillation_loss, sandwich_widths

StepOutput = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]
Step = Callable[[nn.Module, torch.Tensor, torch.Tensor], StepOutput]


def make_step(arch: ArchConfig, recipe: Recipe, *, seed: int) -> Step:
    """The step that trains `arch` with `recipe`: the sandwich rule when `recipe.slimmable`
    is set, the early-exit step when `arch` has side exits, else the plain step.

    `seed` seeds the sandwich's random widths (their own generator, so the batch order and
    augmentation draw what they draw in a plain trial).
    """
    if recipe.slimmable is not None:
        return SandwichStep(recipe.slimmable, label_smoothing=recipe.label_smoothing, seed=seed)
    if arch.exits.weights:  # the side exits' loss weights; () for a net without
        return partial(exit_step, side_weights=arch.exits.weights, label_smoothing=recipe.label_smoothing)
    return partial(plain_step, label_smoothing=recipe.label_smoothing)


# ----------------------------------------------------------------------------- plain


def plain_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, label_smoothing: float) -> StepOutput:
    """Cross-entropy with label smoothing on the network's logits."""
    with autocast(x.device):
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    loss.backward()
    return loss, logits, None


# ----------------------------------------------------------------------------- early exits


def exit_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, side_weights: tuple[float, ...], label_smoothing: float,
) -> StepOutput:
    """BranchyNet: the loss is every exit's cross-entropy, weighted (the final exit weighs 1);
    accuracy is the final exit's (the network's own output)."""
    with autocast(x.device):
        every = model.forward_exits(x)
        loss = exit_loss(every, y, side_weights, label_smoothing=label_smoothing)
    loss.backward()
    return loss, every[-1], None


# ----------------------------------------------------------------------------- the sandwich rule


class SandwichStep:
    """US-Nets' step on a `make_slimmable` network: the sandwich rule with inplace distillation.

    Expects the network at `cfg.max_width` with BN updates on, and leaves it so (set it once
    before training): between steps it is the max width, whose metrics a trial reports.
    The smaller widths' losses are averaged, each weighing 1 / (samples - 1) (why: the
    `nas.training.usnets` docstring). ``others`` is their sum, so a smaller width that went
    non-finite, and with it the shared weights, marks the epoch diverged.
    """

    def __init__(self, cfg: SlimmableConfig, *, label_smoothing: float, seed: int) -> None:
        self.cfg = cfg
        self.label_smoothing = label_smoothing
        self.student_weight = 1.0 / (cfg.samples - 1)
        self.generator = torch.Generator().manual_seed(seed)  # the random widths, apart from the batches'
        self.step_widths: list[tuple[float, ...]] = []  # per step, in training order: max, min, ...

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        widths = sandwich_widths(self.cfg, self.generator)
        # the max width (the network as left): labels; it alone updates the BN running statistics
        with autocast(x.device):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        loss.backward()
        teacher = logits.detach().float().softmax(dim=1)
        # the other widths: the max width's predictions (inplace distillation)
        set_bn_updates(model, False)
        students = []
        for width in widths[1:]:
            set_width(model, width)
            with autocast(x.device):
                student_loss = distillation_loss(model(x), teacher) * self.student_weight
            student_loss.backward()
            students.append(student_loss.detach())
        set_width(model, self.cfg.max_width)
        set_bn_updates(model, True)
        self.step_widths.append(tuple(widths))
        return loss, logits, torch.stack(students).sum()
