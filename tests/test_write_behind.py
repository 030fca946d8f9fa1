"""Write-behind (`nas.db.write_behind`): the driver's writes in order on a thread of their own,
consecutive store writes in one transaction, a bounded queue, errors raised in the driver, and
after a SIGKILL a store that is a prefix of what was queued.

Tests taking `db_url` run on SQLite and, when NAS_TEST_POSTGRES_URL is set, on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import optuna
import pytest
from sqlalchemy import select

from nas.data.config import DataConfig
from nas.db import Phase, Store, TrialStatus
from nas.db.schema import EpochResult, Trial
from nas.db.write_behind import WriteBehind
from nas.models.arch import ArchConfig
from nas.db import optuna_storage
from nas.search.studies import MirroredStudy, record
from nas.training.recipe import Recipe
from nas.trials.artifacts import TrialSetup
from nas.trials.recorder import TrialRecorder

ROOT = Path(__file__).resolve().parent.parent


def _setup(seed: int, arch: ArchConfig | None = None) -> TrialSetup:
    return TrialSetup(arch=arch or ArchConfig(), recipe=Recipe(epochs=3), data_cfg=DataConfig(), seed=seed)


def _epoch(epoch: int, val: float | None) -> dict:
    return dict(epoch=epoch, train_loss=1.0 / (epoch + 1), train_acc=0.5, val_acc=val, test_acc=None,
                epoch_seconds=1.0, cumulative_seconds=float(epoch + 1), val_images=5000, test_images=None)


def _record(store: Store, experiment_id: int, writes: WriteBehind | None) -> list[TrialRecorder]:
    """Three trials, interleaved as a driver sees them: started, epochs, finished."""
    recorders = [TrialRecorder(store, experiment_id, _setup(seed, ArchConfig(width=0.25 * (1 + seed % 2))),
                               Phase.SEARCH, costs=(10 + seed, 100 + seed), device=f"gpu {seed}", writes=writes)
                 for seed in range(3)]
    for epoch in range(3):
        for seed, recorder in enumerate(recorders):
            if seed == 2 and epoch == 2:
                continue  # pruned after two epochs
            recorder.epoch(_epoch(epoch, [0.3, 0.6, float("nan"), None][(seed + epoch) % 4]))
    recorders[1].finish(TrialStatus.COMPLETED)
    recorders[2].finish(TrialStatus.PRUNED, train_seconds=1.5)
    recorders[0].finish(TrialStatus.FAILED, error="it broke")
    return recorders


def _rows(store: Store, experiment_id: int) -> list[tuple]:
    """Every stored column of the trials and their epochs that does not say when it was written."""
    skip = {"id", "trial_id", "started_at", "finished_at", "created_at"}
    with store.engine.connect() as connection:
        trials = connection.execute(select(Trial).where(Trial.experiment_id == experiment_id)
                                    .order_by(Trial.seed)).mappings().all()
        rows = []
        for trial in trials:
            epochs = connection.execute(select(EpochResult).where(EpochResult.trial_id == trial["id"])
                                        .order_by(EpochResult.epoch)).mappings().all()
            rows.append((tuple((k, repr(v)) for k, v in trial.items() if k not in skip),
                         [tuple((k, repr(v)) for k, v in e.items() if k not in skip) for e in epochs]))
    return rows


def test_queued_writes_store_the_same_rows_as_writes_made_at_once(db_url, tmp_path):
    with Store.open(db_url) as store:
        at_once = store.ensure_experiment("at-once")
        queued = store.ensure_experiment("queued")
        _record(store, at_once, None)
        with WriteBehind(store) as writes:
            recorders = _record(store, queued, writes)
            writes.flush()
            assert all(recorder.trial_id is not None for recorder in recorders)
        assert writes.writes == 3 + 8 + 3  # each trial's first rows, its epochs, its end
        expected = [(tuple(p for p in trial if p[0] != "experiment_id"), epochs)
                    for trial, epochs in _rows(store, at_once)]
        got = [(tuple(p for p in trial if p[0] != "experiment_id"), epochs)
               for trial, epochs in _rows(store, queued)]
        assert len(got) == 3 and got == expected


def _gated(writes: WriteBehind) -> threading.Event:
    """Hold the writer thread in a write of its own until the event is set, so that what is
    submitted meanwhile queues up behind it."""
    gate = threading.Event()
    writes.submit(lambda: gate.wait(30), store=False)
    return gate


def test_writes_run_in_the_order_queued_and_consecutive_store_writes_share_a_transaction(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 'nas.db'}") as store, WriteBehind(store, max_group=4) as writes:
        experiment_id = store.ensure_experiment("e")
        order: list[str] = []
        gate = _gated(writes)
        recorder = TrialRecorder(store, experiment_id, _setup(0), Phase.SEARCH, costs=(1, 1), device="", writes=writes)
        writes.submit(lambda: order.append(f"start {recorder.trial_id}"))
        for epoch in range(3):
            recorder.epoch(_epoch(epoch, 0.5))
            writes.submit(lambda epoch=epoch: order.append(f"epoch {epoch}"))
        writes.submit(lambda: order.append("other"), store=False)
        recorder.finish(TrialStatus.COMPLETED)
        writes.submit(lambda: order.append("end"))
        gate.set()
        writes.flush()
        assert order == [f"start {recorder.trial_id}", "epoch 0", "epoch 1", "epoch 2", "other", "end"]
        # the gate; the 8 store writes before "other" in groups of at most 4; "other" alone; the
        # end and its marker together
        assert writes.transactions == 1 + 2 + 1 + 1
        assert store.get_trial(recorder.trial_id).status == TrialStatus.COMPLETED
        assert store.get_trial(recorder.trial_id).epochs_done == 3


def test_writes_submitted_together_commit_in_one_transaction_or_not_at_all(tmp_path):
    """A trial's end (its Optuna trial, its row) is one `together` entry: a group boundary
    cannot split it, and when its second half fails the first is not kept either, where
    writes merely queued in a row are replayed one by one and the first one stays."""
    def fails() -> None:
        raise RuntimeError("the second half")

    with Store.open(f"sqlite:///{tmp_path / 'nas.db'}") as store:
        for together in (False, True):
            writes = WriteBehind(store, max_group=2)
            gate = _gated(writes)
            writes.submit(lambda t=together: store.ensure_experiment(f"before {t}"))
            with writes.together() if together else contextlib.nullcontext():
                writes.submit(lambda t=together: store.ensure_experiment(f"half {t}"))  # a group of 2 ends here...
                writes.submit(fails)  # ...unless the two are together
            gate.set()
            with pytest.raises(RuntimeError, match="the second half"):
                writes.flush()
            writes.close()
            assert store.get_experiment(f"before {together}") is not None
            assert (store.get_experiment(f"half {together}") is None) == together


def test_a_group_whose_commit_fails_after_its_writes_ran_is_not_written_again(tmp_path, monkeypatch):
    """Issue 26 D2: a COMMIT that fails may have committed (PostgreSQL's connection lost after
    the server did); replaying the group write by write could add a second trial row or Optuna
    trial. Only a write's own failure is replayed; a failed COMMIT stops the writer."""
    from sqlalchemy.exc import OperationalError

    with Store.open(f"sqlite:///{tmp_path / 'nas.db'}") as store:
        real = store.transaction

        @contextlib.contextmanager
        def commit_lost():
            with real():
                yield
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

        monkeypatch.setattr(store, "transaction", commit_lost)
        calls: list[int] = []
        writes = WriteBehind(store)
        gate = _gated(writes)
        for i in range(3):
            writes.submit(lambda i=i: (calls.append(i), store.ensure_experiment(f"e{i}")))
        gate.set()
        with pytest.raises(OperationalError, match="server closed"):
            writes.flush()
        writes.close()
        assert calls == [0, 1, 2]  # each once: not replayed


