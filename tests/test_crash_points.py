"""What survives a kill: a driver SIGKILLed at random moments (searching with its pilot and
pruner, racing, writing behind) and run again each time ends with every planned (architecture,
seed) finished once on its own seed, its Optuna trial beside its row, the race paired; and at
every kill, no Optuna trial is told whose row is not finished, nor the reverse (a trial's end
is one transaction). On SQLite, and on PostgreSQL where a server is configured."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.db import Store
from nas.db.schema import Phase, TrialStatus
from nas.search.race import CONFIRM_SEED_BASE

CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[1]
KILLS = 5  # kills per test at least, each at a random moment of the run
STATES = {TrialState.COMPLETE: TrialStatus.COMPLETED, TrialState.PRUNED: TrialStatus.PRUNED}


def _run(url: str, folder: Path, kill_after: float | None) -> float | None:
    """One driver run; killed `kill_after` seconds after it starts launching (None: to the end).
    The seconds its launch took when it finished, else None."""
    child = subprocess.Popen([sys.executable, str(CHILD), url, str(folder)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout.readline().strip() == "started"
        started = time.perf_counter()
        if kill_after is not None:
            try:
                child.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                child.kill()  # SIGKILL: no handler, no flush
                child.wait()
                return None
        finished = child.communicate(timeout=300)[0].strip() == "finished"
        return time.perf_counter() - started if finished else None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _told(url: str) -> dict[tuple[str, int], TrialStatus]:
    """The search's Optuna trials that are told, as the row status they stand for."""
    try:
        study = optuna.load_study(study_name="crash", storage=url.replace("postgresql://", "postgresql+psycopg://"))
    except KeyError:
        return {}  # killed before the study was stored
    told = Counter((t.user_attrs["arch_hash"], t.user_attrs["seed"]) for t in study.get_trials(deepcopy=False)
                   if t.state in STATES)
    assert max(told.values(), default=1) == 1, f"an (architecture, seed) told twice: {told}"
    return {(t.user_attrs["arch_hash"], t.user_attrs["seed"]): STATES[t.state]
            for t in study.get_trials(deepcopy=False) if t.state in STATES}


def _rows(url: str, phase: Phase) -> list:
    with Store.open(url, read_only=True) as store:
        found = store.get_experiment("crash")
        return [] if found is None else store.trials(experiment_id=found.id, phase=phase)


def _finished(rows) -> dict[tuple[str, int], TrialStatus]:
    pairs = Counter((t.arch_hash, t.seed) for t in rows if t.status in STATES.values())
    assert max(pairs.values(), default=1) == 1, f"an (architecture, seed) finished twice: {pairs}"
    return {(t.arch_hash, t.seed): TrialStatus(t.status) for t in rows if t.status in STATES.values()}


def test_a_driver_killed_at_random_moments_ends_as_one_that_ran_through(db_url, tmp_path):
    clean = f"sqlite:///{tmp_path / 'clean.db'}"
    (tmp_path / "clean").mkdir()
    duration = _run(clean, tmp_path / "clean", None)
    assert duration is not None
    rng = random.Random(26)
    kills = 0
    for k in range(KILLS):
        # a random moment of what is left (each resume has less to do); half the clean run's
        # time at most, as a loaded machine may run a resume faster than it ran the clean one
        if _run(db_url, tmp_path, rng.uniform(0.0, 0.5 * duration * (KILLS - k) / KILLS)) is not None:
            break
        kills += 1
        # at the kill: a told Optuna trial has its finished row, and a finished row its told trial
        assert _told(db_url) == _finished(_rows(db_url, Phase.SEARCH))
    assert kills >= 3, f"only {kills} of the runs were killed before they finished"
    if kills == KILLS:
        assert _run(db_url, tmp_path, None) is not None  # the last resume, to the end
    search, expected = _rows(db_url, Phase.SEARCH), _rows(clean, Phase.SEARCH)
    # every planned (architecture, seed) finished once, on the seeds of the run that was never killed
    assert set(_finished(search)) == set(_finished(expected)) == set(_told(db_url))
    assert {(t.arch_hash, t.seed) for t in search if t.status in STATES.values()} == \
        {(t.arch_hash, t.seed) for t in expected}
    # a replayed (architecture, seed) gives its recorded result, killed or not
    accuracy = {(t.arch_hash, t.seed): t.final_val_acc for t in expected if t.status == TrialStatus.COMPLETED}
    for t in search:
        if t.status == TrialStatus.COMPLETED:
            assert t.final_val_acc == pytest.approx(accuracy.get((t.arch_hash, t.seed), t.final_val_acc))
    # the race: each raced architecture on the same confirm seeds, none twice
    confirm = [t for t in _rows(db_url, Phase.CONFIRM) if t.status == TrialStatus.COMPLETED]
    assert max(Counter((t.arch_hash, t.seed) for t in confirm).values()) == 1
    seeds = {h: {t.seed for t in confirm if t.arch_hash == h} for h in {t.arch_hash for t in confirm}}
    assert len(set(map(frozenset, seeds.values()))) == 1 and min(next(iter(seeds.values()))) == CONFIRM_SEED_BASE
    with Store.open(db_url, read_only=True) as store:
        assert store.get_experiment("crash").status == "finished"


def _descendants(pid: int) -> set[int]:
    """The processes under `pid` now (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads processes from Linux's /proc")
def test_a_killed_driver_leaves_no_process_behind(tmp_path):
    """Its cost-counting process (spawned: its queue's pipe never closes) waited for work
    forever after a SIGKILL; 75 of them, 300 MB each, once filled this machine's memory."""
    child = subprocess.Popen([sys.executable, str(CHILD), f"sqlite:///{tmp_path / 'c.db'}", str(tmp_path)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        while not _descendants(child.pid) and time.monotonic() < deadline:  # the counting process starts
            time.sleep(0.05)
        below = _descendants(child.pid)
        assert below, "the driver started no process to count costs in"
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in below) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in below if _alive(pid)]
