"""One writer per experiment: the lease in the store (nas.db.lease) and the commands that hold it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from nas.cli import app
from nas.db import Store
from nas.db.lease import Lease, holder, refuse_if_held
from nas.db.schema import ExperimentLease, Phase, utcnow
from nas.errors import ExperimentBusy, LeaseLost
from tests.helpers import experiment_yaml

runner = CliRunner()


@pytest.fixture
def store(db_url):
    with Store.open(db_url) as opened:
        yield opened


def _age_heartbeat(store: Store, experiment: str, seconds: float) -> None:
    """Move the holder's last heartbeat `seconds` into the past (a driver that stopped beating)."""
    table = ExperimentLease.__table__
    with store.engine.begin() as connection:
        connection.execute(update(table).where(table.c.experiment == experiment)
                           .values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def test_a_free_experiment_is_leased_to_this_process_and_released_after_the_block(store):
    with Lease(store, "exp", "nas launch") as lease:
        held = holder(store.engine, "exp")
        assert (held.host, held.pid, held.command) == (socket.gethostname(), os.getpid(), "nas launch")
        assert lease.taken_over is None
    assert holder(store.engine, "exp") is None


def test_a_second_writer_is_refused_naming_the_holder_host_pid_and_since_when(store):
    with Lease(store, "exp", "nas launch"):
        with pytest.raises(ExperimentBusy) as refused:
            Lease(store, "exp", "nas ablate").acquire()
    message = str(refused.value)
    assert "nas launch" in message and socket.gethostname() in message and f"pid {os.getpid()}" in message
    assert "since" in message and "\n" not in message


def test_leases_of_different_experiments_do_not_block_each_other(store):
    with Lease(store, "a", "nas launch"), Lease(store, "b", "nas launch"):
        assert holder(store.engine, "a").pid == holder(store.engine, "b").pid == os.getpid()


def test_the_heartbeat_thread_renews_the_lease(store):
    with Lease(store, "exp", "nas launch", heartbeat_s=0.05, stale_after_s=30):
        first = holder(store.engine, "exp").heartbeat_at
        deadline = time.monotonic() + 10
        while holder(store.engine, "exp").heartbeat_at == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert holder(store.engine, "exp").heartbeat_at > first


def test_a_lease_without_a_heartbeat_past_the_stale_limit_is_taken_over(store):
    old = Lease(store, "exp", "nas launch", stale_after_s=60)
    old.acquire()
    _age_heartbeat(store, "exp", 61)
    with pytest.raises(ExperimentBusy):  # still within the limit for a writer that waits longer
        Lease(store, "exp", "nas launch", stale_after_s=120).acquire()
    new = Lease(store, "exp", "nas launch", stale_after_s=60)
    new.acquire()
    assert new.taken_over is not None and new.taken_over.pid == os.getpid()
    old.release()  # the old holder's release no longer frees what it lost
    assert holder(store.engine, "exp") is not None


def test_a_killed_holder_on_this_host_is_taken_over_at_once(db_url, store):
    code = (
        "import sys, time\n"
        "from nas.db import Store\n"
        "from nas.db.lease import Lease\n"
        f"lease = Lease(Store.open({db_url!r}), 'exp', 'nas launch')\n"
        "lease.acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(ExperimentBusy, match=f"pid {child.pid}"):
            Lease(store, "exp", "nas launch").acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    lease = Lease(store, "exp", "nas launch")
    lease.acquire()  # its heartbeat is fresh, but its process is gone
    assert lease.taken_over is not None and lease.taken_over.pid == child.pid
    assert holder(store.engine, "exp").pid == os.getpid()


def test_a_holder_that_lost_its_lease_stops_at_its_next_write_and_writes_nothing(db_url, store, monkeypatch):
    import nas.db.lease

    experiment_id = store.ensure_experiment("exp")
    stalled = Lease(store, "exp", "nas launch", heartbeat_s=30, stale_after_s=60)
    with stalled:
        # Frozen for a minute (SIGSTOP, a swapped-out VM): no heartbeat, and the next writer takes over.
        _age_heartbeat(store, "exp", 61)
        monkeypatch.setattr(nas.db.lease, "_clock", lambda: time.monotonic() + 61)
        other = Store.open(db_url)
        Lease(other, "exp", "nas launch").acquire()
        with pytest.raises(LeaseLost, match="lost its lease"):
            store.ensure_experiment("exp-2")
        with pytest.raises(LeaseLost):
            store.start_trial(experiment_id, "0" * 12, seed=0, phase=Phase.SEARCH, epochs_planned=1,
                              device="cpu", recipe_json="{}", code_version="test")
    assert store.get_experiment("exp-2") is None
    assert store.trials(experiment_id=experiment_id) == []
    assert holder(store.engine, "exp").pid == os.getpid()  # the new holder's lease stays
    other.close()


def test_a_holder_whose_clock_stopped_while_it_was_taken_over_commits_nothing(db_url, store):
    """Issue 26 D4: the lease was checked before a write by the holder's own monotonic clock,
    which stops while the host is suspended; a holder that woke after a takeover saw a recent
    renewal and wrote beside the new holder. The fence is inside the write's transaction."""
    experiment_id = store.ensure_experiment("exp")
    with Lease(store, "exp", "nas launch", heartbeat_s=30, stale_after_s=60):
        _age_heartbeat(store, "exp", 61)  # suspended a minute; by its own clock no time passed
        other = Store.open(db_url)
        Lease(other, "exp", "nas launch").acquire()
        with pytest.raises(LeaseLost, match="lost its lease"):
            with store.transaction():  # a write-behind group: rolled back whole
                store.start_trial(experiment_id, "0" * 12, seed=0, phase=Phase.SEARCH, epochs_planned=1,
                                  device="cpu", recipe_json="{}", code_version="test")
    assert store.trials(experiment_id=experiment_id) == []
    assert holder(store.engine, "exp").pid == os.getpid() and holder(other.engine, "exp") is not None
    other.close()


def test_a_driver_in_another_pid_namespace_of_the_same_hostname_keeps_its_lease(store):
    """Issue 26 D5: two containers sharing a hostname, each with its own PID namespace: the
    other's live driver has a pid that is not among ours, and was taken for dead."""
    from nas.db.lease import process_space

    assert process_space() is not None  # Linux: /proc says
    with store.engine.begin() as connection:  # a live holder (fresh heartbeat) from another namespace
        connection.execute(ExperimentLease.__table__.insert().values(
            experiment="exp", token="0" * 32, host=socket.gethostname(), pid=_dead_pid(), command="nas launch",
            acquired_at=utcnow(), heartbeat_at=utcnow(), process_space="another-boot/pid:[1]"))
    with pytest.raises(ExperimentBusy, match="is being written by nas launch"):
        Lease(store, "exp", "nas launch").acquire()
    with store.engine.begin() as connection:  # the same space, its pid gone: a killed driver, taken over
        connection.execute(update(ExperimentLease.__table__).values(process_space=process_space()))
    lease = Lease(store, "exp", "nas launch")
    lease.acquire()
    assert lease.taken_over is not None and holder(store.engine, "exp").process_space == process_space()


def _dead_pid() -> int:
    """A pid no process of this namespace has."""
    pid = 4_000_000
    while Path(f"/proc/{pid}").exists():
        pid += 1
    return pid


def test_every_write_moves_the_heartbeat_on(store):
    with Lease(store, "exp", "nas launch", heartbeat_s=30, stale_after_s=60):
        _age_heartbeat(store, "exp", 50)
        store.ensure_experiment("exp")
        assert holder(store.engine, "exp").age_s() < 5  # the write's fence renewed it


def test_writes_need_no_lease_after_the_block_ends(store):
    with Lease(store, "exp", "nas launch"):
        pass
    assert store.write_guard is None
    store.ensure_experiment("after")  # no guard left behind


def test_the_lease_is_released_when_the_block_raises(store):
    with pytest.raises(RuntimeError):
        with Lease(store, "exp", "nas launch"):
            raise RuntimeError("a trial crashed the driver")
    assert holder(store.engine, "exp") is None


def test_refuse_if_held_reads_only_and_passes_a_store_that_does_not_exist_yet(tmp_path):
    missing = tmp_path / "none.db"
    refuse_if_held(str(missing), "exp")
    assert not missing.exists()


def test_nas_launch_on_an_experiment_another_process_writes_exits_2_before_data_or_ray(tmp_path):
    db = tmp_path / "nas.db"
    space = experiment_yaml(tmp_path / "tiny.yaml")
    with Store.open(str(db)) as store, Lease(store, "tiny", "nas launch"):
        result = runner.invoke(app, ["launch", str(space), "--db", str(db),
                                     "--data-root", str(tmp_path / "no-data-here")])
    assert result.exit_code == 2, result.output
    assert "is being written by nas launch" in result.output and f"pid {os.getpid()}" in result.output
    assert "CIFAR" not in result.output  # refused before the data was looked for
    with Store.open(str(db), read_only=True) as store:
        assert store.get_experiment("tiny") is None  # nothing written


def test_nas_status_names_the_writer_and_whether_it_still_runs(tmp_path):
    db = tmp_path / "nas.db"
    with Store.open(str(db)) as store:
        store.ensure_experiment("exp")
        lease = Lease(store, "exp", "nas launch")
        lease.acquire()
        live = runner.invoke(app, ["status", "exp", "--db", str(db)])
        _age_heartbeat(store, "exp", 3600)
        stale = runner.invoke(app, ["status", "exp", "--db", str(db)])
        lease.release()
        free = runner.invoke(app, ["status", "exp", "--db", str(db)])
    assert f"writer: nas launch on {socket.gethostname()} (pid {os.getpid()})" in live.output
    assert "(running)" in live.output
    assert "last heartbeat 3600 s ago (stopped; `nas launch` resumes it)" in stale.output
    assert "writer:" not in free.output


def test_an_error_wrapping_a_lost_lease_ends_the_block_as_lease_lost(db_url, store, monkeypatch):
    import nas.db.lease

    with pytest.raises(LeaseLost, match="lost its lease"):
        with Lease(store, "exp", "nas launch"):
            _age_heartbeat(store, "exp", 61)
            monkeypatch.setattr(nas.db.lease, "_clock", lambda: time.monotonic() + 61)
            Lease(Store.open(db_url), "exp", "nas launch").acquire()
            try:
                store.ensure_experiment("exp")
            except LeaseLost as lost:  # as Ray Tune does with an error in a callback
                raise RuntimeError(f"TuneError: {lost}") from None


def test_a_failing_heartbeat_says_so_in_the_log_and_keeps_beating(store, caplog, monkeypatch):
    """Issue 26 D6: a heartbeat error was swallowed without a line."""
    import logging

    calls = []

    def flaky(self):
        calls.append(1)
        raise OSError("database hiccup")

    with caplog.at_level(logging.WARNING, logger="nas.db.lease"):
        lease = Lease(store, "exp", "nas launch", heartbeat_s=0.02, stale_after_s=30)
        with lease:
            monkeypatch.setattr(Lease, "renew", flaky)
            deadline = time.monotonic() + 10
            while len(calls) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            monkeypatch.undo()
    assert len(calls) >= 3  # it kept trying
    assert any("heartbeat of 'exp' failed" in r.getMessage() and "database hiccup" in r.getMessage()
               for r in caplog.records)