def test_a_trials_optuna_mirror_joins_the_store_writes_queued_beside_it_when_in_the_same_database(db_url, tmp_path):
    with Store.open(db_url) as store, Store.open(f"sqlite:///{tmp_path / 'other.db'}") as other:
        storage = optuna_storage(db_url)
        for mirror_store, transactions in ((store, 1), (other, 3)):  # other: not the studies' database
            mirrored = MirroredStudy(f"study {transactions}", storage, ["maximize"])
            trial = mirrored.study.ask()
            trial.report(0.5, 0)
            mirrored.study.tell(trial, 0.5)
            with WriteBehind(store) as writes:
                gate = _gated(writes)
                recorder = TrialRecorder(store, store.ensure_experiment("e"), _setup(transactions), Phase.SEARCH,
                                         costs=(1, 1), device="", writes=writes)
                recorder.epoch(_epoch(0, 0.5))
                record([(mirrored, trial)], writes.submit, store=mirror_store)
                recorder.finish(TrialStatus.COMPLETED)
                gate.set()
                writes.flush()
                assert writes.transactions - 1 == transactions  # less the gate's
            [stored] = optuna.load_study(study_name=f"study {transactions}", storage=storage).trials
            assert (stored.value, stored.intermediate_values) == (0.5, {0: 0.5})
            assert store.get_trial(recorder.trial_id).status == TrialStatus.COMPLETED
        storage.engine.dispose()


def test_a_failing_write_keeps_those_before_it_drops_those_after_and_is_raised_in_the_driver(db_url):
    with Store.open(db_url) as store:
        experiment_id = store.ensure_experiment("e")
        writes = WriteBehind(store)
        gate = _gated(writes)
        recorder = TrialRecorder(store, experiment_id, _setup(0), Phase.SEARCH, costs=(1, 1), device="", writes=writes)
        recorder.epoch(_epoch(0, 0.5))
        writes.submit(lambda: store.record_epoch(10**9, 0, **{k: v for k, v in _epoch(0, 0.1).items()
                                                               if k != "epoch"}))  # no such trial
        recorder.epoch(_epoch(1, 0.7))
        recorder.finish(TrialStatus.COMPLETED)
        gate.set()
        with pytest.raises(KeyError, match="no nas_trials row"):
            writes.flush()
        trial = store.get_trial(recorder.trial_id)
        assert (trial.status, trial.epochs_done) == (TrialStatus.RUNNING, 1)  # the group was written up to it
        assert [e.epoch for e in store.epochs(recorder.trial_id)] == [0]
        with pytest.raises(RuntimeError, match="stopped after an earlier error"):
            recorder.epoch(_epoch(2, 0.8))  # nothing is queued behind a failed write
        writes.close()  # already raised: closing says nothing more


