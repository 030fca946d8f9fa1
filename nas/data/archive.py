"""The CIFAR-10 archive: find it or fetch it, verify it, extract it, read its pickles safely.

Read top to bottom in the order data flows: where the data lives -> archive (download,
verify, extract) -> pickles (an allowlist unpickler) -> `RawCifar`, uint8 tensors.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import http.client
import os
import pickle
import shutil
import stat
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from nas.data.config import IMAGE_SHAPE, NUM_CLASSES, is_os_path
from nas.errors import DataError, masked_url, shown

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # of the official archive only
TARBALL_NAME = "cifar-10-python.tar.gz"
BATCHES_DIR_NAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"

_DOWNLOAD_CHUNK = 1 << 20  # bytes read per network call
_DOWNLOAD_TIMEOUT = 60.0  # seconds without data before the download is abandoned


# ---- where the data lives --------------------------------------------------------------


def _user_cache_dir() -> Path:
    """The per-user cache folder of this project: ($XDG_CACHE_HOME or ~/.cache)/nas."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nas"


def resolve_data_root(cli_root: str | None = None, yaml_root: str | None = None) -> Path:
    """The folder that holds (or will hold) CIFAR-10.

    Precedence: `--data-root`, then the YAML's `dataset.root`, then env `NAS_DATA_DIR`,
    then the per-user cache `($XDG_CACHE_HOME or ~/.cache)/nas/data`. Empty strings count
    as unset. A relative YAML root should already be made relative to the YAML file by
    the caller; here it is taken relative to the working directory.

    Args:
        cli_root: the `--data-root` option, or None.
        yaml_root: the YAML's `dataset.root`, or None.

    Returns:
        The chosen folder, with `~` expanded; it need not exist yet.

    Raises:
        DataError: the chosen folder is no path this system can open (a NUL byte, an
            undecodable character, `~` of an unknown user).
    """
    for where, candidate in (("--data-root", cli_root), ("dataset.root", yaml_root),
                             ("NAS_DATA_DIR", os.environ.get("NAS_DATA_DIR"))):
        if candidate:
            if not is_os_path(candidate):
                raise DataError(f"{where} {shown(candidate)} is no folder this system can open; give a plain "
                                "path, e.g. --data-root ~/data.")
            return Path(candidate).expanduser()
    return _user_cache_dir() / "data"


# ---- the archive: download, verify, extract ---------------------------------------------


def _where_to_put(root: Path) -> str:
    return (
        f"put {TARBALL_NAME} (the official python version) in {root}, "
        "or point --data-root / NAS_DATA_DIR at a folder that has it"
    )


def ensure_cifar10(
    root: Path | str, *, download: bool = True, url: str | None = None, md5: str = CIFAR10_MD5
) -> Path:
    """Makes sure CIFAR-10 is extracted and returns its `cifar-10-batches-py` folder.

    Uses `root/cifar-10-batches-py` if present; else extracts `root/cifar-10-python.tar.gz`
    (a tarball the user put there is trusted, not checksummed: copies of CIFAR-10 re-packed
    elsewhere have other MD5s); else downloads `url`, verifies `md5` and extracts. If `root`
    is read-only (a shared copy), the archive is extracted once into the per-user cache
    `($XDG_CACHE_HOME or ~/.cache)/nas/extracted/<key>/` instead. Download and extraction
    go through temporary names in the target folder and are renamed into place, so an
    interrupted run leaves nothing half-written.

    Args:
        root: the data folder the user named.
        download: whether to fetch the archive when neither the folder nor the tarball exists.
        url: where to download the archive from; default `$NAS_CIFAR10_URL` (a mirror),
            else the official `CIFAR10_URL`. The MD5 is checked either way.
        md5: hex MD5 the downloaded archive must have.

    Returns:
        Path of the `cifar-10-batches-py` folder.

    Raises:
        DataError: nothing usable in `root` and download is off or fails, the download
            fails verification, or the archive is corrupt.
    """
    url = url or os.environ.get("NAS_CIFAR10_URL") or CIFAR10_URL
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(f"data root {root} is not a folder; {_where_to_put(root.parent)}.")
    batches = root / BATCHES_DIR_NAME
    if batches.is_dir():
        return batches
    tarball = root / TARBALL_NAME
    if not tarball.is_file():
        if not download:
            raise DataError(
                f"CIFAR-10 not found in {root} (no {BATCHES_DIR_NAME}/ or {TARBALL_NAME}) "
                f"and downloading is off; {_where_to_put(root)}."
            )
        _download(url, tarball, md5)
    if _can_write(root):
        return _extract(tarball, root)
    cache = _user_cache_dir() / "extracted" / _tarball_key(tarball)
    if (cache / BATCHES_DIR_NAME).is_dir():
        return cache / BATCHES_DIR_NAME
    return _extract(tarball, cache)


