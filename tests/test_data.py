"""CIFAR-10 loading, splitting, augmentation and batching (nas.data)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import pickle
import shutil
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nas.data.archive import RawCifar, ensure_cifar10, load_cifar10, resolve_data_root
from nas.data.config import CIFAR10_MEAN, CIFAR10_STD, DataConfig
from nas.data.tensors import augment, eval_batches, make_splits, train_batches
from nas.errors import ConfigError, DataError
from tests.cifar_fixture import CLASS_COLOURS, CLASSES, write_cifar

TARBALL = "cifar-10-python.tar.gz"
BATCHES = "cifar-10-batches-py"
NO_AUG = DataConfig(crop_padding=0, flip=False, cutout=0)


# ---- helpers ----------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


class _TruncatingHandler(_QuietHandler):
    """Promises a megabyte, sends a kilobyte, hangs up: a download cut off midway."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        self.wfile.write(b"\0" * 1024)
        self.wfile.flush()
        self.close_connection = True


@contextlib.contextmanager
def _serve(folder: Path, handler: type = _QuietHandler) -> Iterator[str]:
    """Serves `folder` over HTTP on localhost; yields the tarball's URL."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{TARBALL}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served_tarball(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(url, md5) of a tiny CIFAR-10 tarball served over HTTP on localhost."""
    folder = write_cifar(tmp_path / "served", as_tarball=True)
    md5 = hashlib.md5((folder / TARBALL).read_bytes()).hexdigest()
    with _serve(folder) as url:
        yield url, md5


