"""`nas status`, `nas list` and `nas results` as data: every --format gives the API's frame back
(csv and json through `nas.frames.restore_dtypes`, which the module documents; parquet as
is), stdout holds the data alone, and bad input exits 2 without writing a file."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from typer.testing import CliRunner

import nas
from nas.cli import app
from nas.frames import restore_dtypes
from tests.results_store import EXPERIMENT, known_store

runner = CliRunner()
WHATS = ("trials", "epochs", "architectures", "ablation")


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    return known_store(tmp_path_factory.mktemp("formats") / "nas.db")


@pytest.fixture(scope="module")
def api(known):
    """The API's frames: what each format must give back."""
    with nas.open(known.url) as results:
        exp = results.experiment(EXPERIMENT)
        return {"experiments": results.experiments(), **{what: exp.frame(what) for what in WHATS}}


def read_back(path_or_text, fmt: str, kind: str) -> pd.DataFrame:
    if fmt == "parquet":
        return pd.read_parquet(path_or_text)  # typed: no restoring
    source = io.StringIO(path_or_text) if isinstance(path_or_text, str) else path_or_text
    frame = pd.read_csv(source) if fmt == "csv" else pd.read_json(source, orient="records")
    return restore_dtypes(frame, kind)


@pytest.mark.parametrize("what", WHATS)
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_results_on_stdout_read_back_equal_the_api_frame(known, api, what, fmt):
    result = runner.invoke(app, ["results", EXPERIMENT, "--what", what, "--format", fmt, "--db", known.url])
    assert result.exit_code == 0, result.output
    assert len(api[what]) > 0
    assert_frame_equal(read_back(result.stdout, fmt, what), api[what])


@pytest.mark.parametrize("what", WHATS)
@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_results_written_with_o_read_back_equal_the_api_frame(known, api, what, fmt, tmp_path):
    path = tmp_path / f"out.{fmt}"
    result = runner.invoke(app, ["results", EXPERIMENT, "--what", what, "--format", fmt, "-o", str(path),
                                 "--db", known.url])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # the data went to the file; "wrote N rows" to stderr
    assert f"wrote {len(api[what])} rows" in result.stderr
    assert_frame_equal(read_back(path, fmt, what), api[what])
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_list_and_status_without_an_experiment_give_the_experiments_frame(known, api, fmt, tmp_path):
    for command in ("list", "status"):
        path = tmp_path / f"{command}.{fmt}"
        result = runner.invoke(app, [command, "--format", fmt, "-o", str(path), "--db", known.url])
        assert result.exit_code == 0, result.output
        assert_frame_equal(read_back(path, fmt, "experiments"), api["experiments"])


def test_status_of_an_experiment_gives_the_architectures_its_table_shows(known, api):
    result = runner.invoke(app, ["status", EXPERIMENT, "--format", "csv", "--db", known.url])
    assert result.exit_code == 0, result.output
    confirm = api["architectures"][api["architectures"]["phase"] == "confirm"].reset_index(drop=True)
    assert len(confirm) == 2
    assert_frame_equal(read_back(result.stdout, "csv", "architectures"), confirm)


def test_format_table_keeps_the_tables(known):
    for args in (["status", EXPERIMENT], ["list"], ["status"]):
        plain = runner.invoke(app, [*args, "--db", known.url])
        table = runner.invoke(app, [*args, "--format", "table", "--db", known.url])
        assert plain.exit_code == table.exit_code == 0
        assert plain.stdout == table.stdout and "┃" in plain.stdout


def test_a_pipe_gets_only_data_on_stdout(known, api):
    """A real process: csv on stdout parses whole, nothing else mixed in."""
    out = subprocess.run([sys.executable, "-m", "nas", "results", EXPERIMENT, "--what", "architectures",
                          "--format", "csv", "--db", known.url], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("experiment,phase,position,arch_hash")
    assert_frame_equal(read_back(out.stdout, "csv", "architectures"), api["architectures"])


# ---- bad input: exit 2, a message naming the problem, no file ---------------------------------


@pytest.mark.parametrize(("args", "named"), [
    (["results", "nope"], "no experiment named 'nope' in the store; experiments: known"),
    (["status", "nope"], "no experiment named 'nope' in the store; experiments: known"),
    (["results", EXPERIMENT, "--what", "bogus"], "'bogus' is not one of 'trials', 'epochs', 'architectures'"),
    (["results", EXPERIMENT, "--format", "xml"], "'xml' is not one of 'table', 'csv', 'json', 'parquet'"),
    (["list", "--format", "xml"], "'xml' is not one of 'table', 'csv', 'json', 'parquet'"),
])
def test_bad_input_exits_2_naming_it_and_writes_no_file(known, tmp_path, args, named):
    path = tmp_path / "out.csv"
    fmt = [] if "--format" in args else ["--format", "csv"]
    result = runner.invoke(app, [*args, *fmt, "-o", str(path), "--db", known.url])
    assert result.exit_code == 2, result.output
    assert named in " ".join(result.stderr.replace("│", " ").split())
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["results", EXPERIMENT], ["status", EXPERIMENT], ["list"]])
def test_parquet_needs_a_file(known, command):
    result = runner.invoke(app, [*command, "--format", "parquet", "--db", known.url])
    assert result.exit_code == 2
    assert "--format parquet writes a binary file: give one with -o FILE" in result.stderr
    assert result.stdout == ""


def test_o_into_a_missing_folder_or_with_a_table_is_refused(known, tmp_path):
    missing = runner.invoke(app, ["list", "--format", "csv", "-o", str(tmp_path / "no" / "out.csv"), "--db", known.url])
    assert missing.exit_code == 2 and "does not exist; create it first" in missing.stderr
    table = runner.invoke(app, ["list", "-o", str(tmp_path / "out.txt"), "--db", known.url])
    assert table.exit_code == 2 and "use it with --format csv, json or parquet" in table.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_write_that_fails_leaves_the_old_file_whole(known, tmp_path, monkeypatch):
    path = tmp_path / "trials.csv"
    path.write_text("the previous results\n")

    def fail(frame, path, **kwargs):
        with open(path, "w") as handle:
            handle.write("half a fi")  # what a crash mid-write leaves behind
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail)
    result = runner.invoke(app, ["results", EXPERIMENT, "--format", "parquet", "-o", str(path), "--db", known.url])
    assert result.exit_code != 0 and isinstance(result.exception, OSError)
    assert path.read_text() == "the previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.csv"]
