"""What CIFAR-10 is (image shape, classes, normalisation) and how a trial uses it (`DataConfig`).

Importing this module needs no torch: experiment files are validated without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nas.errors import ConfigError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per channel (R, G, B), pixels scaled to [0, 1]
CIFAR10_STD = (0.2470, 0.2435, 0.2616)  # per channel (R, G, B), pixels scaled to [0, 1]
IMAGE_SHAPE = (3, 32, 32)  # channels, height, width of every CIFAR image
NUM_CLASSES = 10

# ---- config ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Where CIFAR-10 lives, how it is split and how training batches are augmented."""

    root: str | None = None  # holds cifar-10-batches-py/ or the tarball; None: resolve_data_root()
    train_subset: int | None = None  # train images kept after the val split, balanced; None: all
    val_size: int = 5000  # images carved from the official train set for validation (0: none)
    split_seed: int = 0  # fixes the val split and the subset; the same for every trial of a search
    crop_padding: int = 4  # reflect padding of the random crop, pixels (0: no crop)
    flip: bool = True  # random horizontal flip, p = 0.5
    cutout: int = 0  # side of the cutout square, pixels (0: off)

    def __post_init__(self) -> None:
        if isinstance(self.root, os.PathLike):
            # keep the stored config plain data (it is saved with every result)
            object.__setattr__(self, "root", os.fspath(self.root))
        if self.root is not None and (not isinstance(self.root, str) or not self.root):
            raise ConfigError(f"root must be a folder path or None, but got {self.root!r}.")
        if self.train_subset is not None:
            rule = "(one per class), or None for all"
            _check_int("train_subset", self.train_subset, NUM_CLASSES, rule=rule)
        _check_int("val_size", self.val_size, 0)
        _check_int("split_seed", self.split_seed, 0, 2**63 - 1)
        # reflect padding needs padding < image side
        _check_int("crop_padding", self.crop_padding, 0, IMAGE_SHAPE[1] - 1)
        if not isinstance(self.flip, bool):
            raise ConfigError(f"flip must be true or false, but got {self.flip!r}.")
        _check_int("cutout", self.cutout, 0, IMAGE_SHAPE[1])


def _check_int(name: str, value: object, lo: int, hi: int | None = None, *, rule: str = "") -> None:
    """Raises ConfigError unless `value` is an int (not a bool) in [lo, hi]."""
    bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
    if rule:
        bounds += f" {rule}"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{name} must be an integer {bounds}, but got {value!r}.")

