"""`nas train` and the CLI's help and error handling."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from nas.cli import app
from nas.db import Store
from nas.models import ArchConfig, build_model, count_flops, count_params
from tests.cifar_fixture import write_cifar

runner = CliRunner()
TINY = ["--width", "0.125", "--epochs", "2", "--batch-size", "32", "--val-size", "50"]


@pytest.fixture
def data_root(tmp_path):
    return write_cifar(tmp_path / "data", n_train_per_class=20, n_test_per_class=5)


def _train(args, db, data_root):
    return runner.invoke(app, ["train", *args, "--db", str(db), "--data-root", str(data_root)])


def test_train_records_the_trial_its_epochs_and_the_architecture(tmp_path, data_root):
    db = tmp_path / "nas.db"
    result = _train(["--arch", "R:L1+L3", *TINY, "--seed", "3"], db, data_root)
    assert result.exit_code == 0, result.output
    assert "R:L1+L3 w=0.125" in result.output and "test accuracy" in result.output
    assert "(SE, 50 images)" in result.output  # the summary's accuracies carry their binomial SE

    arch = ArchConfig.from_dict({"width": 0.125, "L1": {"residual": 1}, "L3": {"residual": 1}})
    with Store.open(str(db), read_only=True) as store:
        (trial,) = store.trials()
        assert (trial.arch_hash, trial.seed, str(trial.phase), str(trial.status)) == (arch.hash, 3, "train", "completed")
        epochs = store.epochs(trial.id)
        assert [e.epoch for e in epochs] == [0, 1]
        assert trial.final_test_acc is not None and trial.train_seconds > 0 and trial.device.startswith("cpu")
        # every accuracy with the images it was measured on: 50 val, and the fixture's 50 test
        # images after the last epoch only (test is not measured before it)
        assert [(e.val_images, e.test_images) for e in epochs] == [(50, None), (50, 50)]
        assert (trial.final_val_images, trial.final_test_images) == (50, 50)
        stored = store.get_architecture(arch.hash)
        model = build_model(arch)
        assert (stored.params, stored.flops) == (count_params(model), count_flops(model))
        assert ArchConfig.from_json(stored.config_json) == arch
        assert json.loads(trial.recipe_json)["recipe"]["epochs"] == 2


def test_train_reads_an_exported_style_config_file_with_recipe_and_dataset(tmp_path, data_root):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "arch": {"width": 0.125, "L2": {"extra": 1}},
        "recipe": {"epochs": 1, "batch_size": 32},
        "dataset": {"val_size": 50},
    }))
    db = tmp_path / "nas.db"
    result = _train(["--arch", str(config)], db, data_root)
    assert result.exit_code == 0, result.output
    with Store.open(str(db), read_only=True) as store:
        (trial,) = store.trials()
        assert trial.arch_hash == ArchConfig.from_dict({"width": 0.125, "L2": {"extra": 1}}).hash
        assert trial.epochs_done == 1


@pytest.mark.parametrize(
    ("arch", "needle"),
    [
        ('{"L4": {"residual": 1}}', "--arch.L4: unknown key"),
        ('{"L1": {"residual": 99}}', "residual must be between 0 and 8"),
        ("R:L9", "stages are L1, L2, L3"),
        ("{not json", "not valid JSON"),
        ("missing.yaml", "no such file"),
    ],
)
def test_a_bad_architecture_exits_2_names_the_problem_and_writes_nothing(tmp_path, data_root, arch, needle):
    db = tmp_path / "nas.db"
    result = _train(["--arch", arch, "--epochs", "1"], db, data_root)
    assert result.exit_code == 2
    assert needle in result.output
    assert not db.exists()


def test_a_bad_recipe_value_exits_2(tmp_path, data_root):
    db = tmp_path / "nas.db"
    result = _train(["--arch", "R:L1", "--epochs", "0"], db, data_root)
    assert result.exit_code == 2 and "epochs must be at least 1" in result.output
    assert not db.exists()


def test_missing_data_offline_exits_2_saying_where_to_put_the_archive(tmp_path, monkeypatch):
    monkeypatch.setattr("nas.data.archive.CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    empty, db = tmp_path / "empty", tmp_path / "nas.db"
    empty.mkdir()
    result = runner.invoke(app, ["train", "--arch", "R:L1", "--db", str(db), "--data-root", str(empty)])
    assert result.exit_code == 2
    assert "cifar-10-python.tar.gz" in result.output and str(empty) in result.output
    assert not db.exists()


@pytest.mark.parametrize("command", [[], ["train"], ["launch"], ["status"], ["list"], ["dashboard"]])
def test_every_command_has_help_that_reads_like_documentation(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output and len(result.output) > 300


# ---- hostile input: one line, exit 2, nothing written --------------------------------------


def _one_line_error(result) -> str:
    """The single stderr line of a refused command (no traceback, no wrapped message)."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _alias_bomb(path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path.write_text("\n".join(lines) + "\narch: {L1: *a8}\n")
    return path


