"""What survives a kill: a driver SIGKILLed at random moments (searching with its pilot and
pruner, racing, writing behind) and run again each time ends with every planned (architecture,
seed) finished once on its own seed, its Optuna trial beside its row, the race paired; and at
every kill, no Optuna trial is told whose row is not finished, nor the reverse (a trial's end
is one transaction). On SQLite, and on PostgreSQL where a server is configured."""

from __future__ import annotations

import os
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

CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = int(os.environ.get("NAS_CRASH_POINTS", "2"))  # killed-and-resumed runs per backend
STATES = {TrialState.COMPLETE: TrialStatus.COMPLETED, TrialState.PRUNED: TrialStatus.PRUNED}


def _run(url: str, folder: Path, kill_after: float | None, name: str = "crash") -> float | None:
    """One driver run; killed `kill_after` seconds after it starts launching (None: to the end).
    The seconds its launch took when it finished, else None."""
    child = subprocess.Popen([sys.executable, str(CHILD), url, str(folder), name], cwd=ROOT, stdout=subprocess.PIPE,
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


def _study(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=name, storage=url.replace("postgresql://", "postgresql+psycopg://"))
    except KeyError:
        return []  # killed before the study was stored
    return study.get_trials(deepcopy=False)


def _told(url: str, name: str) -> dict[tuple[str, int], tuple[TrialStatus, float | None]]:
    """The search's Optuna trials that are told: the row status each stands for, and its value."""
    told = [t for t in _study(url, name) if t.state in STATES]
    pairs = Counter((t.user_attrs["arch_hash"], t.user_attrs["seed"]) for t in told)
    assert max(pairs.values(), default=1) == 1, f"an (architecture, seed) told twice: {pairs}"
    return {(t.user_attrs["arch_hash"], t.user_attrs["seed"]): (STATES[t.state], t.value) for t in told}


def _rows(url: str, name: str, phase: Phase | None = None) -> list:
    with Store.open(url, read_only=True) as store:
        found = store.get_experiment(name)
        return [] if found is None else store.trials(experiment_id=found.id, phase=phase)


def _finished(rows) -> dict[tuple[str, int], tuple[TrialStatus, float | None]]:
    """Finished rows as `_told` has them (a pruned trial has no value)."""
    pairs = Counter((t.arch_hash, t.seed) for t in rows if t.status in STATES.values())
    assert max(pairs.values(), default=1) == 1, f"an (architecture, seed) finished twice: {pairs}"
    return {(t.arch_hash, t.seed): (TrialStatus(t.status), t.final_val_acc if t.status == TrialStatus.COMPLETED
                                    else None) for t in rows if t.status in STATES.values()}


def _decisions(url: str, name: str) -> dict[str, str]:
    from nas.results import confirm_groups

    with Store.open(url, read_only=True) as store:
        return {h: g.decision for h, g in confirm_groups(store, name).items()}


def test_a_driver_killed_at_random_moments_ends_as_one_that_ran_through(db_url, tmp_path):
    """NAS_CRASH_POINTS scenarios (CI: 2 per backend; the long run: 50), each one to three
    SIGKILLs at random moments of what is left, then a resume to the end."""
    clean = f"sqlite:///{tmp_path / 'clean.db'}"
    (tmp_path / "clean").mkdir()
    duration = _run(clean, tmp_path / "clean", None)
    assert duration is not None
    expected = _finished(_rows(clean, "crash", Phase.SEARCH))
    expected_confirm = {(t.arch_hash, t.seed) for t in _rows(clean, "crash", Phase.CONFIRM)}
    rng = random.Random(26)
    kills = resumes = checks = 0
    for scenario in range(SCENARIOS):
        name = f"crash{scenario}"
        for k in range(rng.randint(1, 3)):
            # a random moment of what is left (a resume has less to do); half the clean run's time
            # at most, as a loaded machine may run a resume faster than it ran the clean one
            if _run(db_url, tmp_path, rng.uniform(0.0, 0.5 * duration / (k + 1)), name) is not None:
                break
            kills += 1
            # at the kill: a told Optuna trial has its finished row with its value, and the reverse
            assert _told(db_url, name) == _finished(_rows(db_url, name, Phase.SEARCH))
            checks += 1
        assert _run(db_url, tmp_path, None, name) is not None  # resumed to the end
        resumes += 1
        rows = _rows(db_url, name)
        # nothing left running (a killed attempt stays `interrupted`, its pair finished in a row of its own)
        assert not [t for t in rows if t.status == TrialStatus.RUNNING]
        search = _finished(_rows(db_url, name, Phase.SEARCH))
        # every planned (architecture, seed) finished once, on the seeds of the run never killed,
        # Optuna's trials and the rows one to one, in state and value
        assert set(search) == set(expected) and _told(db_url, name) == search
        assert {k: v[1] for k, v in search.items() if v[1] is not None} == \
            {k: v[1] for k, v in expected.items() if k in search and search[k][1] is not None}
        # the race: the same runs, on paired seeds, and the same decision as the run never killed
        confirm = [t for t in _rows(db_url, name, Phase.CONFIRM) if t.status == TrialStatus.COMPLETED]
        assert max(Counter((t.arch_hash, t.seed) for t in confirm).values()) == 1
        assert {(t.arch_hash, t.seed) for t in confirm} == expected_confirm
        assert _decisions(db_url, name) == _decisions(clean, "crash")
        with Store.open(db_url, read_only=True) as store:
            assert store.get_experiment(name).status == "finished"
        checks += 6
    assert kills >= SCENARIOS, f"only {kills} kills landed before the runs finished"
    print(f"crash points: {kills} kills, {resumes} resumes, {checks} invariant checks, 0 violations")


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


def _spawned(pid: int) -> set[int]:
    """`pid`'s descendants that multiprocessing spawned (its pool's workers and resource tracker).
    Not any descendant: a library may run a short-lived command (e.g. `uname`) meanwhile."""
    found = set()
    for child in _descendants(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"multiprocessing" in arg for arg in argv):
            found.add(child)
    return found


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads processes from Linux's /proc")
def test_a_killed_driver_leaves_no_process_behind(tmp_path):
    """Its cost-counting process (spawned: its queue's pipe never closes) waited for work
    forever after a SIGKILL; 75 of them, 300 MB each, once filled this machine's memory."""
    errors = (tmp_path / "stderr.txt").open("w")
    child = subprocess.Popen([sys.executable, str(CHILD), f"sqlite:///{tmp_path / 'c.db'}", str(tmp_path)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        assert child.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        # the counting process starts (a loaded machine may take seconds)
        while not (below := _spawned(child.pid)) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert below, (f"the driver started no process to count costs in (exit code {child.poll()}): "
                       f"{(tmp_path / 'stderr.txt').read_text()[-2000:]}")
    finally:
        child.kill()
        child.wait()
        errors.close()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in below) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in below if _alive(pid)]
