"""Train one architecture with the fast recipe (`nas.training.recipe`); report every epoch.

One epoch loop for every kind of training: what a batch does is the step, chosen once per
trial (`nas.training.steps.make_step`): the plain step, the early-exit step of a net with
side exits (BranchyNet, Teerapittayanon et al. 2016: the weighted sum of its exits' losses;
its accuracy-vs-FLOPs curve is measured after training, `nas.training.evaluate.exit_curve`)
or, with `recipe.slimmable`, the sandwich rule of US-Nets (Yu & Huang 2019) on the network
made slimmable (`nas.training.usnets`). Everything else is the loop's: the optimizer, the
schedule, the timing, the sums, divergence and the end of an epoch, and the training tricks
of `arch.tricks` (`nas.models.tricks`; each costs nothing when off): the patch whitening's
fit, the bias lr, alternating flip, lookahead, the weight EMA that is evaluated, and
test-time augmentation at evaluation. Read top to bottom in
the order it runs: result types, the public entry points, the loop, the end of an epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from nas.data.config import DataConfig
from nas.data.tensors import CifarSplits, train_batches
from nas.errors import ConfigError
from nas.malloc import keep_freed_memory
from nas.models import ArchConfig, build_model
from nas.models.tricks import LOOKAHEAD_EVERY, WHITEN_EPS, WHITEN_IMAGES, TricksConfig
from nas.models.width_slicing import make_slimmable, set_width
from nas.provenance import device_name
from nas.stats import pack_correct
from nas.training.ema import Lookahead, WeightEMA
from nas.training.evaluate import evaluate_images, sync
from nas.training.recipe import Recipe, lr_at
from nas.training.steps import SandwichStep, make_step


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch reports. Epochs count from 0 (Optuna steps do too)."""

    epoch: int
    train_loss: float  # mean loss over the epoch's training images
    train_acc: float  # share of training images right (on the augmented batches)
    val_acc: float | None  # None when the data has no validation split
    test_acc: float | None  # None when not measured this epoch (see Recipe.test_every_epoch) or diverged
    epoch_seconds: float  # wall seconds of this epoch's training steps, evaluation excluded
    cumulative_seconds: float  # sum of epoch_seconds so far
    # images val_acc / test_acc were measured on, None when not measured: each accuracy's noise
    # (binomial SE, nas.stats.binomial_se) is known from it
    val_images: int | None = None
    test_images: int | None = None
    # which of those images it got right, packed one bit each (nas.stats.pack_correct): two
    # architectures pair image by image, so a difference's image-sampling noise is known
    val_correct: bytes | None = None
    test_correct: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    status: str  # completed | diverged | stopped (the callback asked to stop)
    epochs: list[EpochMetrics] = field(default_factory=list)
    device: str = ""
    # the trained network as evaluated (its weight EMA with tricks.ema_decay), on the training device
    model: nn.Module | None = None

    @property
    def final(self) -> EpochMetrics | None:
        return self.epochs[-1] if self.epochs else None

    @property
    def train_seconds(self) -> float:
        return self.epochs[-1].cumulative_seconds if self.epochs else 0.0


@dataclass
class SlimmableTrainResult(TrainResult):
    """A `TrainResult` whose epochs are the max width's, plus the widths every step trained."""

    step_widths: list[tuple[float, ...]] = field(default_factory=list)  # per step, in training order: max, min, ...


# A callback gets each epoch's metrics; returning True stops training after that epoch.
EpochCallback = Callable[[EpochMetrics], "bool | None"]