@pytest.mark.parametrize(
    ("make_arch", "needle"),
    [
        (lambda tmp: "a" * 5000, "cannot read"),  # no file can be called that
        (lambda tmp: "x" * 5000 + ".yaml", "no such file"),
        (lambda tmp: (tmp / "arch.bin").write_bytes(bytes(range(256)) * 8) and str(tmp / "arch.bin"), "not UTF-8"),
        (lambda tmp: (tmp / "deep.yaml").write_text("arch: " + "[" * 30_000 + "]" * 30_000) and str(tmp / "deep.yaml"),
         "nested more than"),
        (lambda tmp: str(_alias_bomb(tmp / "bomb.yaml")), "expands to more than"),
    ],
    ids=["long-string", "long-file-name", "binary-file", "deep-file", "alias-bomb"],
)
def test_a_hostile_arch_is_one_line_exit_2_and_writes_nothing(tmp_path, data_root, make_arch, needle):
    db = tmp_path / "nas.db"
    line = _one_line_error(_train(["--arch", make_arch(tmp_path)], db, data_root))
    assert needle in line and len(line) < 400
    assert not db.exists()


@pytest.mark.parametrize("device", ["tpu", "cuda:99", "not a device"])
def test_an_unknown_device_is_refused_before_training(tmp_path, data_root, device):
    db = tmp_path / "nas.db"
    line = _one_line_error(_train(["--arch", "R:L1", "--device", device, *TINY], db, data_root))
    assert "--device" in line and "cpu" in line
    assert not db.exists()


@pytest.mark.parametrize("command", [["status", "x"], ["list"], ["export", "x", "--rank", "1"]])
def test_a_file_that_is_no_database_is_one_line_and_left_unchanged(tmp_path, command):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, just text\n" * 200)
    before = junk.read_bytes()
    out = ["--out", str(tmp_path / "out")] if command[0] == "export" else []
    line = _one_line_error(runner.invoke(app, [*command, "--db", str(junk), *out]))
    assert "file is not a database" in line and str(junk) in line
    assert junk.read_bytes() == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("db", ["missing.db", "junk.db", "ftp://host/nas", "postgresql://u:secret@h:port/db"])
def test_dashboard_refuses_a_store_it_cannot_read_before_serving(tmp_path, monkeypatch, db):
    (tmp_path / "junk.db").write_text("not a database")
    monkeypatch.chdir(tmp_path)
    served = []
    monkeypatch.setattr("nas.dashboard.serve.serve", lambda *a, **k: served.append(a) or 0)
    line = _one_line_error(runner.invoke(app, ["dashboard", "--db", db]))
    assert served == [] and "secret" not in line
    assert not (tmp_path / "missing.db").exists()


def test_a_long_error_is_one_line_however_wide_the_console(tmp_path):
    deep = tmp_path / ("d" * 120) / ("e" * 120)
    result = runner.invoke(app, ["status", "--db", str(deep / "nas.db")])
    line = _one_line_error(result)
    assert len(line) > 200 and str(deep / "nas.db") in line
