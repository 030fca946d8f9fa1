"""Train one architecture with the fast CIFAR-10 recipe; report every epoch.

The recipe is Page's DAWNBench ResNet-9 schedule ("How to train your ResNet", 2018: 94%
in 24 epochs with residual blocks at L1 and L3): SGD with Nesterov momentum, a
piecewise-linear learning rate (linear warm-up, then linear decay to 0 at the last step),
weight decay, label smoothing, batch 512. A net with early exits (BranchyNet,
Teerapittayanon et al. 2016) trains on the weighted sum of its exits' losses, and its
accuracy-vs-FLOPs curve across exit thresholds is measured after training (`exit_curve`).
Read top to bottom in the order it runs: recipe, result types, evaluation, the training loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import closing, nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.data import CifarSplits, DataConfig, eval_batches, train_batches
from nas.errors import ConfigError, reject_unknown_keys
from nas.malloc import keep_freed_memory
from nas.models import ArchConfig, build_model
from nas.models.exits import (
    SWEEP_THRESHOLDS,
    ExitCurve,
    exit_flops,
    exit_loss,
    normalized_entropy,
    threshold_sweep,
)
from nas.provenance import device_name

# ----------------------------------------------------------------------------- recipe


@dataclass(frozen=True)
class SlimmableConfig:
    """Universally slimmable training (US-Nets: Yu & Huang, ICCV 2019; see `nas.slimmable`).

    Widths are ratios of the architecture's own width: the network at ratio r is the family
    member ``arch.replace(width=arch.width * r)``, so `arch.width` is the widest one.
    """

    min_width: float = 0.25  # smallest width ratio trained: the bottom of the sandwich
    max_width: float = 1.0  # largest width ratio: learns from the labels and teaches the others
    samples: int = 4  # widths trained per step: the max, the min and samples - 2 random ones between

    def __post_init__(self) -> None:
        for name in ("min_width", "max_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number (a ratio of the architecture's width), but got {value!r}.")
            object.__setattr__(self, name, float(value))
        if isinstance(self.samples, bool) or not isinstance(self.samples, int):
            raise ConfigError(f"samples must be an integer, but got samples={self.samples!r}.")
        _check(0.0 < self.max_width <= 1.0, "max_width", self.max_width,
               "in (0, 1] (a ratio of the architecture's width, which is the widest)")
        _check(0.0 < self.min_width < self.max_width, "min_width", self.min_width,
               f"in (0, max_width={self.max_width:g})")
        _check(self.samples >= 2, "samples", self.samples,
               "at least 2 (the sandwich rule trains the max and the min width every step)")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "slimmable") -> SlimmableConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping such as {{min_width: 0.25, samples: 4}}, but got {data!r}.")
        reject_unknown_keys(data, (f.name for f in fields(cls)), source)
        try:
            return cls(**data)
        except ConfigError as err:
            raise ConfigError(f"{source}.{err}") from None


@dataclass(frozen=True)
class Recipe:
    """How to train. Defaults are the 24-epoch fast-CIFAR recipe."""

    epochs: int = 24  # passes over the training split
    batch_size: int = 512  # images per SGD step
    lr: float = 0.4  # peak learning rate, for the mean loss over a batch
    warmup: float = 0.2  # share of all steps spent ramping the lr up from 0 (5 of 24 epochs)
    momentum: float = 0.9  # Nesterov momentum
    weight_decay: float = 5e-4  # L2 penalty per unit lr, on every parameter
    label_smoothing: float = 0.2  # share of the target mass spread over all classes
    eval_batch_size: int = 1024  # images per evaluation forward pass
    # A test pass (10k images) costs about a third of a 45k-image training epoch; the search
    # selects on val, so by default test accuracy is measured after the last epoch only
    # (and every epoch when there is no val split, as the only curve).
    test_every_epoch: bool = False
    # US-Nets training of every width between min_width and max_width (a mapping is read as
    # a SlimmableConfig); None: the architecture alone, the plain loop.
    slimmable: SlimmableConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.slimmable, dict):
            object.__setattr__(self, "slimmable", SlimmableConfig.from_dict(self.slimmable))
        if self.slimmable is not None and not isinstance(self.slimmable, SlimmableConfig):
            raise ConfigError(
                f"slimmable must be a mapping such as {{min_width: 0.25, samples: 4}} or null, but got {self.slimmable!r}."
            )
        _check(self.epochs >= 1, "epochs", self.epochs, "at least 1")
        _check(self.batch_size >= 2, "batch_size", self.batch_size, "at least 2 (BatchNorm needs 2 images)")
        _check(self.lr > 0, "lr", self.lr, "positive")
        _check(0.0 <= self.warmup < 1.0, "warmup", self.warmup, "in [0, 1)")
        _check(0.0 <= self.momentum < 1.0, "momentum", self.momentum, "in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "non-negative")
        _check(0.0 <= self.label_smoothing < 1.0, "label_smoothing", self.label_smoothing, "in [0, 1)")
        _check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "at least 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON, YAML and `Recipe(**...)`. `slimmable` is left out when off, so
        the stored recipes of experiments from before it still match (and resume)."""
        out = asdict(self)
        if self.slimmable is None:
            del out["slimmable"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "recipe") -> Recipe:
        reject_unknown_keys(data, (f.name for f in fields(cls)), source)
        try:
            return cls(**data)
        except (ConfigError, TypeError) as err:
            raise ConfigError(f"{source}: {err}") from None


