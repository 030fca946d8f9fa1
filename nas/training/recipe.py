"""How to train: the fast CIFAR-10 recipe and its US-Nets option, and the LR schedule.

The recipe is Page's DAWNBench ResNet-9 schedule ("How to train your ResNet", 2018: 94%
in 24 epochs with residual blocks at L1 and L3): SGD with Nesterov momentum, a
piecewise-linear learning rate (linear warm-up, then linear decay to 0 at the last step),
weight decay, label smoothing, batch 512.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from nas.config.validate import (
    Source,
    at_least,
    at_most,
    build,
    check_fields,
    from_dict,
    interval,
    non_negative,
    positive,
    require,
    setting,
    store_floats,
)
from nas.data.config import TRAIN_IMAGES
from nas.models.arch import STAGES
from nas.models.tricks import TricksConfig

# what `slimmable_conflicts` lets through (nas.models.width_slicing slices exactly these)
MAX_EPOCHS = 10_000  # passes over the data in one trial: a bound that catches typos
SLIMMABLE_SUPPORTED = ("the backbone, extra layers, residual blocks and the double or pyramid width schedule, "
                       "without training tricks")


@dataclass(frozen=True)
class SlimmableConfig:
    """Universally slimmable training (US-Nets: Yu & Huang, ICCV 2019; see `nas.training.usnets`).

    Widths are ratios of the architecture's own width: the network at ratio r is the family
    member ``arch.replace(width=arch.width * r)``, so `arch.width` is the widest one.
    """

    EXAMPLE: ClassVar[str] = "{min_width: 0.25, samples: 4}"  # shown where a mapping is expected

    # smallest width ratio trained: the bottom of the sandwich; in (0, max_width)
    min_width: float = setting(0.25, types="a number (a ratio of the architecture's width)")
    # largest width ratio: learns from the labels and teaches the others
    max_width: float = setting(
        1.0, interval(0, 1, open_low=True, note="(a ratio of the architecture's width, which is the widest)")
    )
    # widths trained per step: the max, the min and samples - 2 random ones between
    samples: int = setting(
        4, at_least(2, "(the sandwich rule trains the max and the min width every step)") & at_most(64)
    )

    def __post_init__(self) -> None:
        check_fields(self)
        store_floats(self, "min_width", "max_width")
        rule = f"in (0, max_width={self.max_width:g})"
        require(0.0 < self.min_width < self.max_width, "min_width", self.min_width, rule)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "slimmable") -> SlimmableConfig:
        return from_dict(cls, data, source)


def slimmable_conflicts(flat: Mapping[str, Any]) -> list[str]:
    """The dotted architecture keys in `flat` that slimmable training does not support, as
    ``key=value`` (torch-free, so experiment files are checked without torch).

    Args:
        flat: dotted architecture keys and values, e.g. ``{"L2.fractal": 3, "width": 0.5}``
            (`ArchConfig.to_flat`, or one entry of a search space).
    """
    return [f"{key}={value!r}" for key, value in flat.items() if not _slimmable_off(key, value)]


def _slimmable_off(key: str, value: Any) -> bool:
    """Whether a flat architecture key leaves slimmable training's supported network unchanged."""
    head, name = key.split(".")[0], key.split(".")[-1]
    if head in STAGES and name in ("fractal", "clique"):
        return value == 0
    if head in STAGES and name == "deformable":
        return value is False
    if key == "exits.stages":
        return not value  # [], (), "" : no side exit
    if key == "drop.kind":
        return value == "none"
    if head == "tricks":  # the training tricks: not wired into the sandwich rule yet
        return value == getattr(TricksConfig(), name)
    return True  # width, extra, residual, width_schedule; settings of the parts above


@dataclass(frozen=True)
class Recipe:
    """How to train. Defaults are the 24-epoch fast-CIFAR recipe."""

    EXAMPLE: ClassVar[str] = "{epochs: 24, lr: 0.4}"

    epochs: int = setting(24, at_least(1) & at_most(MAX_EPOCHS))  # passes over the training split
    # images per SGD step, at most the whole training set
    batch_size: int = setting(512, at_least(2, "(BatchNorm needs 2 images)") & at_most(TRAIN_IMAGES))
    lr: float = setting(0.4, positive())  # peak learning rate, for the mean loss over a batch
    # share of all steps spent ramping the lr up from 0 (5 of 24 epochs)
    warmup: float = setting(0.2, interval(0, 1, open_high=True))
    momentum: float = setting(0.9, interval(0, 1, open_high=True))  # Nesterov momentum
    weight_decay: float = setting(5e-4, non_negative())  # L2 penalty per unit lr, on every parameter
    # share of the target mass spread over all classes
    label_smoothing: float = setting(0.2, interval(0, 1, open_high=True))
    eval_batch_size: int = setting(1024, at_least(1) & at_most(TRAIN_IMAGES))  # images per evaluation forward pass
    # A test pass (10k images) costs about a third of a 45k-image training epoch; the search
    # selects on val, so by default test accuracy is measured after the last epoch only
    # (and every epoch when there is no val split, as the only curve).
    test_every_epoch: bool = False
    # US-Nets training of every width between min_width and max_width (a mapping is read as
    # a SlimmableConfig); None: the architecture alone, the plain loop.
    slimmable: SlimmableConfig | None = setting(
        None, types=f"a mapping such as {SlimmableConfig.EXAMPLE} or null"
    )

    def __post_init__(self) -> None:
        if isinstance(self.slimmable, dict):  # Recipe(**recipe.to_dict()): how a trial's config reaches its worker
            object.__setattr__(self, "slimmable", build(SlimmableConfig, self.slimmable, Source(), ("slimmable",)))
        check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON, YAML and `Recipe(**...)`. `slimmable` is left out when off, so
        the stored recipes of experiments from before it still match (and resume)."""
        out = asdict(self)
        if self.slimmable is None:
            del out["slimmable"]
        return out

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "recipe") -> Recipe:
        return from_dict(cls, data, source)


def lr_at(step: int, total_steps: int, recipe: Recipe) -> float:
    """Piecewise-linear schedule: 0 -> peak over the warm-up, then peak -> 0 at the end."""
    warmup_steps = recipe.warmup * total_steps
    if step < warmup_steps:
        return recipe.lr * step / warmup_steps
    return recipe.lr * max(0.0, (total_steps - step) / (total_steps - warmup_steps))