def _can_write(folder: Path) -> bool:
    """Whether we may create files in `folder`.

    A folder with no write bits counts as read-only even for root: it is a shared copy
    (e.g. /work/shared/data) that others read, and must not grow an extracted tree.
    """
    try:
        if folder.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) == 0:
            return False
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _tarball_key(tarball: Path) -> str:
    """A short key that changes when the tarball at this path is replaced."""
    st = tarball.stat()
    ident = f"{tarball.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def _download(url: str, tarball: Path, md5: str) -> None:
    """Downloads `url` to `tarball` via a temporary file, keeping it only if its MD5 matches."""
    root = tarball.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, part_name = tempfile.mkstemp(dir=root, prefix=f".{TARBALL_NAME}.", suffix=".part")
    except OSError as e:
        raise DataError(f"cannot write to data root {root} ({e}); {_where_to_put(root)}.") from e
    part = Path(part_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                actual = _stream(url, out)
        except (OSError, ValueError, http.client.HTTPException) as e:
            # URLError, HTTPError, timeouts and refused connections are all OSErrors;
            # ValueError is a malformed url
            raise DataError(masked_url(
                url, f"could not download CIFAR-10 from {url} ({e}); {_where_to_put(root)}."
            )) from None  # the cause may quote the password too
        if actual != md5.lower():
            raise DataError(
                f"the archive downloaded from {masked_url(url)} has MD5 {actual}, expected {md5}; it was "
                f"deleted. Try again, or {_where_to_put(root)}."
            )
        os.replace(part, tarball)
    finally:
        part.unlink(missing_ok=True)  # a partial or rejected download never stays behind


def _stream(url: str, out: BinaryIO) -> str:
    """Copies `url` into `out` with a progress bar on stderr; returns the hex MD5."""
    # local import: rich is only needed on this rarely taken path
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    digest, received = hashlib.md5(), 0
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        columns = (
            TextColumn("downloading CIFAR-10"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True)) as progress:
            task = progress.add_task("download", total=total)
            while chunk := response.read(_DOWNLOAD_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                progress.advance(task, len(chunk))
    if total is not None and received != total:
        raise OSError(f"the connection closed after {received} of {total} bytes")
    return digest.hexdigest()


def _extract(tarball: Path, dest: Path) -> Path:
    """Extracts the `cifar-10-batches-py/` members of `tarball` into `dest`, atomically.

    Only regular files and folders under `cifar-10-batches-py/` are taken (no links, no
    other paths), with tarfile's "data" filter as a second guard. They land in a temporary
    folder inside `dest` that is renamed into place once complete.
    """
    target = dest / BATCHES_DIR_NAME
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest, prefix=f".{BATCHES_DIR_NAME}.", suffix=".part"))
    except OSError as e:
        raise DataError(f"cannot extract {tarball} into {dest} ({e}); make it writable.") from e
    try:
        found = False
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                # iterate instead of extractall(members=...): one pass over the gzip stream
                for member in tar:
                    name = member.name.rstrip("/")
                    if name != BATCHES_DIR_NAME and not name.startswith(BATCHES_DIR_NAME + "/"):
                        continue
                    if not (member.isfile() or member.isdir()):
                        continue
                    found = True
                    tar.extract(member, tmp, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            # gzip.BadGzipFile is an OSError; a truncated gzip stream is an EOFError;
            # tarfile.FilterError (a member escaping the folder) is a TarError
            raise DataError(
                f"cannot extract {tarball} ({type(e).__name__}: {e}); the archive is corrupt, "
                f"truncated or unsafe. Delete it and {_where_to_put(tarball.parent)}."
            ) from e
        if not found:
            raise DataError(
                f"{tarball} has no {BATCHES_DIR_NAME}/ folder; it is not the python version "
                f"of CIFAR-10. Delete it and {_where_to_put(tarball.parent)}."
            )
        try:
            os.rename(tmp / BATCHES_DIR_NAME, target)
        except OSError as e:
            if not target.is_dir():  # else another process finished first: use theirs
                raise DataError(f"cannot move the extracted files to {target} ({e}).") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---- the pickles ------------------------------------------------------------------------


@dataclass(frozen=True)
class RawCifar:
    """CIFAR-10 as stored on disk. Shared by every caller of `load_cifar10`: do not modify."""

    train_images: torch.Tensor  # uint8 [50000, 3, 32, 32], RGB
    train_labels: torch.Tensor  # int64 [50000], class indices
    test_images: torch.Tensor  # uint8 [10000, 3, 32, 32], RGB
    test_labels: torch.Tensor  # int64 [10000], class indices
    classes: tuple[str, ...]  # class names, indexed by label


# The CIFAR pickles hold dicts, lists, strings, ints and numpy arrays; these globals are
# all that rebuilding such arrays needs (names from numpy 1 and 2, pickle protocols 0-5).
_RECONSTRUCT, _FROMBUFFER = np.empty(0).__reduce__()[0], np.empty(0).__reduce_ex__(5)[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # bytes in protocol <= 2 pickles written by Python 3
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing else callable."""

    def __init__(self, file: BinaryIO, source: Path) -> None:
        # latin1 decodes Python 2 str (keys, names, array bytes) the way numpy expects
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.source} refers to {module}.{name}, which a CIFAR-10 pickle never "
                "needs; refusing to load it. Replace the file with one from the official archive."
            ) from None


def _unpickle(path: Path, allowed_base: Path) -> dict:
    """Loads one CIFAR pickle, refusing files outside `allowed_base` and unknown globals."""
    if not path.is_file():
        raise DataError(
            f"{path} is missing; {path.parent} is incomplete. Delete that folder and run "
            f"again to re-extract, or {_where_to_put(path.parent.parent)}."
        )
    resolved = path.resolve()
    if not resolved.is_relative_to(allowed_base):
        raise DataError(
            f"refusing to read {path}: it resolves to {resolved}, outside the data root "
            f"{allowed_base}. Copy the real file there instead of linking to it."
        )
    try:
        with open(resolved, "rb") as f:
            obj = _CifarUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as e:  # a corrupt pickle can fail in many ways; all mean the same
        raise DataError(
            f"cannot read {path} ({type(e).__name__}: {e}); the file is corrupt or truncated. "
            f"Delete {path.parent} and run again to re-extract, "
            f"or {_where_to_put(path.parent.parent)}."
        ) from e
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not the dict of a CIFAR-10 batch.")
    return obj


def _field(batch: dict, key: str, path: Path) -> object:
    """`batch[key]` whether the pickle stored the key as str or as bytes."""
    for k in (key, key.encode()):
        if k in batch:
            return batch[k]
    raise DataError(f"{path} has no '{key}' entry; it is not a CIFAR-10 batch file.")


def _read_batch(path: Path, allowed_base: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 [n, 3, 32, 32]) and labels (int64 [n]) of one batch file."""
    batch = _unpickle(path, allowed_base)
    data, labels = _field(batch, "data", path), _field(batch, "labels", path)
    row = int(np.prod(IMAGE_SHAPE))
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (row,)):
        what = f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
        raise DataError(f"{path}: 'data' must be a uint8 array [n, {row}], but got {what}.")
    labels = np.asarray(labels)
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: 'labels' must be {len(data)} integers, but got {labels.dtype} {labels.shape}."
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: labels must lie in [0, {num_classes}), "
            f"but got {labels.min()}..{labels.max()}."
        )
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