def _check(ok: bool, name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {rule}, but got {name}={value!r}.")


def lr_at(step: int, total_steps: int, recipe: Recipe) -> float:
    """Piecewise-linear schedule: 0 -> peak over the warm-up, then peak -> 0 at the end."""
    warmup_steps = recipe.warmup * total_steps
    if step < warmup_steps:
        return recipe.lr * step / warmup_steps
    return recipe.lr * max(0.0, (total_steps - step) / (total_steps - warmup_steps))


# ----------------------------------------------------------------------------- results


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    status: str  # completed | diverged | stopped (the callback asked to stop)
    epochs: list[EpochMetrics] = field(default_factory=list)
    device: str = ""
    model: nn.Module | None = None  # the trained network, on the training device

    @property
    def final(self) -> EpochMetrics | None:
        return self.epochs[-1] if self.epochs else None

    @property
    def train_seconds(self) -> float:
        return self.epochs[-1].cumulative_seconds if self.epochs else 0.0


# A callback gets each epoch's metrics; returning True stops training after that epoch.
EpochCallback = Callable[[EpochMetrics], "bool | None"]


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Accuracy of `model` in eval mode (BN running statistics, every block on)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for xb, yb in eval_batches(x, y, batch_size):
        with _autocast(xb.device):
            logits = model(xb.contiguous(memory_format=torch.channels_last))
        correct += (logits.argmax(1) == yb).sum()
    return correct.item() / max(1, len(y))


@torch.no_grad()
def exit_logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Every exit's float32 logits over `x` in eval mode (side exits first, then the final)."""
    model.eval()
    parts: list[list[torch.Tensor]] = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        with _autocast(xb.device):
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


def _autocast(device: torch.device):
    # bf16 on CUDA halves memory traffic; on CPU fp32 is faster than emulated bf16.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


# ----------------------------------------------------------------------------- training


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
        stopped it, else ``completed``. With `recipe.slimmable`, the US-Nets loop of
        `nas.slimmable` trains every width and the metrics are the max width's.
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
        if recipe.slimmable is not None:
            from nas.slimmable import train_slimmable  # imports this module: import it late

            yield from train_slimmable(arch, recipe, data, data_cfg, seed, device)
        else:
            yield from _train(arch, recipe, data, data_cfg, seed, device)
    finally:
        torch.set_num_threads(previous_threads)


def _train(arch, recipe, data, data_cfg, seed, device) -> Iterator[TrainResult]:
    model = build_model(arch, seed=seed).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.0, momentum=recipe.momentum, nesterov=True,
        weight_decay=recipe.weight_decay,
    )
    generator = torch.Generator().manual_seed(seed)  # batch order and augmentation
    n_train = len(data.train_y)
    steps_per_epoch = max(1, n_train // recipe.batch_size)
    total_steps = recipe.epochs * steps_per_epoch
    side_weights = arch.exits.weights  # loss weights of the early exits; () for a net without
    result = TrainResult(status="completed", device=device_name(device), model=model)
    step = 0
    cumulative = 0.0

    for epoch in range(recipe.epochs):
        # -- train one epoch (timed, evaluation excluded) --
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        _sync(device)
        start = time.perf_counter()
        for x, y in train_batches(data, recipe.batch_size, data_cfg, generator):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, recipe)
            with _autocast(device):
                if side_weights:  # BranchyNet: every exit's loss, weighted; accuracy of the final exit
                    exit_logits = model.forward_exits(x.contiguous(memory_format=torch.channels_last))
                    logits = exit_logits[-1]
                    loss = exit_loss(exit_logits, y, side_weights, label_smoothing=recipe.label_smoothing)
                else:
                    logits = model(x.contiguous(memory_format=torch.channels_last))
                    loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            step += 1
        _sync(device)
        epoch_seconds = time.perf_counter() - start
        cumulative += epoch_seconds
        train_loss = loss_sum.item() / seen

        # -- evaluate and report --
        end_epoch(result, model, data, recipe, epoch=epoch, train_loss=train_loss,
                  train_acc=correct.item() / seen, epoch_seconds=epoch_seconds, cumulative=cumulative)
        yield result
        if result.status == "diverged":
            return


def end_epoch(result: TrainResult, model: nn.Module, data: CifarSplits, recipe: Recipe, *,
              epoch: int, train_loss: float, train_acc: float, epoch_seconds: float, cumulative: float) -> None:
    """Evaluate `model` after an epoch and append the metrics to `result`.

    A non-finite `train_loss` marks the run ``diverged`` (and is not evaluated): the loop
    yields that epoch and stops.
    """
    diverged = not math.isfinite(train_loss)
    has_val = len(data.val_y) > 0
    last = epoch == recipe.epochs - 1
    measure_test = not diverged and (last or recipe.test_every_epoch or not has_val)
    result.epochs.append(EpochMetrics(
        epoch=epoch,
        train_loss=train_loss,
        train_acc=train_acc,
        val_acc=None if diverged or not has_val else evaluate(model, data.val_x, data.val_y, recipe.eval_batch_size),
        test_acc=evaluate(model, data.test_x, data.test_y, recipe.eval_batch_size) if measure_test else None,
        epoch_seconds=epoch_seconds,
        cumulative_seconds=cumulative,
    ))
    if diverged:
        result.status = "diverged"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

