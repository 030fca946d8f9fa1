"""The recorded decision benchmark's file (`nas.trials.recorded`): written from a store of a
grid study, read back with every value in place."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nas.config.experiment import load_experiment
from nas.db import Store
from nas.models import parse_short_name
from nas.stats import pack_correct, unpack_correct
from nas.trials.recorded import Recording, from_store
from tests.helpers import experiment_yaml


@pytest.fixture
def study(tmp_path):
    """A grid study of 2 architectures x 3 seeds, 2 epochs, 20 val and 12 test images; one run
    (R:L3, seed 2) failed."""
    spec = load_experiment(experiment_yaml(tmp_path / "g.yaml", name="g", recipe={"epochs": 2}))
    rng = np.random.default_rng(1)
    truth = {}
    with Store.open(str(tmp_path / "nas.db")) as store:
        exp_id = store.ensure_experiment("g", config_json=json.dumps(spec.resolved(), sort_keys=True),
                                         space_yaml=spec.source_text, code_version="test")
        for name in ("R:L1 w=0.125", "R:L3 w=0.125"):
            arch = parse_short_name(name)
            store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), 1000, 1_000_000)
            for seed in (0, 1, 2):
                trial_id = store.start_trial(exp_id, arch.hash, seed, "search", epochs_planned=2, recipe_json="{}",
                                             device="cpu", code_version="test")
                failed = name.startswith("R:L3") and seed == 2
                for epoch in range(1 if failed else 2):
                    val, test = rng.random(20) < 0.6, rng.random(12) < 0.5
                    store.record_epoch(trial_id, epoch, train_loss=1.0, train_acc=0.5, val_acc=float(val.mean()),
                                       test_acc=float(test.mean()), epoch_seconds=3.0, cumulative_seconds=3.0 * (epoch + 1),
                                       val_images=20, test_images=12, val_correct=pack_correct(val),
                                       test_correct=pack_correct(test))
                    truth[(name, seed, epoch)] = (val, test)
                store.finish_trial(trial_id, "failed" if failed else "completed", train_seconds=3.0)
    return tmp_path / "nas.db", truth


def test_a_recording_round_trips_every_value_of_the_completed_runs(study, tmp_path):
    db, truth = study
    with Store.open(str(db), read_only=True) as store:
        recording = from_store(store, "g", {"command": "test"})
    path = tmp_path / "rec.npz"
    recording.save(path)
    loaded = Recording.load(path)
    assert loaded.short_names == ("R:L1 w=0.125", "R:L3 w=0.125") and loaded.seeds == (0, 1, 2)
    assert (loaded.val_images, loaded.test_images) == (20, 12)
    assert loaded.meta["command"] == "test" and loaded.meta["experiment"] == "g"
    assert loaded.complete.tolist() == [[True, True, True], [True, True, False]]
    for (name, seed, epoch), (val, test) in truth.items():
        i, j = loaded.short_names.index(name), loaded.seeds.index(seed)
        if not loaded.complete[i, j]:
            continue  # the failed run is not a completed trial: nan, no bits
        assert loaded.val_acc[i, j, epoch] == pytest.approx(val.mean())
        assert loaded.test_acc[i, j, epoch] == pytest.approx(test.mean())
        assert loaded.seconds[i, j, epoch] == 3.0 * (epoch + 1)
        assert (loaded.train_loss[i, j, epoch], loaded.train_acc[i, j, epoch]) == (1.0, 0.5)
        if epoch == 1:
            assert unpack_correct(loaded.val_correct[i, j].tobytes(), 20).tolist() == val.tolist()
            assert unpack_correct(loaded.test_correct[i, j].tobytes(), 12).tolist() == test.tolist()
    assert math.isnan(loaded.val_acc[1, 2, 0]) and not loaded.val_correct[1, 2].any()


def test_a_recording_of_another_format_is_refused_with_the_command_to_record_it(study, tmp_path):
    db, _ = study
    with Store.open(str(db), read_only=True) as store:
        from_store(store, "g").save(tmp_path / "rec.npz")
    data = dict(np.load(tmp_path / "rec.npz"))
    data["format"] = np.array(99)
    np.savez(tmp_path / "old.npz", **data)
    with pytest.raises(ValueError, match="record it again"):
        Recording.load(tmp_path / "old.npz")
