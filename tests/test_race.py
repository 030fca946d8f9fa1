"""The confirm race (`nas.search.race`), on synthetic outcomes with known effects: no training.

The race is a function of the results per (architecture, seed); here a `truth` function
plays the trials, either fed straight to `replay` or written as fake trial rows into a real
store for `nas.search.launch.run_race`, `nas status` and `nas export --rank`.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import numpy as np
import pytest
import yaml
from nas.db import Store
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from nas.cli import app
from nas.config.experiment import ConfirmSettings, ExperimentSpec, load_experiment
from nas.errors import ConfigError
from nas.models import parse_short_name
from nas.search.race import CONFIRM_SEED_BASE, decide, decision_line, replay
from nas.sequential import Looks
from tests.helpers import experiment_yaml

runner = CliRunner()
S = CONFIRM_SEED_BASE
RACE = {"repeats": 2, "until_separated": True, "max_repeats": 8}


def seed_noise(seed: int) -> float:
    """What a seed does to every architecture alike (data order, init): paired away."""
    return 0.01 * ((seed * 7919) % 11 - 5) / 5


def jitter(arch: str, seed: int, scale: float) -> float:
    """Each architecture's own seed noise, uniform in [-scale, scale], the same every run
    (a str seeds `random.Random` through SHA-512, whatever PYTHONHASHSEED)."""
    return scale * random.Random(f"{arch}/{seed}").uniform(-1.0, 1.0)


def play(truth, archs, settings, seconds=10.0):
    """Run the race to its end on `truth(arch, seed)`: (the race, the batches it asked for)."""
    accuracy: dict[str, dict[int, float]] = {}
    spent: dict[str, dict[int, float]] = {}
    batches = []
    while True:
        race = replay(accuracy, archs, settings, spent)
        if not race.to_run:
            return race, batches
        batches.append(race.to_run)
        for arch, seed in race.to_run:
            assert seed not in accuracy.get(arch, {}), f"{arch} seed {seed} asked for twice"
            accuracy.setdefault(arch, {})[seed] = truth(arch, seed)
            spent.setdefault(arch, {})[seed] = seconds


# ----------------------------------------------------------------------------- the race


def test_a_race_stops_as_soon_as_the_leader_is_separated():
    base = {"A": 0.90, "B": 0.88, "C": 0.86}
    race, batches = play(lambda a, s: base[a] + seed_noise(s) + jitter(a, s, 0.015), list(base),
                         ConfirmSettings(**RACE))
    assert race.stop == "separated" and race.remaining == ("A",)
    groups = race.groups()
    assert groups["A"].decision == "best"
    assert groups["B"].decision == groups["C"].decision == "worse"
    assert all(groups[h].p < 0.05 for h in "BC")
    # it took more than round 1 (2 seeds, df 1, cannot separate) and stopped before max_repeats
    assert 1 < len(batches) and len(race.rounds[-1].seeds) < 8
    assert race.rounds[-1].eliminated  # the round that separated it is the last one run


def test_architectures_within_seed_noise_keep_racing_until_max_repeats_and_end_tied():
    base = {"A": 0.900, "B": 0.900}
    race, batches = play(lambda a, s: base[a] + seed_noise(s) + jitter(a, s, 0.01), list(base),
                         ConfirmSettings(**RACE | {"max_repeats": 6}))
    assert race.stop == "max_repeats" and set(race.remaining) == {"A", "B"}
    assert len(batches) == 1 + (6 - 2)  # round 1, then one seed per round
    groups = race.groups()
    assert sorted(g.decision for g in groups.values()) == ["best", "not separated"]
    tied = next(g for g in groups.values() if g.decision == "not separated")
    assert tied.p >= 0.05 and tied.text() == (
        f"not separated (p={tied.p:.2g}; could detect >= {100 * tied.detectable:.1f} pts)")
    # the seeds' spread at 6 seeds: a gap of about 2-3 points is what this race could find
    assert 0.005 < tied.detectable < 0.05


def test_every_round_runs_the_same_seeds_for_every_remaining_architecture_seed_major():
    base = {"A": 0.90, "B": 0.899, "C": 0.80}  # C goes early, A and B race on
    race, batches = play(lambda a, s: base[a] + seed_noise(s) + jitter(a, s, 0.01), list(base),
                         ConfirmSettings(**RACE | {"max_repeats": 5}))
    assert batches[0] == ((A := "A", S), ("B", S), ("C", S), (A, S + 1), ("B", S + 1), ("C", S + 1))
    alive = {"A", "B", "C"}
    for number, batch in enumerate(batches[1:], start=2):
        alive -= set(race.rounds[number - 2].eliminated)
        assert {seed for _, seed in batch} == {S + number}  # one new seed, the next one
        assert {arch for arch, _ in batch} == alive  # every one still in the race runs it
    # C, 10 points behind, goes at the first look whose boundary a df-2 or df-3 t can reach
    assert "C" in race.rounds[2].eliminated and "C" not in race.rounds[1].eliminated and len(batches) == 4


def test_a_raw_p_below_005_does_not_eliminate_when_every_pair_is_counted():
    seeds = [S + i for i in range(4)]
    leader = [0.90, 0.92, 0.91, 0.93]
    # mean differences of about -0.5 pp, sd 0.29 pp: t about -3.5 and -3.9 with df 3
    b = [x - 0.0052 + e for x, e in zip(leader, [0.003, -0.003, 0.002, -0.002])]
    c = [x - 0.0057 + e for x, e in zip(leader, [-0.002, 0.003, -0.003, 0.002])]
    raw = [scipy_stats.ttest_rel(v, leader).pvalue for v in (b, c)]
    assert all(p < 0.05 for p in raw)  # each alone would be "significant"...
    accuracy = {name: dict(zip(seeds, values)) for name, values in (("L", leader), ("B", b), ("C", c))}
    decided = decide(1, seeds, ["L", "B", "C"], accuracy, Looks(arms=3, seeds=(4,)), final=True)
    # ...but not with the three pairs of a race of three tested together
    assert decided.leader == "L" and decided.eliminated == ()
    assert all(raw_p < decided.p[h] and decided.p[h] >= 0.05 for h, raw_p in zip("BC", raw))
    assert decided.boundary < min(raw)


def test_an_architecture_beaten_by_one_that_is_not_the_leader_is_worse():
    seeds = [S + i for i in range(5)]
    # L and M within noise of each other; W far below M on every seed, less clearly below L
    values = {"L": [0.90, 0.93, 0.89, 0.94, 0.90], "M": [0.895, 0.91, 0.90, 0.92, 0.905],
              "W": [0.80, 0.815, 0.806, 0.82, 0.81]}
    accuracy = {h: dict(zip(seeds, v)) for h, v in values.items()}
    decided = decide(1, seeds, list(values), accuracy, Looks(arms=3, seeds=(5,)), final=True)
    pairs = {other: scipy_stats.ttest_rel(values["W"], values[other]).pvalue for other in "LM"}
    assert pairs["M"] < pairs["L"]  # M, not the leader, is the clearer winner over W
    assert decided.leader == "L" and decided.eliminated == ("W",)


def test_the_race_stops_at_max_seconds_of_confirm_training_after_a_whole_round():
    base = {"A": 0.90, "B": 0.90, "C": 0.90}
    # round 1: 3 x 2 runs x 10 s = 60 s < 75: round 2 runs (90 s), then no round 3
    race, batches = play(lambda a, s: base[a] + seed_noise(s) + jitter(a, s, 0.01), list(base),
                         ConfirmSettings(**RACE | {"max_seconds": 75}))
    assert race.stop == "max_seconds" and len(batches) == 2
    assert len(race.rounds[-1].seeds) == 3


def test_without_until_separated_it_is_one_round_of_repeats_seeds():
    base = {"A": 0.90, "B": 0.80}
    race, batches = play(lambda a, s: base[a] + seed_noise(s) + jitter(a, s, 0.01), list(base),
                         ConfirmSettings(top_k=2, repeats=5))
    assert race.stop == "single round" and len(batches) == 1 and len(batches[0]) == 10


def test_a_run_without_an_accuracy_is_done_and_left_out_of_the_pairs():
    accuracy = {"A": {S: 0.9, S + 1: 0.91, S + 2: 0.92}, "B": {S: 0.8, S + 1: None, S + 2: 0.83}}
    race = replay(accuracy, ["A", "B"], ConfirmSettings(repeats=3))
    assert race.to_run == () and race.rounds[0].paired == (S, S + 2)


# ----------------------------------------------------------------------------- groups, by hand

# 3 seeds, every pair paired: A - B: d = (0.01, 0, 0.01), t = 2; A - C: d = (0.10, 0.09, 0.09),
# t = 28; B - C: d = (0.09, 0.09, 0.08), t = 26. With df = 2 the two-sided p of t is
# 1 - |t| / sqrt(t^2 + 2): B 0.18350 (its smallest: against A), C 0.0012731 (against A).
# One look at 3 seeds over the 3 pairs: the verdict's p is the chance, with no differences, that
# the smallest of the 3 pair p's is at or below the observed one: between the raw p and 3 times it
# (Bonferroni), and found by an independent simulation below.
HAND = {"A": [0.90, 0.92, 0.94], "B": [0.89, 0.92, 0.93], "C": [0.80, 0.83, 0.85]}
P_B = 1 - 2 / math.sqrt(6)
P_C = 1 - 28 / math.sqrt(786)


def _smallest_of_three_pairs(p: float, draws: int = 40_000) -> float:
    """P(min over the 3 pairs of 3 N(0,1) arms on 3 seeds of the paired-t p <= p), by numpy
    and scipy's ttest_rel (not nas.sequential)."""
    noise = np.random.default_rng(2024).standard_normal((draws, 3, 3))
    ps = [scipy_stats.ttest_rel(noise[:, i], noise[:, j], axis=1).pvalue for i, j in ((0, 1), (0, 2), (1, 2))]
    return float((np.min(ps, axis=0) <= p).mean())