def test_a_full_queue_makes_the_driver_wait_until_the_writer_catches_up(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 'nas.db'}") as store, WriteBehind(store, max_pending=3) as writes:
        gate = _gated(writes)
        done: list[int] = []
        writes.submit(lambda: done.append(1))
        writes.submit(lambda: done.append(2))
        waiting = threading.Thread(target=writes.submit, args=(lambda: done.append(3),))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and writes.most_pending == 3  # the fourth waits for a free place
        gate.set()
        waiting.join(30)
        writes.flush()
        assert not waiting.is_alive() and done == [1, 2, 3]


def test_closing_writes_what_is_queued_even_when_the_block_failed(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 'nas.db'}") as store:
        experiment_id = store.ensure_experiment("e")
        with pytest.raises(ValueError, match="the driver's own error"):
            with WriteBehind(store) as writes:
                gate = _gated(writes)
                recorder = TrialRecorder(store, experiment_id, _setup(0), Phase.SEARCH, costs=(1, 1), device="",
                                         writes=writes)
                recorder.epoch(_epoch(0, 0.5))
                gate.set()
                raise ValueError("the driver's own error")
        assert store.get_trial(recorder.trial_id).epochs_done == 1


CHILD = textwrap.dedent("""
    import sys
    from nas.data.config import DataConfig
    from nas.db import Phase, Store, TrialStatus
    from nas.db.write_behind import WriteBehind
    from nas.models.arch import ArchConfig
    from nas.training.recipe import Recipe
    from nas.trials.artifacts import TrialSetup
    from nas.trials.recorder import TrialRecorder

    EPOCHS = 8
    with Store.open(sys.argv[1]) as store, WriteBehind(store, max_pending=64) as writes:
        experiment_id = store.ensure_experiment("killed")
        print("ready", flush=True)
        for seed in range(100000):
            setup = TrialSetup(arch=ArchConfig(), recipe=Recipe(epochs=EPOCHS), data_cfg=DataConfig(), seed=seed)
            recorder = TrialRecorder(store, experiment_id, setup, Phase.SEARCH, costs=(1, 1), device="", writes=writes)
            for epoch in range(EPOCHS):
                recorder.epoch(dict(epoch=epoch, train_loss=1.0, train_acc=0.5, val_acc=0.1 * epoch, test_acc=None,
                                    epoch_seconds=1.0, cumulative_seconds=epoch + 1.0))
            recorder.finish(TrialStatus.COMPLETED)
""")


@pytest.mark.parametrize("after_s", [0.7, 1.9, 3.1])
def test_after_a_sigkill_the_store_holds_a_prefix_of_the_queued_writes(db_url, after_s):
    """Trials written one after another: every trial before the last is whole, the last has
    its first epochs (as many as its count says) and is finished only if whole."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, db_url], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stdout.readline().strip() == "ready"
    time.sleep(after_s)
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
    with Store.open(db_url) as store:
        trials = sorted(store.trials(), key=lambda t: t.id)
        assert trials, "nothing was written before the kill"
        assert [t.seed for t in trials] == list(range(len(trials)))
        for trial in trials[:-1]:
            assert (trial.status, trial.epochs_done, len(store.epochs(trial.id))) == (TrialStatus.COMPLETED, 8, 8)
        last = trials[-1]
        epochs = store.epochs(last.id)
        assert [e.epoch for e in epochs] == list(range(last.epochs_done))
        assert last.status == (TrialStatus.COMPLETED if last.epochs_done == 8 else TrialStatus.RUNNING)


def test_a_writers_error_is_kept_when_the_driver_stops_on_another(tmp_path, caplog):
    """Issue 26 D1: a failed queued write, then the driver raising something else (Ctrl-C, a
    Tune error) before its next submit: the writer's error was dropped without a trace."""
    import logging

    with Store.open(f"sqlite:///{tmp_path / 'nas.db'}") as store, caplog.at_level(logging.ERROR):
        with pytest.raises(KeyboardInterrupt) as stopped:
            with WriteBehind(store) as writes:
                writes.submit(lambda: (_ for _ in ()).throw(KeyError("no nas_trials row with key 7")))
                deadline = time.monotonic() + 10
                while writes.pending and time.monotonic() < deadline:
                    time.sleep(0.01)
                raise KeyboardInterrupt
    assert any("queued writes failed too" in note and "no nas_trials row" in note
               for note in getattr(stopped.value, "__notes__", []))
    assert any("queued writes failed" in r.getMessage() and r.exc_info for r in caplog.records)
