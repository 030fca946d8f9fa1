"""Per-image correctness: stored packed with every evaluation (migration 0009), and the
difference of two architectures with its image-sampling noise (`nas.stats.image_difference`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from alembic import command
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as scipy_stats
from sqlalchemy import text
from typer.testing import CliRunner

import nas.db.engine as nas_db_engine
from nas.cli import app
from nas.db import Store, make_engine
from nas.stats import image_difference, pack_correct, unpack_correct
from tests.cifar_fixture import write_cifar
from tests.old_store import OLD_TRIAL_ID, write_old_store

runner = CliRunner()


@given(st.lists(st.booleans(), max_size=100))
def test_packing_round_trips_any_pattern_in_an_eighth_of_the_bytes(bits):
    packed = pack_correct(bits)
    assert len(packed) == (len(bits) + 7) // 8
    assert unpack_correct(packed, len(bits)).tolist() == bits


def test_image_i_is_bit_i_mod_8_of_byte_i_div_8():
    assert pack_correct([True, False, False, False, False, False, False, False, False, True]) == bytes([1, 2])
    with pytest.raises(ValueError, match="cannot hold the correctness of 20 images"):
        unpack_correct(bytes(2), 20)


# ----------------------------------------------------------------------------- by hand

# x = correct_A - correct_B, 2 seeds x 2 images: seed 0 (1, 0), seed 1 (1, -1). D = 1/4.
# Seed means 0.5, 0; image means 1, -0.5. MS_seeds = 2 ((0.25)^2 + (0.25)^2) / 1 = 0.25;
# MS_images = 2 ((0.75)^2 + (0.75)^2) / 1 = 2.25; residuals +-0.25, MS_residual = 0.25 / 1.
# Var(D) = (0.25 + 2.25 - 0.25) / 4 = 0.5625: se 0.75; the seeds alone 0.25 / 4: se 0.25.
# Satterthwaite: 0.5625^2 / (0.0625^2 + 0.5625^2 + 0.0625^2) = 0.9756 df.
A = [np.array([True, True]), np.array([True, False])]
B = [np.array([False, True]), np.array([False, True])]


def test_a_difference_gets_its_image_noise_on_a_hand_worked_example():
    d = image_difference(A, B)
    assert (d.seeds, d.images, d.mean) == (2, 2, 0.25)
    assert d.seed_se == pytest.approx(0.25) and d.se == pytest.approx(0.75)
    assert d.df == pytest.approx(0.5625 ** 2 / (2 * 0.0625 ** 2 + 0.5625 ** 2))
    assert d.image_share == pytest.approx(1 - 0.0625 / 0.5625)
    seeds_half = scipy_stats.t.ppf(0.975, 1) * 0.25  # the paired t over the 2 seeds alone
    assert d.seed_interval() == pytest.approx((0.25 - seeds_half, 0.25 + seeds_half))
    half = scipy_stats.t.ppf(0.975, d.df) * 0.75  # under one df: no claim at all
    assert (d.ci_low, d.ci_high) == pytest.approx((0.25 - half, 0.25 + half)) and half > 9


def test_one_seed_is_the_paired_proportions_of_one_run_each():
    # 10 images: A right and B wrong on 3, the reverse on 1, the rest agree
    a = np.array([1, 1, 1, 0, 1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([0, 0, 0, 1, 1, 1, 0, 0, 1, 0], dtype=bool)
    d = image_difference([a], [b])
    x = a.astype(float) - b.astype(float)
    assert d.mean == pytest.approx(0.2) and math.isnan(d.seed_se)
    assert d.se == pytest.approx(x.std(ddof=1) / math.sqrt(10)) and d.df == pytest.approx(9)


def _image_chances(rng, images, mu=0.02):
    """Per-image chances of A and B from a population whose mean difference is about mu:
    images are mostly easy or hard (Beta(0.5, 0.5)) and differ in which architecture they favour."""
    base = rng.beta(0.5, 0.5, images)
    lift = rng.normal(mu, 0.3, images)
    return np.clip(base + lift / 2, 0, 1), np.clip(base - lift / 2, 0, 1)


def _runs(rng, p_a, p_b, seeds):
    """Each seed's results: Bernoulli per image, with a seed effect shared by its images."""
    a, b = [], []
    for _ in range(seeds):
        shift = rng.normal(0, 0.01)  # what a seed does to A against B on every image
        a.append(rng.random(len(p_a)) < np.clip(p_a + shift, 0, 1))
        b.append(rng.random(len(p_b)) < p_b)
    return a, b


def test_the_interval_covers_the_difference_on_new_images_and_the_seeds_alone_do_not():
    rng = np.random.default_rng(7)
    p_a, p_b = _image_chances(rng, 2_000_000)
    truth = float(np.mean(p_a - p_b))  # the population's difference (seed effects average out)
    covered = seeds_only = 0
    shares = []
    replicates = 600
    for _ in range(replicates):
        a, b = _runs(rng, *_image_chances(rng, 1_000), seeds=5)  # a fresh val set each time
        d = image_difference(a, b)
        covered += d.ci_low <= truth <= d.ci_high
        half = 2.776 * d.seed_se  # t(0.975, 4): the paired t over seeds
        seeds_only += d.mean - half <= truth <= d.mean + half
        shares.append(d.image_share)
    # 95% within Monte Carlo error (s.e. 0.009 at 600 replicates; 0.9445 on 2,000); the
    # seed-only interval misses the image sample's noise (about half the variance here)
    assert covered / replicates >= 0.925
    assert seeds_only / replicates < 0.91 and np.mean(shares) > 0.3


