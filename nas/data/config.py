"""What CIFAR-10 is (image shape, classes, normalisation) and how a trial uses it (`DataConfig`).

Importing this module needs no torch: experiment files are validated without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from nas.config.validate import (
    Rule,
    at_least,
    at_most,
    between,
    check_fields,
    from_dict,
    non_negative,
    require,
    setting,
)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per channel (R, G, B), pixels scaled to [0, 1]
CIFAR10_STD = (0.2470, 0.2435, 0.2616)  # per channel (R, G, B), pixels scaled to [0, 1]
IMAGE_SHAPE = (3, 32, 32)  # channels, height, width of every CIFAR image
NUM_CLASSES = 10
TRAIN_IMAGES = 50_000  # the official train split, val carved from it
TEST_IMAGES = 10_000  # the official test split

# ---- config ----------------------------------------------------------------------------


def is_os_path(text: str) -> bool:
    """Whether the system takes `text` as a path: not empty, no NUL byte, no lone surrogate
    (YAML's "\\ud800"), and a leading ``~user`` names a user. Otherwise opening the folder
    raises ValueError, UnicodeEncodeError or RuntimeError, after the checks that name inputs."""
    if not text or "\x00" in text:
        return False
    try:
        os.fsencode(text)
        Path(text).expanduser()
    except (UnicodeError, RuntimeError):
        return False
    return True



@dataclass(frozen=True)
class DataConfig:
    """Where CIFAR-10 lives, how it is split and how training batches are augmented."""

    EXAMPLE: ClassVar[str] = "{val_size: 5000, train_subset: 5000}"  # shown where a mapping is expected

    # holds cifar-10-batches-py/ or the tarball; None: resolve_data_root()
    root: str | None = setting(
        None, Rule(is_os_path, "a folder path the system takes (no NUL byte; ~user of a known user)"),
        types="a folder path or null",
    )
    # train images kept after the val split, balanced; None: all
    train_subset: int | None = setting(None, at_least(NUM_CLASSES, "(one per class)") & at_most(TRAIN_IMAGES))
    # images carved from the official train set for validation (0: none)
    val_size: int = setting(
        5000,
        non_negative("(0: no validation split)") & at_most(TRAIN_IMAGES - NUM_CLASSES, "(one train image per class left)"),
    )
    # fixes the val split and the subset; the same for every trial of a search
    split_seed: int = setting(0, between(0, 2**63 - 1))
    # reflect padding of the random crop, pixels (0: no crop); reflect padding needs padding < image side
    crop_padding: int = setting(4, between(0, IMAGE_SHAPE[1] - 1, "pixels"))
    flip: bool = True  # random horizontal flip, p = 0.5
    # side of the cutout square, pixels (0: off)
    cutout: int = setting(0, between(0, IMAGE_SHAPE[1], "pixels (0: off)"))

    def __post_init__(self) -> None:
        if isinstance(self.root, os.PathLike):
            # keep the stored config plain data (it is saved with every result)
            object.__setattr__(self, "root", os.fspath(self.root))
        check_fields(self)
        # Checked here, before anything is written, against the official split's known size
        # (nas.data.tensors.make_splits checks again against the images really loaded).
        left = TRAIN_IMAGES - self.val_size
        if self.train_subset is not None:
            require(self.train_subset <= left, "train_subset", self.train_subset,
                    f"at most {left} (the {TRAIN_IMAGES} training images less val_size={self.val_size};"
                    " lower one of them)")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "dataset") -> DataConfig:
        return from_dict(cls, data, source)
