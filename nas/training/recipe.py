"""How to train: the fast CIFAR-10 recipe and its US-Nets option, and the LR schedule.

The recipe is Page's DAWNBench ResNet-9 schedule ("How to train your ResNet", 2018: 94%
in 24 epochs with residual blocks at L1 and L3): SGD with Nesterov momentum, a
piecewise-linear learning rate (linear warm-up, then linear decay to 0 at the last step),
weight decay, label smoothing, batch 512.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from nas.errors import ConfigError, reject_unknown_keys


@dataclass(frozen=True)
class SlimmableConfig:
    """Universally slimmable training (US-Nets: Yu & Huang, ICCV 2019; see `nas.training.usnets`).

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