def _closed_port_url() -> str:
    """A URL on localhost where nothing listens: a machine without network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{TARBALL}"


def _indexed_raw(n_per_class: int = 20, n_test: int = 10) -> RawCifar:
    """Raw data whose image i stores i in its first two pixels, labels i % 10."""
    n = 10 * n_per_class
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) % 256
    images[:, 0, 0, 1] = torch.arange(n) // 256
    return RawCifar(
        train_images=images,
        train_labels=torch.arange(n) % 10,
        test_images=torch.zeros(n_test, 3, 32, 32, dtype=torch.uint8),
        test_labels=torch.arange(n_test) % 10,
        classes=CLASSES,
    )


def _indices(x: torch.Tensor) -> list[int]:
    """Undoes the normalisation of the red channel and reads back what `_indexed_raw` stored."""
    red = (x[:, 0, 0, :2] * CIFAR10_STD[0] + CIFAR10_MEAN[0]) * 255
    lo, hi = red.round().long().unbind(1)
    return (lo + 256 * hi).tolist()


# ---- loading ----------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["bytes", "str"])
def test_folder_layout_loads_with_right_shapes_dtypes_and_labels(tmp_path, key_type):
    root = write_cifar(tmp_path, n_train_per_class=20, n_test_per_class=5, key_type=key_type)
    raw = load_cifar10(root)
    assert raw.train_images.shape == (200, 3, 32, 32) and raw.train_images.dtype == torch.uint8
    assert raw.test_images.shape == (50, 3, 32, 32) and raw.test_images.dtype == torch.uint8
    assert raw.train_labels.dtype == torch.int64 and raw.test_labels.dtype == torch.int64
    assert raw.train_labels.bincount().tolist() == [20] * 10
    assert raw.classes == CLASSES
    # each image carries its label's colour: labels line up with images, channels are RGB
    for label, colour in enumerate(CLASS_COLOURS):
        mean = raw.train_images[raw.train_labels == label].double().mean(dim=(0, 2, 3))
        assert torch.allclose(mean, torch.tensor(colour), atol=3)


def test_tarball_is_extracted_and_loads(tmp_path):
    root = write_cifar(tmp_path, as_tarball=True)
    raw = load_cifar10(root)
    assert raw.train_images.shape == (200, 3, 32, 32)
    assert sorted(p.name for p in root.iterdir()) == [BATCHES, TARBALL]  # no temp leftovers


def test_read_only_root_is_extracted_into_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_cifar(tmp_path / "shared", as_tarball=True)
    root.chmod(0o555)
    try:
        batches = ensure_cifar10(root, download=False)
        assert batches.is_relative_to(tmp_path / "cache" / "nas")
        assert [p.name for p in root.iterdir()] == [TARBALL]
        assert load_cifar10(root).train_images.shape == (200, 3, 32, 32)
    finally:
        root.chmod(0o755)


def test_load_is_cached_per_root(tiny_cifar_root):
    assert load_cifar10(tiny_cifar_root) is load_cifar10(str(tiny_cifar_root) + "/")


def test_download_verifies_md5_and_extracts(tmp_path, served_tarball):
    url, md5 = served_tarball
    root = tmp_path / "data"
    batches = ensure_cifar10(root, url=url, md5=md5)
    assert batches == root / BATCHES and (batches / "data_batch_5").is_file()
    assert sorted(p.name for p in root.iterdir()) == [BATCHES, TARBALL]


def test_md5_mismatch_raises_and_leaves_nothing(tmp_path, served_tarball):
    url, _ = served_tarball
    root = tmp_path / "data"
    with pytest.raises(DataError, match="MD5"):
        ensure_cifar10(root, url=url, md5="0" * 32)
    assert list(root.iterdir()) == []


def test_truncated_download_raises_and_leaves_nothing(tmp_path):
    root = tmp_path / "data"
    with _serve(tmp_path, _TruncatingHandler) as url:
        with pytest.raises(DataError, match="could not download"):
            ensure_cifar10(root, url=url)
    assert list(root.iterdir()) == []


def test_no_network_error_names_root_and_where_to_put_archive(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        ensure_cifar10(root, url=_closed_port_url())
    message = str(info.value)
    assert str(root) in message and f"put {TARBALL}" in message and "NAS_DATA_DIR" in message


@pytest.mark.parametrize("mirror", ["closed-port", "bad-port", "md5"])
def test_a_mirror_url_with_credentials_is_named_with_its_password_masked(tmp_path, monkeypatch, mirror):
    url = _closed_port_url().replace("http://", "https://reader:hunter2@")
    if mirror == "bad-port":
        url = "https://reader:hunter2@mirror.invalid:port/" + TARBALL  # urllib's error quotes the netloc
    if mirror == "md5":  # a download that arrives, but is not the archive
        monkeypatch.setattr("nas.data.archive._stream", lambda url, out: "0" * 32)
    with pytest.raises(DataError) as info:
        ensure_cifar10(tmp_path / "data", url=url)
    message = str(info.value)
    assert "hunter2" not in message and "reader:***@" in message
    assert info.value.__cause__ is None or "hunter2" not in str(info.value.__cause__)


def test_download_off_and_nothing_present_raises(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        load_cifar10(root, download=False)
    message = str(info.value)
    assert str(root) in message and f"put {TARBALL}" in message and "--data-root" in message
    assert not root.exists()


def test_corrupt_tarball_raises_and_leaves_no_partial_folder(tmp_path):
    root = write_cifar(tmp_path, as_tarball=True)
    data = (root / TARBALL).read_bytes()
    (root / TARBALL).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt"):
        ensure_cifar10(root, download=False)
    assert [p.name for p in root.iterdir()] == [TARBALL]


def test_tar_members_outside_the_batches_folder_and_links_are_skipped(tmp_path):
    src = write_cifar(tmp_path / "src")
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "evil.txt").write_text("x")
    link = tarfile.TarInfo(f"{BATCHES}/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with tarfile.open(root / TARBALL, "w:gz") as tar:
        tar.add(src / BATCHES, arcname=BATCHES)
        tar.add(tmp_path / "evil.txt", arcname="evil.txt")
        tar.addfile(link)
    batches = ensure_cifar10(root, download=False)
    assert not (root / "evil.txt").exists() and not (batches / "link").exists()


def test_tar_member_escaping_the_folder_raises(tmp_path):
    src = write_cifar(tmp_path / "src")
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / TARBALL, "w:gz") as tar:
        tar.add(src / BATCHES, arcname=BATCHES)  # the folder exists, so the escape can land
        tar.add(src / BATCHES / "batches.meta", arcname=f"{BATCHES}/../../escaped")
    with pytest.raises(DataError, match="unsafe"):
        ensure_cifar10(root, download=False)
    assert [p.name for p in root.iterdir()] == [TARBALL]


def test_pickle_with_disallowed_global_is_refused_not_executed(tiny_cifar_root, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    batch = tiny_cifar_root / BATCHES / "data_batch_2"
    batch.write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="refusing") as info:
        load_cifar10(tiny_cifar_root)
    assert "system" in str(info.value) and str(batch) in str(info.value)
    assert not marker.exists()


def test_corrupt_pickle_raises_naming_the_file(tiny_cifar_root):
    batch = tiny_cifar_root / BATCHES / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(DataError, match="corrupt") as info:
        load_cifar10(tiny_cifar_root)
    assert str(batch) in str(info.value)


def test_missing_batch_file_raises_naming_it(tiny_cifar_root):
    batch = tiny_cifar_root / BATCHES / "test_batch"
    batch.unlink()
    with pytest.raises(DataError, match="missing") as info:
        load_cifar10(tiny_cifar_root)
    assert str(batch) in str(info.value)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_symlink_escaping_the_root_is_refused(tmp_path, what):
    outside = write_cifar(tmp_path / "outside")
    root = write_cifar(tmp_path / "root")
    if what == "file":
        (root / BATCHES / "data_batch_1").unlink()
        (root / BATCHES / "data_batch_1").symlink_to(outside / BATCHES / "data_batch_1")
    else:
        shutil.rmtree(root / BATCHES)
        (root / BATCHES).symlink_to(outside / BATCHES)
    with pytest.raises(DataError, match="outside the data root"):
        load_cifar10(root)


def test_root_may_itself_be_a_symlink(tmp_path):
    real = write_cifar(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    assert load_cifar10(tmp_path / "link").train_images.shape == (200, 3, 32, 32)


# ---- where the data lives ---------------------------------------------------------------


def test_resolve_data_root_precedence_cli_yaml_env_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_DATA_DIR", "/env")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert resolve_data_root("/cli", "/yaml") == Path("/cli")
    assert resolve_data_root(None, "/yaml") == Path("/yaml")
    assert resolve_data_root() == Path("/env")
    monkeypatch.delenv("NAS_DATA_DIR")
    assert resolve_data_root() == tmp_path / "nas" / "data"


@pytest.mark.parametrize(
    "field, value",
    [
        ("val_size", -1),
        ("train_subset", 5),
        ("train_subset", 100.0),
        ("split_seed", -3),
        ("crop_padding", 32),
        ("cutout", -1),
        ("flip", 1),
        ("root", ""),
    ],
)
def test_invalid_config_raises_naming_field_and_value(field, value):
    with pytest.raises(ConfigError, match=field) as info:
        DataConfig(**{field: value})
    assert repr(value) in str(info.value)


# ---- splits -----------------------------------------------------------------------------


def test_val_split_is_class_balanced():
    splits = make_splits(_indexed_raw(), DataConfig(val_size=50))
    assert splits.val_y.bincount(minlength=10).tolist() == [5] * 10


def test_uneven_val_size_is_as_balanced_as_possible():
    counts = make_splits(_indexed_raw(), DataConfig(val_size=23)).val_y.bincount(minlength=10)
    assert counts.sum() == 23 and counts.max() - counts.min() == 1


def test_train_subset_is_class_balanced_and_disjoint_from_val():
    splits = make_splits(_indexed_raw(), DataConfig(val_size=50, train_subset=100))
    assert splits.train_y.bincount(minlength=10).tolist() == [10] * 10
    train, val = _indices(splits.train_x), _indices(splits.val_x)
    assert len(set(train)) == 100 and len(set(val)) == 50
    assert not set(train) & set(val)
    assert all(i % 10 == y for i, y in zip(train, splits.train_y.tolist()))  # labels follow images


def test_without_subset_train_is_everything_but_val():
    splits = make_splits(_indexed_raw(), DataConfig(val_size=50))
    assert sorted(_indices(splits.train_x) + _indices(splits.val_x)) == list(range(200))


def test_split_is_deterministic_given_split_seed():
    cfg = DataConfig(val_size=50, train_subset=60, split_seed=7)
    a, b = make_splits(_indexed_raw(), cfg), make_splits(_indexed_raw(), cfg)
    assert _indices(a.val_x) == _indices(b.val_x) and _indices(a.train_x) == _indices(b.train_x)


def test_another_split_seed_gives_another_split():
    a = make_splits(_indexed_raw(), DataConfig(val_size=50, split_seed=0))
    b = make_splits(_indexed_raw(), DataConfig(val_size=50, split_seed=1))
    assert _indices(a.val_x) != _indices(b.val_x)


def test_val_set_does_not_depend_on_train_subset():
    a = make_splits(_indexed_raw(), DataConfig(val_size=50, train_subset=20))
    b = make_splits(_indexed_raw(), DataConfig(val_size=50, train_subset=None))
    assert _indices(a.val_x) == _indices(b.val_x)


def test_val_size_zero_gives_empty_val():
    splits = make_splits(_indexed_raw(), DataConfig(val_size=0))
    assert splits.val_x.shape == (0, 3, 32, 32) and splits.val_y.shape == (0,)
    assert len(splits.train_y) == 200


def test_val_plus_subset_beyond_train_raises():
    with pytest.raises(ConfigError, match="exceeds the 200 training images"):
        make_splits(_indexed_raw(), DataConfig(val_size=150, train_subset=60))


def test_normalisation_maps_dataset_mean_to_zero_and_one_std_to_one():
    mean, std = torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD)
    raw = _indexed_raw(n_per_class=1)
    at_mean = (mean * 255).round().to(torch.uint8).view(1, 3, 1, 1).expand(10, 3, 32, 32)
    at_one_std = ((mean + std) * 255).round().to(torch.uint8).view(1, 3, 1, 1).expand(10, 3, 32, 32)
    raw = RawCifar(at_mean.clone(), raw.train_labels, at_one_std.clone(), raw.test_labels, CLASSES)
    splits = make_splits(raw, DataConfig(val_size=0))
    assert splits.train_x.dtype == torch.float32
    assert splits.train_x.abs().max() < 0.01
    assert (splits.test_x - 1).abs().max() < 0.01


# ---- augmentation -----------------------------------------------------------------------


def _images(n: int = 8, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(123))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_augment_keeps_shape_and_dtype():
    x = _images()
    out = augment(x, DataConfig(crop_padding=4, flip=True, cutout=6), _gen())
    assert out.shape == x.shape and out.dtype == x.dtype


def test_augment_is_deterministic_for_a_seed():
    x, cfg = _images(), DataConfig(crop_padding=4, flip=True, cutout=6)
    assert torch.equal(augment(x, cfg, _gen(1)), augment(x, cfg, _gen(1)))
    assert not torch.equal(augment(x, cfg, _gen(1)), augment(x, cfg, _gen(2)))


def test_all_augmentations_off_is_the_identity():
    x = _images()
    assert torch.equal(augment(x, NO_AUG, _gen()), x)


def test_flip_mirrors_some_images_and_keeps_the_rest():
    x = _images(n=32)
    out = augment(x, DataConfig(crop_padding=0, flip=True, cutout=0), _gen())
    flipped = [torch.equal(o, i.flip(2)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(f != k for f, k in zip(flipped, kept))  # each image is one or the other
    assert 0 < sum(flipped) < len(x)


def test_crop_is_a_window_of_the_reflect_padded_image():
    x, pad = _images(n=16), 3
    out = augment(x, DataConfig(crop_padding=pad, flip=False, cutout=0), _gen())
    padded = torch.nn.functional.pad(x, (pad,) * 4, mode="reflect")
    dys, dxs = set(), set()
    for o, p in zip(out, padded):
        windows = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(o, p[:, dy : dy + 16, dx : dx + 16])
        ]
        assert windows
        dys.add(windows[0][0])
        dxs.add(windows[0][1])
    assert len(dys) > 1 and len(dxs) > 1  # offsets differ per image, in both directions


def test_cutout_zeroes_one_square_of_side_cutout_clipped_at_borders():
    size = 4
    x = torch.ones(64, 3, 16, 16)
    out = augment(x, DataConfig(crop_padding=0, flip=False, cutout=size), _gen())
    interior = 0
    for image in out:
        zero = image == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # all channels
        rows, cols = zero[0].nonzero().unbind(1)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert zero[0].sum() == (bottom - top) * (right - left)  # a filled rectangle
        assert bottom - top <= size and right - left <= size
        if 0 < top and bottom < 16 and 0 < left and right < 16:
            assert zero[0].sum() == size * size
            interior += 1
    assert interior > 0


# ---- batches ----------------------------------------------------------------------------


def _splits(n_per_class: int = 20) -> object:
    return make_splits(_indexed_raw(n_per_class), DataConfig(val_size=0))


def test_train_batches_are_the_same_for_the_same_seed():
    splits, cfg = _splits(), DataConfig(crop_padding=2, flip=True, cutout=4)
    a = list(train_batches(splits, 64, cfg, _gen(5)))
    b = list(train_batches(splits, 64, cfg, _gen(5)))
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def test_train_batches_give_n_over_batch_size_full_batches_without_repeats():
    batches = list(train_batches(_splits(), 64, NO_AUG, _gen()))
    assert [len(y) for _, y in batches] == [64, 64, 64]  # 200 // 64; the last 8 are dropped
    seen = [i for x, _ in batches for i in _indices(x)]
    assert len(set(seen)) == len(seen) == 192


def test_train_batches_with_fewer_images_than_a_batch_give_one_batch():
    batches = list(train_batches(_splits(n_per_class=3), 64, NO_AUG, _gen()))
    assert [len(y) for _, y in batches] == [30]


def test_eval_batches_cover_every_example_once_in_order():
    x, y = torch.arange(10.0).view(10, 1), torch.arange(10)
    batches = list(eval_batches(x, y, 3))
    assert [len(b) for _, b in batches] == [3, 3, 3, 1]
    assert torch.equal(torch.cat([b for _, b in batches]), y)
    assert torch.equal(torch.cat([a for a, _ in batches]), x)


# ---- the real data ----------------------------------------------------------------------


@pytest.mark.slow
def test_real_cifar10_loads_with_official_sizes_and_classes(real_data_root):
    start = time.perf_counter()
    raw = load_cifar10(real_data_root, download=False)
    print(f"loaded CIFAR-10 from {real_data_root} in {time.perf_counter() - start:.2f} s")
    assert raw.train_images.shape == (50000, 3, 32, 32)
    assert raw.test_images.shape == (10000, 3, 32, 32)
    assert raw.train_labels.bincount().tolist() == [5000] * 10
    assert raw.test_labels.bincount().tolist() == [1000] * 10
    assert raw.classes == CLASSES
    splits = make_splits(raw, DataConfig())
    assert len(splits.train_y) == 45000 and splits.val_y.bincount().tolist() == [500] * 10
    channel_mean = splits.train_x.mean(dim=(0, 2, 3))
    channel_std = splits.train_x.std(dim=(0, 2, 3))
    assert channel_mean.abs().max() < 0.05 and (channel_std - 1).abs().max() < 0.05