def test_groups_on_hand_worked_data():
    accuracy = {h: {S + i: v for i, v in enumerate(values)} for h, values in HAND.items()}
    race = replay(accuracy, list(HAND), ConfirmSettings(repeats=3))
    groups = race.groups()
    assert groups["A"].decision == "best" and math.isnan(groups["A"].p)
    # the Bonferroni bounds, up to the null sample's error (100,000 draws: +-0.0004 at 0.004)
    assert groups["B"].decision == "not separated" and P_B < groups["B"].p < 3 * P_B
    assert groups["C"].decision == "worse" and P_C < groups["C"].p < 3 * P_C + 0.0004
    assert groups["B"].p == pytest.approx(_smallest_of_three_pairs(P_B), abs=0.006)
    assert groups["C"].p == pytest.approx(_smallest_of_three_pairs(P_C), abs=0.0015)
    b, c = groups["B"], groups["C"]
    assert [groups[h].text() for h in "ABC"] == [
        "best", f"not separated (p={b.p:.2g}; could detect >= {100 * b.detectable:.1f} pts)", f"worse (p={c.p:.2g})"]
    assert decision_line(race, {"A": "a", "B": "b", "C": "c"}) == (
        f"confirm decision after 3 seeds (one round: until_separated is off): best a; not separated: b "
        f"(p={b.p:.2g}; could detect >= {100 * b.detectable:.1f} pts); worse: c (p={c.p:.2g})")


