"""CIFAR-10 on the device: splits, augmentation, batches.

Splits: validation carved from the official train set, class-balanced, fixed by one seed.
As in airbench, the whole dataset stays on the device as one normalised float32 tensor;
normalisation is done once, and an epoch is slices of `torch.randperm` with batched
augmentation (no Python loop over images). Every random draw comes from an explicit CPU
`torch.Generator`, so the same seed gives the same batches on any device.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nas.data.archive import RawCifar, load_cifar10, resolve_data_root
from nas.data.config import CIFAR10_MEAN, CIFAR10_STD, DataConfig
from nas.errors import ConfigError

# ---- splits -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CifarSplits:
    """Normalised images and labels, all on one device."""

    train_x: torch.Tensor  # float32 [n_train, 3, 32, 32], normalised per channel
    train_y: torch.Tensor  # int64 [n_train]
    val_x: torch.Tensor  # float32 [n_val, 3, 32, 32]; 0 rows when val_size == 0
    val_y: torch.Tensor  # int64 [n_val]
    test_x: torch.Tensor  # float32 [10000, 3, 32, 32], the official test set
    test_y: torch.Tensor  # int64 [10000]
    classes: tuple[str, ...]  # class names, indexed by label


def _balanced_quotas(counts: list[int], k: int, generator: torch.Generator) -> list[int]:
    """How many of `k` picks each class gets: as equal as the class sizes `counts` allow.

    Classes that run out give their share to the others; the last few picks that cannot
    be spread evenly go to classes chosen at random.
    """
    quotas = [0] * len(counts)
    remaining = k
    while remaining > 0:
        open_classes = [c for c, n in enumerate(counts) if quotas[c] < n]
        share = remaining // len(open_classes)
        if share == 0:
            for i in torch.randperm(len(open_classes), generator=generator)[:remaining].tolist():
                quotas[open_classes[i]] += 1
            break
        for c in open_classes:
            take = min(share, counts[c] - quotas[c])
            quotas[c] += take
            remaining -= take
    return quotas


def _balanced_pick(
    labels: torch.Tensor, pool: torch.Tensor, k: int, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """`k` indices drawn from `pool`, class-balanced, sorted ascending."""
    if k == 0:
        return pool[:0]
    pool_labels = labels[pool]
    counts = torch.bincount(pool_labels, minlength=num_classes).tolist()
    quotas = _balanced_quotas(counts, k, generator)
    picks = []
    for c, quota in enumerate(quotas):
        members = pool[pool_labels == c]
        picks.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return torch.cat(picks).sort().values


def _normalise(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 NCHW -> float32, minus the CIFAR-10 mean, over its std, on `device`."""
    # move as uint8: a quarter of the bytes of float32
    x = images.to(device).float().div_(255)
    mean = torch.tensor(CIFAR10_MEAN, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=x.device).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)


def make_splits(raw: RawCifar, cfg: DataConfig, device: torch.device | str = "cpu") -> CifarSplits:
    """Carves validation from the official train set, subsets the rest, normalises once.

    The validation set depends only on `split_seed` and `val_size` (it is drawn first), so
    trials with different `train_subset`s are scored on the same images.

    Args:
        raw: CIFAR-10 as loaded by `load_cifar10`.
        cfg: the split sizes and seed.
        device: where the tensors live.

    Returns:
        Train, validation and test tensors on `device`.

    Raises:
        ConfigError: `val_size` plus `train_subset` exceed the training images there are.
    """
    labels = raw.train_labels
    n = len(labels)
    wanted = cfg.val_size + (cfg.train_subset or 0)
    if wanted > n:
        raise ConfigError(
            f"val_size ({cfg.val_size}) + train_subset ({cfg.train_subset or 0}) = {wanted} "
            f"exceeds the {n} training images there are; lower them."
        )
    generator = torch.Generator().manual_seed(cfg.split_seed)
    num_classes = len(raw.classes)
    everything = torch.arange(n)
    val_idx = _balanced_pick(labels, everything, cfg.val_size, num_classes, generator)
    is_rest = torch.ones(n, dtype=torch.bool)
    is_rest[val_idx] = False
    rest = everything[is_rest]
    if cfg.train_subset is None:
        train_idx = rest
    else:
        train_idx = _balanced_pick(labels, rest, cfg.train_subset, num_classes, generator)
    return CifarSplits(
        train_x=_normalise(raw.train_images[train_idx], device),
        train_y=labels[train_idx].to(device),
        val_x=_normalise(raw.train_images[val_idx], device),
        val_y=labels[val_idx].to(device),
        test_x=_normalise(raw.test_images, device),
        test_y=raw.test_labels.to(device),
        classes=raw.classes,
    )


