"""Every check that can be made before the first write is made in validation: bad values exit 2
with one line and leave no store behind (issue 14, class 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nas.db.schema import Experiment
from typer.testing import CliRunner

from nas.cli import app, common
from nas.config.experiment import NAME_LENGTH
from tests.helpers import PREWRITE_CASES

runner = CliRunner()
INVALID_DIR = Path(__file__).parent / "invalid_spaces"


@pytest.fixture
def wide_errors(monkeypatch):
    """An error console that never wraps, so 'one line' tests the message, not rich's layout."""
    monkeypatch.setattr(common.err_console, "width", 10_000)


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


@pytest.mark.parametrize(("name", "budget", "key_path", "rule"), PREWRITE_CASES, ids=[c[0] for c in PREWRITE_CASES])
def test_launch_refuses_before_the_store_exists(tmp_path, wide_errors, name, budget, key_path, rule):
    db = tmp_path / "nas.db"
    result = runner.invoke(app, ["launch", str(INVALID_DIR / name), "--db", str(db), "--budget", budget or "none",
                                 "--data-root", str(tmp_path / "no-data")])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert f": {key_path}: " in line and rule in line, line
    assert not db.exists() and not (tmp_path / "no-data").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--lr", "inf"], "lr must be a finite number"),
        (["--lr", "nan"], "lr must be a finite number"),
        (["--width", "inf"], "--width: width must be a finite number"),
        (["--val-size", "60000"], "val_size must be at most 49990"),
        (["--val-size", "45000", "--train-subset", "10000"], "train_subset must be at most 5000"),
        (["--epochs", "100000000000"], "epochs must be at most 10000"),
        (["--batch-size", "10000000"], "batch_size must be at most 50000"),
        (["--seed", "99999999999"], "--seed must be between 0 and 2147483647"),
        (["--experiment", "x" * (NAME_LENGTH + 1)], "--experiment: must be at most 200 characters"),
        (["--threads", "1000000000000"], "--threads must be at most 4096"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(a[:12] for a in v),
)
def test_train_refuses_bad_options_before_data_or_store(tmp_path, wide_errors, args, named):
    db = tmp_path / "nas.db"
    result = runner.invoke(app, ["train", "--arch", "R:L1", *args, "--db", str(db),
                                 "--data-root", str(tmp_path / "no-data")])
    assert result.exit_code == 2, result.output
    assert named in _one_error_line(result.output)
    assert not db.exists() and not (tmp_path / "no-data").exists()


@pytest.mark.parametrize(("name", "budget", "key_path", "rule"), PREWRITE_CASES[:4] + PREWRITE_CASES[-3:],
                         ids=[c[0] for c in PREWRITE_CASES[:4] + PREWRITE_CASES[-3:]])
def test_launch_onto_an_existing_store_writes_no_experiment_and_no_study(tmp_path, wide_errors, name, budget,
                                                                        key_path, rule):
    from nas.db import Store
    from sqlalchemy import inspect

    db = tmp_path / "nas.db"
    Store.open(str(db)).close()  # an empty nas store, as a first `nas launch` leaves it
    before = db.read_bytes()
    result = runner.invoke(app, ["launch", str(INVALID_DIR / name), "--db", str(db), "--budget", budget or "none"])
    assert result.exit_code == 2 and rule in _one_error_line(result.output), result.output
    assert db.read_bytes() == before
    with Store.open(str(db), read_only=True) as store:
        assert store.experiments() == []
        assert "studies" not in inspect(store.engine).get_table_names()  # Optuna never opened it


def test_the_name_limit_is_the_stores_column():
    assert Experiment.__table__.c.name.type.length == NAME_LENGTH