def test_no_groups_before_round_1_is_complete():
    race = replay({"A": {S: 0.9}}, ["A", "B"], ConfirmSettings(repeats=2))
    assert race.groups() == {} and race.to_run == (("B", S), ("A", S + 1), ("B", S + 1))


# ----------------------------------------------------------------------------- the YAML


def _bad(tmp_path, **confirm):
    return experiment_yaml(tmp_path / "bad.yaml", confirm=confirm)


@pytest.mark.parametrize(("confirm", "key", "words"), [
    ({"repeats": 3, "until_separated": True, "max_repeats": 2}, "confirm.max_repeats", "at least 3"),
    ({"repeats": 1, "until_separated": True, "max_repeats": 2}, "confirm.max_repeats", "at least 3"),
    ({"max_seconds": 0}, "confirm.max_seconds", "positive"),
    ({"until_separated": "yes"}, "confirm.until_separated", "true or false"),
])
def test_invalid_race_settings_name_their_key(tmp_path, confirm, key, words):
    with pytest.raises(ConfigError, match=rf"bad.yaml: {key}: .*{words}"):
        load_experiment(_bad(tmp_path, **confirm))


def test_nas_launch_exits_2_on_a_max_repeats_below_repeats(tmp_path):
    space = _bad(tmp_path, repeats=3, until_separated=True, max_repeats=2)
    result = runner.invoke(app, ["launch", str(space), "--db", str(tmp_path / "nas.db")])
    assert result.exit_code == 2 and "confirm.max_repeats" in result.output
    assert not (tmp_path / "nas.db").exists()