def load_data(cfg: DataConfig, device: torch.device | str = "cpu") -> CifarSplits:
    """Resolves the data root, loads CIFAR-10 (downloading it if needed) and splits it.

    The splits are cached per (config, device): a Ray worker reused across trials
    normalises the data once, not once per trial.
    """
    return _cached_splits(cfg, str(torch.device(device)))


@functools.lru_cache(maxsize=2)  # a full normalised split is ~700 MB: keep few
def _cached_splits(cfg: DataConfig, device: str) -> CifarSplits:
    return make_splits(load_cifar10(resolve_data_root(cfg.root)), cfg, device)


# ---- augmentation -----------------------------------------------------------------------


def _random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pads each side by `padding` (reflect) and crops back at a random offset per image."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [n, h]
    cols = dx[:, None] + torch.arange(w, device=x.device)  # [n, w]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def _random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirrors each image left-right with probability 0.5."""
    return _flip(x, torch.rand(len(x), generator=generator) < 0.5)


def _flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirrors the images where `flip` (a bool per image) is true."""
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)


def _cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zeroes a `size` x `size` square at a random centre per image, clipped at the borders.

    DeVries & Taylor, "Improved Regularization of CNNs with Cutout", 2017. Zero is the
    dataset mean after normalisation.
    """
    n, _, h, w = x.shape
    top = torch.randint(0, h, (n,), generator=generator).to(x.device) - size // 2
    left = torch.randint(0, w, (n,), generator=generator).to(x.device) - size // 2
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # [n, h]
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # [n, w]
    square = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # [n, 1, h, w]
    return x.masked_fill(square, 0.0)


def augment(x: torch.Tensor, cfg: DataConfig, generator: torch.Generator,
            flips: torch.Tensor | None = None) -> torch.Tensor:
    """Random crop, horizontal flip and cutout, batched, as `cfg` sets them.

    Args:
        x: images [n, c, h, w] on any device (float).
        cfg: `crop_padding`, `flip` and `cutout` are used.
        generator: a CPU generator; every random draw comes from it, so the same seed gives
            the same result on any device.
        flips: which images to mirror (a bool each), when `cfg.flip`; None: at random.

    Returns:
        Augmented images, same shape, dtype and device; `x` itself when all are off.
    """
    if len(x) == 0:
        return x
    if cfg.crop_padding > 0:
        x = _random_crop(x, cfg.crop_padding, generator)
    if cfg.flip:
        x = _random_flip(x, generator) if flips is None else _flip(x, flips)
    if cfg.cutout > 0:
        x = _cutout(x, cfg.cutout, generator)
    return x


# ---- batches ----------------------------------------------------------------------------


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, but got {batch_size!r}.")


def train_batches(
    splits: CifarSplits, batch_size: int, cfg: DataConfig, generator: torch.Generator,
    flips: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of augmented training batches in a random order.

    The last incomplete batch is dropped (every step sees `batch_size` images), except
    that a training set smaller than one batch gives one batch of everything.

    Args:
        splits: the data; `train_x` / `train_y` are used.
        batch_size: images per batch.
        cfg: the augmentation settings.
        generator: a CPU generator for the order and the augmentation.
        flips: per training image, whether it is mirrored this epoch (alternating flip,
            `nas.training.loop`); None: each at random.

    Yields:
        (images, labels) on the device of `splits`.
    """
    _check_batch_size(batch_size)
    n = len(splits.train_y)
    perm = torch.randperm(n, generator=generator).to(splits.train_x.device)
    for i in range(max(1, n // batch_size) if n else 0):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        flip = None if flips is None else flips[idx]
        yield augment(splits.train_x[idx], cfg, generator, flip), splits.train_y[idx]


def eval_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`x`, `y` in order, in slices of `batch_size`; the last batch may be smaller."""
    _check_batch_size(batch_size)
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]