def _read_classes(path: Path, allowed_base: Path) -> tuple[str, ...]:
    names = _field(_unpickle(path, allowed_base), "label_names", path)
    if not (isinstance(names, list) and all(isinstance(n, (str, bytes)) for n in names)):
        raise DataError(f"{path}: 'label_names' must be a list of strings, but got {names!r}.")
    if len(names) != NUM_CLASSES:
        raise DataError(f"{path}: CIFAR-10 has {NUM_CLASSES} classes, but got {len(names)} names.")
    return tuple(n.decode() if isinstance(n, bytes) else n for n in names)


def load_cifar10(root: Path | str, *, download: bool = True) -> RawCifar:
    """Loads CIFAR-10 from `root` (fetching it first if needed), cached per process.

    One Ray worker trains many trials, so the decoded arrays are kept in memory per
    resolved root; the returned tensors are shared and must not be modified.

    Args:
        root: the data folder the user named (not the `cifar-10-batches-py` folder).
        download: passed to `ensure_cifar10`.

    Returns:
        The train and test images and labels as stored, and the class names.

    Raises:
        DataError: the data is missing, unsafe (links out of the root, pickles that call
            anything but numpy's array rebuilders) or corrupt.
    """
    return _load_cifar10_cached(Path(root).expanduser().resolve(), download)


@functools.lru_cache(maxsize=4)
def _load_cifar10_cached(root: Path, download: bool) -> RawCifar:
    batches = ensure_cifar10(root, download=download)
    # files must stay inside the folder the user named (or our own extraction cache)
    allowed_base = root if batches.parent == root else batches.parent.resolve()
    classes = _read_classes(batches / META_FILE, allowed_base)
    train = [_read_batch(batches / name, allowed_base, len(classes)) for name in TRAIN_FILES]
    test_images, test_labels = _read_batch(batches / TEST_FILE, allowed_base, len(classes))
    return RawCifar(
        train_images=torch.from_numpy(np.concatenate([images for images, _ in train])),
        train_labels=torch.from_numpy(np.concatenate([labels for _, labels in train])),
        test_images=torch.from_numpy(np.ascontiguousarray(test_images)),
        test_labels=torch.from_numpy(test_labels),
        classes=classes,
    )