def test_a_stored_config_from_before_the_race_rebuilds_as_one_round(tmp_path):
    spec = load_experiment(experiment_yaml(tmp_path / "old.yaml", confirm={"top_k": 2, "repeats": 10}))
    config = json.loads(json.dumps(spec.resolved()))
    config["confirm"] = {"top_k": 2, "repeats": 10}  # as stored before the race
    rebuilt = ExperimentSpec.from_resolved(config, source="experiment 'tiny' (stored)")
    assert rebuilt.confirm == ConfirmSettings(top_k=2, repeats=10, until_separated=False)


def test_the_cpu_budget_of_cifar_fast_races():
    confirm = load_experiment("search_spaces/cifar_fast.yaml", "cpu").confirm
    assert confirm.until_separated and confirm.repeats >= 2 and confirm.max_repeats > confirm.repeats


# ----------------------------------------------------------------------------- through a store


def _upsert(store: Store, name: str, params: int):
    arch = parse_short_name(name)
    store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), params, 1_000_000)
    return arch


def _fake_trial(store, exp_id, arch, seed, phase, acc, seconds=10.0):
    trial_id = store.start_trial(exp_id, arch.hash, seed, phase, epochs_planned=1, recipe_json="{}",
                                 device="cpu", code_version="test")
    store.record_epoch(trial_id, 0, train_loss=1.0, train_acc=acc, val_acc=acc, test_acc=acc,
                       epoch_seconds=seconds, cumulative_seconds=seconds)
    store.finish_trial(trial_id, "completed", train_seconds=seconds)
    return trial_id


def _experiment(tmp_path, store, confirm):
    spec = load_experiment(experiment_yaml(
        tmp_path / "tiny.yaml", confirm=confirm,
        search={"objectives": [{"metric": "val_acc", "direction": "maximize"},
                               {"metric": "params", "direction": "minimize"}]}))
    exp_id = store.ensure_experiment("tiny", config_json=json.dumps(spec.resolved(), sort_keys=True),
                                     space_yaml=spec.source_text, code_version="test")
    return spec, exp_id


@pytest.fixture
def decided_store(tmp_path):
    """Experiment "tiny": HAND confirmed on 3 seeds; the worse one (C) is the cheapest, so the
    Pareto front alone would rank it above the tied one."""
    db = tmp_path / "nas.db"
    with Store.open(str(db)) as store:
        _, exp_id = _experiment(tmp_path, store, {"top_k": 3, "repeats": 3})
        archs = {"A": _upsert(store, "R:L1+L3 w=0.125", 200_000), "B": _upsert(store, "R:L1 w=0.125", 300_000),
                 "C": _upsert(store, "R:L3 w=0.125", 100_000)}
        for key, values in HAND.items():
            _fake_trial(store, exp_id, archs[key], 0, "search", values[0])
            for i, acc in enumerate(values):
                _fake_trial(store, exp_id, archs[key], S + i, "confirm", acc)
    return db, archs