# ----------------------------------------------------------------------------- stored


def test_nas_train_stores_which_val_and_test_images_each_epoch_got_right(tmp_path):
    data_root = write_cifar(tmp_path / "data", n_train_per_class=20, n_test_per_class=5)
    db = tmp_path / "nas.db"
    result = runner.invoke(app, ["train", "--arch", "R:L1", "--width", "0.125", "--epochs", "2", "--batch-size",
                                 "32", "--val-size", "50", "--db", str(db), "--data-root", str(data_root)])
    assert result.exit_code == 0, result.output
    with Store.open(str(db), read_only=True) as store:
        (trial,) = store.trials()
        val = store.correct([trial.id], "val")
        test = store.correct([trial.id], "test")
    bits, images = val[trial.id]
    assert images == 50 and len(bits) == 7
    assert unpack_correct(bits, images).mean() == pytest.approx(trial.final_val_acc)
    bits, images = test[trial.id]
    assert images == 50 and unpack_correct(bits, images).mean() == pytest.approx(trial.final_test_acc)


def test_the_migration_adds_the_bitsets_as_nulls_and_round_trips(tmp_path):
    url, _ = write_old_store(tmp_path, "0008")  # before per-image correctness
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO nas_epoch_results (trial_id, epoch, train_loss, train_acc, val_acc, test_acc, epoch_seconds, "
            f"cumulative_seconds, val_images) VALUES ({OLD_TRIAL_ID}, 0, 1.5, 0.4, 0.45, 0.44, 2.0, 2.0, 20)"))
    engine.dispose()
    bits = pack_correct([i % 3 == 0 for i in range(20)])
    with Store.open(url) as store:  # opening upgrades it
        assert store.correct([OLD_TRIAL_ID]) == {}  # the old epoch has none
        [epoch] = store.epochs(OLD_TRIAL_ID)
        assert (epoch.val_acc, epoch.val_images) == (0.45, 20)
        store.record_epoch(OLD_TRIAL_ID, 1, train_loss=1.2, train_acc=0.5, val_acc=0.35, test_acc=None,
                           epoch_seconds=2.0, cumulative_seconds=4.0, val_images=20, val_correct=bits)
        assert store.correct([OLD_TRIAL_ID]) == {OLD_TRIAL_ID: (bits, 20)}
    # down to 0008 and up again: the columns go and come back, the rows stay
    engine = make_engine(url)
    config = nas_db_engine.alembic_config()
    with engine.connect() as connection:
        # as nas's own upgrade: SQLite rebuilds a table to drop a column (0010 rebuilds nas_trials),
        # and with foreign keys on, dropping the old one would cascade to its epochs
        connection.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")  # outside a transaction
        with connection.begin():
            config.attributes["connection"] = connection
            command.downgrade(config, "0008")
        columns = {row[1] for row in connection.exec_driver_sql("PRAGMA table_info(nas_epoch_results)")}
        rows = connection.exec_driver_sql("SELECT count(*) FROM nas_epoch_results").scalar()
    engine.dispose()
    assert "val_correct" not in columns and rows == 2
    with Store.open(url) as store:
        assert store.correct([OLD_TRIAL_ID]) == {} and len(store.epochs(OLD_TRIAL_ID)) == 2


def test_nas_status_shows_each_confirmed_architecture_against_the_best_on_new_images(tmp_path):
    import json

    from nas.config.experiment import load_experiment
    from nas.models import parse_short_name
    from tests.helpers import experiment_yaml

    spec = load_experiment(experiment_yaml(tmp_path / "tiny.yaml", confirm={"top_k": 2, "repeats": 3}))
    rng = np.random.default_rng(3)
    chances = {"R:L1 w=0.125": 0.7, "R:L3 w=0.125": 0.6}
    bits: dict[str, list[np.ndarray]] = {name: [] for name in chances}
    with Store.open(str(tmp_path / "nas.db")) as store:
        exp_id = store.ensure_experiment("tiny", config_json=json.dumps(spec.resolved(), sort_keys=True),
                                         space_yaml=spec.source_text, code_version="test")
        for name, chance in chances.items():
            arch = parse_short_name(name)
            store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), 1000, 1_000_000)
            for seed in (10_000, 10_001, 10_002):
                right = rng.random(400) < chance
                bits[name].append(right)
                trial_id = store.start_trial(exp_id, arch.hash, seed, "confirm", epochs_planned=1, recipe_json="{}",
                                             device="cpu", code_version="test")
                store.record_epoch(trial_id, 0, train_loss=1.0, train_acc=0.5, val_acc=float(right.mean()),
                                   test_acc=None, epoch_seconds=1.0, cumulative_seconds=1.0, val_images=400,
                                   val_correct=pack_correct(right))
                store.finish_trial(trial_id, "completed", train_seconds=1.0)
    result = runner.invoke(app, ["status", "tiny", "--db", str(tmp_path / "nas.db")], terminal_width=200)
    assert result.exit_code == 0, result.output
    d = image_difference(bits["R:L3 w=0.125"], bits["R:L1 w=0.125"])
    assert "against the best (R:L1 w=0.125), generalised to new images" in result.output
    line = next(line for line in result.output.splitlines() if "R:L3 w=0.125" in line and "[" in line
                and f"{d.ci_low * 100:+.2f}" in line)
    assert f"{d.mean * 100:+.2f}" in line and f"{d.ci_high * 100:+.2f}" in line and "400" in line
