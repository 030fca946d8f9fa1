"""A tiny CIFAR-10 written in the official "python version" layout, for tests.

`write_cifar` makes `cifar-10-batches-py/` (data_batch_1..5, test_batch, batches.meta:
pickles of dicts with a uint8 [n, 3072] `data` array, rows R..G..B, and a `labels` list),
as a folder or as `cifar-10-python.tar.gz`. Each class has its own mean colour
(`CLASS_COLOURS`) plus noise, so a small net can learn it in a few steps. Import
`tiny_cifar_root` into a conftest to get a fresh copy per test.
"""

from __future__ import annotations

import pickle
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# one RGB mean colour per class, spread around the colour wheel so classes are separable
_ANGLES = 2 * np.pi * np.arange(len(CLASSES)) / len(CLASSES)
CLASS_COLOURS = np.stack(
    [128 + 90 * np.cos(_ANGLES + phase) for phase in (0.0, 2.1, 4.2)], axis=1
).round()  # [10, 3], pixel values 0..255
NOISE_STD = 12.0  # pixel noise around the class colour, in 0..255 units


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 [n, 3072] rows (RRR..GGG..BBB) whose colour depends on the label."""
    n = len(labels)
    pixels = CLASS_COLOURS[labels][:, :, None, None] + rng.normal(0, NOISE_STD, (n, 3, 32, 32))
    return pixels.clip(0, 255).astype(np.uint8).reshape(n, 3 * 32 * 32)


def _dump(path: Path, record: dict[str, object], key_type: str) -> None:
    """Pickles `record` with str or bytes keys (and names), protocol 2 like the original."""
    if key_type not in ("bytes", "str"):
        raise ValueError(f"key_type must be 'bytes' or 'str', but got {key_type!r}")

    def convert(value: object) -> object:
        if key_type == "bytes" and isinstance(value, str):
            return value.encode()
        if key_type == "bytes" and isinstance(value, list) and value and isinstance(value[0], str):
            return [v.encode() for v in value]
        return value

    record = {(k.encode() if key_type == "bytes" else k): convert(v) for k, v in record.items()}
    path.write_bytes(pickle.dumps(record, protocol=2))


def _batch(name: str, labels: np.ndarray, rng: np.random.Generator) -> dict[str, object]:
    return {
        "batch_label": name,
        "labels": labels.tolist(),
        "data": _images(labels, rng),
        "filenames": [f"{name}_{j}.png".replace(" ", "_") for j in range(len(labels))],
    }


def _write_batches(folder: Path, per_class: tuple[int, int], key_type: str, seed: int) -> None:
    """Writes the seven pickles into `folder`; `per_class` is (train, test) images per class."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    classes = np.arange(len(CLASSES))
    train_labels = rng.permutation(np.repeat(classes, per_class[0]))
    for i, labels in enumerate(np.array_split(train_labels, 5), start=1):
        _dump(folder / f"data_batch_{i}", _batch(f"training batch {i} of 5", labels, rng), key_type)
    test_labels = rng.permutation(np.repeat(classes, per_class[1]))
    _dump(folder / "test_batch", _batch("testing batch 1 of 1", test_labels, rng), key_type)
    meta = {
        "num_cases_per_batch": len(train_labels) // 5,
        "label_names": list(CLASSES),
        "num_vis": 3 * 32 * 32,
    }
    _dump(folder / "batches.meta", meta, key_type)


def write_cifar(
    root: Path,
    n_train_per_class: int = 20,
    n_test_per_class: int = 5,
    key_type: str = "bytes",
    as_tarball: bool = False,
    seed: int = 0,
) -> Path:
    """Writes a tiny CIFAR-10 into `root` and returns `root`.

    Args:
        root: the data folder (created if needed).
        n_train_per_class: training images per class, spread over the five train batches.
        n_test_per_class: test images per class.
        key_type: "bytes" (as `pickle.load(..., encoding="bytes")` sees the original) or
            "str" (pickles written by Python 3 with str keys).
        as_tarball: write `root/cifar-10-python.tar.gz` instead of `root/cifar-10-batches-py/`.
        seed: seed of the label order and the pixel noise.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    per_class = (n_train_per_class, n_test_per_class)
    if not as_tarball:
        _write_batches(root / "cifar-10-batches-py", per_class, key_type, seed)
        return root
    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging) / "cifar-10-batches-py"
        _write_batches(folder, per_class, key_type, seed)
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(folder, arcname="cifar-10-batches-py")
    return root


@pytest.fixture
def tiny_cifar_root(tmp_path: Path) -> Path:
    """A data root holding a tiny CIFAR-10 (200 train, 50 test images) as a folder."""
    return write_cifar(tmp_path / "cifar")
