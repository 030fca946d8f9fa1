"""The order of checks in `nas launch` (and `nas ablate`, `nas train`): the arguments, the
config, the store, the data, Ray, each failing fast with exit 2 and writing nothing (issue 14,
class 3)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nas.cli import app, common
from tests.cifar_fixture import write_cifar
from tests.helpers import experiment_yaml, free_port

runner = CliRunner()


@pytest.fixture
def wide_errors(monkeypatch):
    """An error console that never wraps, so 'one line' tests the message, not rich's layout."""
    monkeypatch.setattr(common.err_console, "width", 10_000)


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def _launch(*args: str):
    return runner.invoke(app, ["launch", *args, "--budget", "none"])


def test_an_unsupported_database_is_named_before_the_data_is_looked_for(tmp_path, wide_errors):
    space = experiment_yaml(tmp_path / "x.yaml")
    no_data = tmp_path / "no-data"  # no CIFAR-10 here: reading it first would say so (or download it)
    result = _launch(str(space), "--db", "ftp://x", "--data-root", str(no_data))
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert "unsupported database 'ftp'" in line and "CIFAR" not in line, line
    assert not no_data.exists()


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"not a database at all, just text\n" * 100, "is not a database"),
        (None, "is not a nas store (it has other tables: inventory)"),
    ],
    ids=["not-sqlite", "someone-elses-tables"],
)
def test_a_database_that_is_not_a_nas_store_is_refused_untouched_before_the_data(tmp_path, wide_errors, content,
                                                                                 named):
    db = tmp_path / "other.db"
    if content is None:
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE inventory (item TEXT)")
    else:
        db.write_bytes(content)
    before = db.read_bytes()
    result = _launch(str(experiment_yaml(tmp_path / "x.yaml")), "--db", str(db), "--data-root", str(tmp_path / "no"))
    assert result.exit_code == 2, result.output
    assert named in _error_line(result.output)
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["other.db", "x.yaml"]


def test_a_missing_store_in_an_unwritable_place_is_refused_before_the_data(tmp_path, wide_errors):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _launch(str(experiment_yaml(tmp_path / "x.yaml")), "--db", str(blocker / "sub" / "nas.db"),
                     "--data-root", str(tmp_path / "no"))
    assert result.exit_code == 2, result.output
    assert "is not a writable folder" in _error_line(result.output)


@pytest.mark.parametrize(
    ("address", "named"),
    [("ray://head:10001", "a Ray client address"), ("head", "expected HOST:PORT"), ("head:port", "expected HOST:PORT"),
     ("head:99999", "expected HOST:PORT")],
)
def test_a_malformed_address_is_an_argument_error_before_the_config_is_read(tmp_path, wide_errors, address, named):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("serach: {}\n")  # an unknown top-level key: the config error, were it read first
    result = _launch(str(bad_yaml), "--address", address, "--db", str(tmp_path / "nas.db"))
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert f"--address {address}: {named}" in line and "serach" not in line, line
    assert not (tmp_path / "nas.db").exists()


def test_ablate_checks_its_arguments_before_opening_the_store(tmp_path, wide_errors):
    missing = tmp_path / "nas.db"  # opening it first would say there is no nas database here
    for args, named in [(["--address", "ray://h:1"], "a Ray client address"),
                        (["--repeats", "100000"], "--repeats must be at most 1000"),
                        (["--until-separated", "--max-repeats", "10000000"], "--max-repeats must be at most 1000")]:
        result = runner.invoke(app, ["ablate", "some-experiment", *args, "--db", str(missing)])
        assert result.exit_code == 2, result.output
        assert named in _error_line(result.output)
    assert not missing.exists()


def test_train_names_an_unsupported_database_before_reading_data(tmp_path, wide_errors):
    result = runner.invoke(app, ["train", "--arch", "R:L1", "--db", "ftp://x", "--data-root", str(tmp_path / "no")])
    assert result.exit_code == 2, result.output
    assert "unsupported database 'ftp'" in _error_line(result.output)
    assert not (tmp_path / "no").exists()


def test_an_address_nothing_listens_on_fails_fast_and_writes_nothing(tmp_path):
    # ray.init alone retries such an address for many minutes (about 40 s per attempt, 20
    # attempts); the bound here is the subprocess timeout, not a timed assertion.
    data = write_cifar(tmp_path / "cifar", n_train_per_class=20, n_test_per_class=5)
    space = experiment_yaml(tmp_path / "x.yaml", dataset={"val_size": 50})
    db = tmp_path / "nas.db"
    address = f"127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "nas", "launch", str(space), "--budget", "none", "--address", address,
           "--db", str(db), "--data-root", str(data)]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--address {address}: no Ray GCS answers" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not db.exists()


def test_the_store_probe_creates_nothing_where_a_writer_would_create_the_store(tmp_path):
    from nas.db.engine import probe

    fresh = tmp_path / "sub" / "fresh.db"
    probe(str(fresh))  # a writer may create it later; the probe itself does not
    assert not fresh.exists() and not fresh.parent.exists()


@pytest.mark.parametrize("root", ["bad\x00root", "~nosuchuser_nas_test/data"])
def test_a_data_root_no_system_can_open_exits_2_in_one_line(tmp_path, root):
    space = experiment_yaml(tmp_path / "tiny.yaml")
    db = tmp_path / "nas.db"
    result = CliRunner().invoke(app, ["launch", str(space), "--db", str(db), "--data-root", root])
    assert result.exit_code == 2, result.output
    assert "--data-root" in result.output and "no folder this system can open" in result.output
    assert not db.exists()