def test_nas_status_shows_the_decision_column(decided_store):
    db, archs = decided_store
    result = runner.invoke(app, ["status", "tiny", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "decision" in result.output
    lines = {key: next(line for line in result.output.splitlines() if arch.hash in line)
             for key, arch in archs.items()}
    groups = replay({h: {S + i: v for i, v in enumerate(values)} for h, values in HAND.items()}, list(HAND),
                    ConfirmSettings(repeats=3)).groups()
    assert "best" in lines["A"] and groups["B"].text() in lines["B"] and groups["C"].text() in lines["C"]
    # how sure each Pareto rank is: A (most accurate) and C (cheapest) are on the front (numbered 1)
    # in every seed bootstrap; B is never more accurate than A on any seed and costs more: the
    # second front, 2, never the first
    assert " 1 (1.00)" in lines["A"] and " 1 (1.00)" in lines["C"] and " 2 (0.00)" in lines["B"]
    assert "front" not in lines["A"] + lines["B"] + lines["C"]
    order = [result.output.index(archs[key].hash) for key in "ABC"]
    assert order == sorted(order)  # best, tied, worse


def test_export_rank_counts_best_then_tied_then_worse(decided_store, tmp_path):
    db, archs = decided_store
    for rank, key in ((1, "A"), (2, "B"), (3, "C")):
        out = tmp_path / f"rank{rank}"
        result = runner.invoke(app, ["export", "tiny", "--rank", str(rank), "--out", str(out), "--db", str(db),
                                     "--format", "yaml"])
        assert result.exit_code == 0, result.output
        assert archs[key].hash in result.output
        assert yaml.safe_load((out / "config.yaml").read_text())["arch"] is not None


def test_run_race_continues_a_stopped_race_from_the_store_and_reruns_nothing(tmp_path):
    from nas.search.launch import run_race

    base = {"A": 0.90, "B": 0.88, "C": 0.86}
    truth = {}  # (short name, seed) -> accuracy
    db = tmp_path / "nas.db"
    with Store.open(str(db)) as store:
        spec, exp_id = _experiment(tmp_path, store, RACE | {"top_k": 3})
        top = [_upsert(store, name, 100_000) for name in ("R:L1+L3 w=0.125", "R:L1 w=0.125", "R:L3 w=0.125")]
        key = {arch.hash: k for arch, k in zip(top, "ABC")}
        ran: list[tuple[str, int]] = []

        def run(plans, stop_after=None):
            for i, plan in enumerate(plans):
                if stop_after is not None and i == stop_after:
                    raise KeyboardInterrupt  # the driver killed mid-round
                k = key[plan.arch.hash]
                acc = base[k] + seed_noise(plan.seed) + jitter(k, plan.seed, 0.015)
                truth[(k, plan.seed)] = acc
                ran.append((plan.arch.hash, plan.seed))
                _fake_trial(store, exp_id, plan.arch, plan.seed, "confirm", acc)

        calls = []

        def stopping(plans):
            calls.append(len(plans))
            run(plans, stop_after=1 if len(calls) == 2 else None)  # killed in round 2, after one run

        with pytest.raises(KeyboardInterrupt):
            run_race(top, spec, store, exp_id, stopping, log=lambda line: None)
        assert len(ran) == 6 + 1
        lines = []
        race = run_race(top, spec, store, exp_id, run, log=lines.append)
    assert Counter(ran).most_common(1)[0][1] == 1  # no (arch, seed) ran twice
    assert lines[0].startswith("confirm round 2: 3 architectures x seed 10002, 2 of 3 runs left (leader R:L1+L3")
    # the same race as one uninterrupted run of the same outcomes
    names = ["A", "B", "C"]
    expected, _ = play(lambda a, s: base[a] + seed_noise(s) + jitter(a, s, 0.015), names, spec.confirm)
    assert [key[h] for h in race.remaining] == list(expected.remaining)
    assert {key[h]: g.decision for h, g in race.groups().items()} == {h: g.decision for h, g in
                                                                     expected.groups().items()}
    assert lines[-1].startswith("confirm decision after") and "best R:L1+L3 w=0.125" in lines[-1]
    eliminated = [line for line in lines if "eliminated:" in line]
    assert all("(p=" in line for line in eliminated)


def test_run_race_stops_instead_of_rerunning_runs_that_ended_without_a_result(tmp_path):
    from nas.search.launch import run_race

    with Store.open(str(tmp_path / "nas.db")) as store:
        spec, exp_id = _experiment(tmp_path, store, RACE | {"top_k": 2})
        top = [_upsert(store, name, 100_000) for name in ("R:L1 w=0.125", "R:L3 w=0.125")]
        calls, lines = [], []
        run_race(top, spec, store, exp_id, lambda plans: calls.append(len(plans)), log=lines.append)
    assert calls == [4] and "confirm stopped in round 1: 4 run(s) ended without a result" in lines[1]


def test_a_boundary_no_difference_can_reach_reads_as_no_detectable_difference():
    from nas.search.race import TIED, Group
    from nas.sequential import detectable_difference

    # an early look of a large race under the union bound: p must be below ~1e-33
    assert detectable_difference(0.01, 3, 5.9e-33) == math.inf
    group = Group(TIED, 0.4, 1, spread=0.01, pairs=3, boundary=5.9e-33)
    assert group.detectable == math.inf and group.text() == "not separated (p=0.4)"
