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