def train(
    arch: ArchConfig,
    recipe: Recipe,
    data: CifarSplits,
    data_cfg: DataConfig,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    threads: int | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train `arch` on `data` (already on `device`) and report each epoch to `on_epoch`.

    Args:
        arch: the network to build.
        recipe: optimiser, schedule and batch settings.
        data: normalised splits, on the device to train on.
        data_cfg: augmentation settings (crop, flip, cutout).
        seed: draws the weights, the batch order and the augmentation; the same
            (arch, recipe, data, seed) gives the same result on CPU.
        device: defaults to the device `data` lives on.
        threads: torch intra-op threads on CPU (the CPUs given to this trial).
        on_epoch: called after every epoch; returning True stops training.

    Returns:
        The per-epoch metrics and a status: ``diverged`` when the training loss went
        non-finite (that epoch is the last reported), ``stopped`` when the callback
        stopped it, else ``completed``. With `recipe.slimmable`, the sandwich rule
        (`nas.training.steps.SandwichStep`) trains every width of the network made
        slimmable; the result is a `SlimmableTrainResult`, its model set to the max
        width, and the metrics are the max width's.
    """
    with closing(train_epochs(arch, recipe, data, data_cfg, seed=seed, device=device, threads=threads)) as epochs:
        for result in epochs:
            if on_epoch is not None and on_epoch(result.final) and result.status == "completed":
                result.status = "stopped"
                break
    return result


def train_epochs(
    arch: ArchConfig,
    recipe: Recipe,
    data: CifarSplits,
    data_cfg: DataConfig,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    threads: int | None = None,
) -> Iterator[TrainResult]:
    """`train`, one epoch per step: yields the same TrainResult after every epoch.

    The newest metrics are ``result.final``; after a non-finite loss the status is
    ``diverged`` and nothing more is yielded. Stopping early is not iterating further
    (close the iterator to restore the thread count at once). The work runs in the
    thread that iterates, so a Ray Tune class trainable trains on its actor's main thread
    (see `nas.malloc` for why that thread).
    """
    device = torch.device(device) if device is not None else data.train_x.device
    previous_threads = torch.get_num_threads()
    if device.type == "cpu":
        keep_freed_memory()
        if threads:
            torch.set_num_threads(threads)
    try:
        yield from _train(arch, recipe, data, data_cfg, seed, device)
    finally:
        torch.set_num_threads(previous_threads)


def _train(arch, recipe, data, data_cfg, seed, device) -> Iterator[TrainResult]:
    tricks = arch.tricks  # Page's and airbench's (`nas.models.tricks`); each None/plain when off
    check_tricks(tricks, recipe)
    train_step = make_step(arch, recipe, seed=seed)  # chosen once: what one batch does
    sandwich = isinstance(train_step, SandwichStep)
    model = build_model(arch, seed=seed)
    if sandwich:  # US-Nets: one set of weights for every width, at the max width between steps
        model = set_width(make_slimmable(model), recipe.slimmable.max_width)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe, tricks.bias_lr)
    generator = torch.Generator().manual_seed(seed)  # batch order and augmentation
    n_train = len(data.train_y)
    steps_per_epoch = max(1, n_train // recipe.batch_size)
    total_steps = recipe.epochs * steps_per_epoch
    # evaluated: the network itself, or its EMA (Page post 8), a second copy of it
    ema, evaluated = None, model
    if tricks.ema_decay:
        evaluated = build_model(arch, seed=seed).to(device, memory_format=torch.channels_last)
        ema = WeightEMA(model, evaluated, tricks.ema_decay, start_step=tricks.ema_start * steps_per_epoch)
    lookahead = Lookahead(model, tricks.lookahead, LOOKAHEAD_EVERY, total_steps) if tricks.lookahead else None
    # alternating flip (airbench94): image i is mirrored in epoch e iff first_flip[i] xor (e odd)
    first_flip = torch.rand(n_train, generator=generator) < 0.5 if tricks.alternating_flip else None
    if sandwich:
        result = SlimmableTrainResult(status="completed", device=device_name(device), model=model,
                                      step_widths=train_step.step_widths)  # the step appends to it
    else:
        result = TrainResult(status="completed", device=device_name(device), model=evaluated)
    step = 0
    cumulative = 0.0

    for epoch in range(recipe.epochs):
        # -- train one epoch (timed, evaluation excluded) --
        model.train()
        loss_sum = torch.zeros((), device=device)  # the loss on the labels
        others_sum = torch.zeros((), device=device)  # the step's other losses: only checked for divergence
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        flips = None if first_flip is None else (first_flip ^ bool(epoch % 2)).to(data.train_x.device)
        sync(device)
        start = time.perf_counter()
        if epoch == 0 and tricks.whiten:  # fitted before training, on its clock (Page counts it too)
            model.whiten.fit(data.train_x[:WHITEN_IMAGES], WHITEN_EPS)
        for x, y in train_batches(data, recipe.batch_size, data_cfg, generator, flips):
            lr = lr_at(step, total_steps, recipe)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            optimizer.zero_grad(set_to_none=True)
            loss, logits, others = train_step(model, x.contiguous(memory_format=torch.channels_last), y)
            optimizer.step()
            if lookahead is not None:
                lookahead.update(step)
            if ema is not None:
                ema.update(step)
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            if others is not None:
                others_sum += others
            seen += len(y)
            step += 1
        if lookahead is not None and epoch == recipe.epochs - 1:
            lookahead.finish()  # the slow weights are the trained network
        sync(device)
        epoch_seconds = time.perf_counter() - start
        cumulative += epoch_seconds
        train_loss = loss_sum.item() / seen
        if not math.isfinite(others_sum.item()):
            train_loss = math.nan  # another output went non-finite: the shared weights did too

        # -- evaluate and report --
        end_epoch(result, evaluated, data, recipe, epoch=epoch, train_loss=train_loss, train_acc=correct.item() / seen,
                  epoch_seconds=epoch_seconds, cumulative=cumulative, tta=tricks.tta)
        yield result
        if result.status == "diverged":
            return


def make_optimizer(model: nn.Module, recipe: Recipe, bias_lr: float = 1.0) -> torch.optim.SGD:
    """SGD with Nesterov momentum over the trained parameters (a frozen BN scale is not one).
    Each group's lr is the schedule's times its ``lr_scale``: 1, and `bias_lr` for the 1-D
    parameters (BN weights and biases) when it is not 1, their weight decay divided by it so
    the decay per step stays the same (airbench94's bias_scaler)."""
    trained = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": trained, "lr_scale": 1.0}]
    if bias_lr != 1.0:
        groups = [{"params": [p for p in trained if p.ndim != 1], "lr_scale": 1.0},
                  {"params": [p for p in trained if p.ndim == 1], "lr_scale": bias_lr,
                   "weight_decay": recipe.weight_decay / bias_lr}]
    return torch.optim.SGD(groups, lr=0.0, momentum=recipe.momentum, nesterov=True, weight_decay=recipe.weight_decay)


def check_tricks(tricks: TricksConfig, recipe: Recipe) -> None:
    """ConfigError for tricks this recipe cannot train (the tricks alone are checked in their config)."""
    if tricks.ghost_batch and recipe.batch_size % tricks.ghost_batch:
        raise ConfigError(f"tricks.ghost_batch={tricks.ghost_batch} must divide recipe.batch_size="
                          f"{recipe.batch_size} (each batch is split into virtual batches of that many images).")


def end_epoch(result: TrainResult, model: nn.Module, data: CifarSplits, recipe: Recipe, *, epoch: int,
              train_loss: float, train_acc: float, epoch_seconds: float, cumulative: float, tta: str = "none") -> None:
    """Evaluate `model` (with test-time augmentation `tta`) after an epoch and append the
    metrics to `result`.

    A non-finite `train_loss` marks the run ``diverged`` (and is not evaluated): the loop
    yields that epoch and stops.
    """
    diverged = not math.isfinite(train_loss)
    has_val = len(data.val_y) > 0
    last = epoch == recipe.epochs - 1
    measure_val = not diverged and has_val
    measure_test = not diverged and (last or recipe.test_every_epoch or not has_val)
    batch = recipe.eval_batch_size
    val = evaluate_images(model, data.val_x, data.val_y, batch, tta=tta).cpu() if measure_val else None
    test = evaluate_images(model, data.test_x, data.test_y, batch, tta=tta).cpu() if measure_test else None
    result.epochs.append(EpochMetrics(
        epoch=epoch,
        train_loss=train_loss,
        train_acc=train_acc,
        val_acc=None if val is None else val.sum().item() / max(1, len(val)),
        test_acc=None if test is None else test.sum().item() / max(1, len(test)),
        epoch_seconds=epoch_seconds,
        cumulative_seconds=cumulative,
        val_images=None if val is None else len(val),
        test_images=None if test is None else len(test),
        val_correct=None if val is None else pack_correct(val.numpy()),
        test_correct=None if test is None else pack_correct(test.numpy()),
    ))
    if diverged:
        result.status = "diverged"

