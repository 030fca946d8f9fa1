"""Write-behind: the driver's writes run in order on a thread of their own, grouped.

At 64 trials at once the driver's callbacks (each epoch's row, each trial's first rows and its
end, its Optuna trial mirrored to the database) spent about half their wall time waiting on
the database (`benchmarks/driver_scale.py`). Here a callback queues its writes and returns; one
thread runs them in the order they were queued, consecutive store writes in one transaction
(`Store.transaction`): while one commit is in flight the next writes queue, so the busier the
driver, the fewer commits per row (group commit).

Order is the contract (all of it, and how a launch resumes: `nas.search.resume`). Whatever
prefix of the queue was committed when a driver dies is a state that writing each row at once
could have left, so resume needs nothing new. A SIGKILL loses the writes still queued, at
most `max_pending` (their trials' rows stay `running`: a resume runs them again). The queue is
bounded, so a writer that falls behind makes the callbacks wait and its lag shows where the
driver is measured. The first error stops the writer (later writes may depend on the failed
one: they are dropped) and is raised in the driver at its next `submit` or `flush`. A group
whose write fails is rolled back and written again one by one (the writes before the failing
one are kept); a group whose COMMIT fails is not (it may have committed: writing it again
could duplicate a trial).

A store write may say that it commutes (`write.commutes`: it touches no row the group's
other writes touch), and then how it merges with its kind (`write.merge(writes)` does what each
of `writes`, all with that `merge`, would do, in their order, in fewer statements). In a group
the writes that commute run after the others, those with one `merge` as one call (the Optuna
mirrors of a group's trials: six statements for them all, not six each); the group commits
as one, so no one sees the order change.

Writes submitted inside `together()` are queued as one: they commit in one transaction,
whatever the groups around them (a trial's end: its Optuna trial and its row, so that no crash
leaves one without the other).

    with WriteBehind(store) as writes:
        writes.submit(lambda: store.record_epoch(...))         # joins the next store transaction
        writes.submit(lambda: mirror(trial), store=False)      # a transaction of its own, in order
        with writes.together():                                # these two commit as one
            writes.submit(lambda: tell(trial))
            writes.submit(lambda: store.finish_trial(...))
        writes.flush()                                         # before reading what was written
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from nas.db.store import Store

_log = logging.getLogger(__name__)


class WriteBehind:
    """Runs queued writes in order on one thread; consecutive store writes share a transaction.

    Args:
        store: the store the `store=True` writes go to.
        max_pending: writes queued or running at most; `submit` waits while there are more.
        max_group: store writes in one transaction at most.
    """

    def __init__(self, store: Store, *, max_pending: int = 1024, max_group: int = 256) -> None:
        self.store = store
        self.max_pending = max_pending
        self.max_group = max_group
        self._queue: deque[tuple[Callable[[], object], bool]] = deque()
        self._pending = 0  # queued, or in the group being written
        self._error: BaseException | None = None
        self._raised = False
        self._closed = False
        self._changed = threading.Condition()
        # what the writer thread spent (benchmarks/driver_scale.py reads them)
        self.busy = 0.0  # wall seconds writing
        self.cpu = 0.0  # its CPU seconds writing
        self.writes = 0
        self.transactions = 0
        self.most_pending = 0
        self._together: list[tuple[Callable[[], object], bool]] | None = None  # collected by `together`...
        self._together_thread: int | None = None  # ...from this thread
        self._thread = threading.Thread(target=self._run, name="nas-write-behind", daemon=True)
        self._thread.start()

    def submit(self, write: Callable[[], object], *, store: bool = True) -> None:
        """Queue `write` after every write queued before it. `store`: it writes only through
        `self.store` (it joins a transaction of several); False: anything else (its own).

        Raises:
            the error a queued write raised, if one did.
        """
        if self._together is not None and threading.get_ident() == self._together_thread:
            self._together.append((write, store))
            return
        with self._changed:
            while self._pending >= self.max_pending and self._error is None:
                self._changed.wait()
            self._raise()
            if self._closed:
                raise RuntimeError("WriteBehind.submit after close.")
            self._queue.append((write, store))
            self._pending += 1
            self.most_pending = max(self.most_pending, self._pending)
            self._changed.notify_all()

    @contextmanager
    def together(self) -> Iterator[None]:
        """The store writes submitted in the block (from this, the driver's thread) are queued as
        one at its end, so they commit in one transaction. A write that is not a store write
        cannot share it: then each is queued in order, as `submit` would."""
        if self._together is not None:
            raise RuntimeError("WriteBehind.together blocks do not nest.")
        self._together, self._together_thread = [], threading.get_ident()
        try:
            yield
        finally:
            writes, self._together, self._together_thread = self._together, None, None
        if len(writes) > 1 and all(store for _, store in writes):
            self.submit(_Together([write for write, _ in writes]))
        else:
            for write, store in writes:
                self.submit(write, store=store)

    @property
    def pending(self) -> int:
        """Writes queued or being written now."""
        return self._pending

    def flush(self) -> None:
        """Wait until every write queued so far is committed.

        Raises:
            the error a queued write raised, if one did.
        """
        with self._changed:
            while self._pending and self._error is None:
                self._changed.wait()
            self._raise()

    def close(self) -> None:
        """Write what is queued, then stop the thread; raises a write's error not yet raised."""
        try:
            with self._changed:
                while self._pending and self._error is None:
                    self._changed.wait()
                if not self._raised:
                    self._raise()
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()
            self._thread.join()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            self.close()  # a failing block's queued writes are written all the same
        except Exception as writer_error:
            if exc is None:
                raise
            # The block's own error stands (a writer's error led to it, or not), and carries the
            # writer's: dropped, a failed write would leave no trace (issue 26 D1)
            _log.error("the store's queued writes failed while the driver stopped on %r", exc, exc_info=writer_error)
            exc.add_note(f"the store's queued writes failed too: {writer_error!r}")

    def _raise(self) -> None:
        if self._error is not None:
            if self._raised:
                raise RuntimeError("the store's queued writes stopped after an earlier error") from self._error
            self._raised = True
            raise self._error

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._closed:
                    self._changed.wait()
                if not self._queue:
                    return
                group = [self._queue.popleft()]
                while group[0][1] and self._queue and self._queue[0][1] and len(group) < self.max_group:
                    group.append(self._queue.popleft())
            start, start_cpu = time.perf_counter(), time.thread_time()
            try:
                self._write([write for write, _ in group], joined=group[0][1])
            except BaseException as error:  # noqa: BLE001 - raised in the driver instead
                with self._changed:
                    self._error = error
                    self._queue.clear()
                    self._pending = 0
                    self._changed.notify_all()
                return
            finally:
                self.busy += time.perf_counter() - start
                self.cpu += time.thread_time() - start_cpu
            with self._changed:
                self.writes += len(group)
                self._pending -= len(group)
                self._changed.notify_all()

    def _write(self, entries: list[Callable[[], object]], joined: bool) -> None:
        if not joined or (len(entries) == 1 and not isinstance(entries[0], _Together)):
            entries[0]()
            self.transactions += 1
            return
        writes = [w for entry in entries for w in (entry.writes if isinstance(entry, _Together) else [entry])]
        written = False  # every write ran: what fails after that is the COMMIT
        try:
            with self.store.transaction():
                later: dict[Callable, list[Callable[[], object]]] = {}  # writes that commute, by merge
                for write in writes:
                    if getattr(write, "commutes", False):
                        later.setdefault(getattr(write, "merge", None) or write, []).append(write)
                    else:
                        write()
                for run, same in later.items():  # a merge, or a write that merges with none
                    run() if run is same[0] else run(same)
                written = True
            self.transactions += 1
        except Exception:
            if written:
                # The COMMIT failed, and may have happened all the same (PostgreSQL's connection
                # lost after the server committed): writing the group again could add a second
                # trial row or Optuna trial (issue 26 D2). Stop here; a resume reads what is there.
                raise
            # a write failed, and all was rolled back: again one by one, each committed (a `together` entry as one), so the
            # writes before the one that fails are kept (as if written at once) and its error is
            # the one raised
            for entry in entries:
                if isinstance(entry, _Together):
                    with self.store.transaction():
                        entry()
                else:
                    entry()
                self.transactions += 1


class _Together:
    """Writes queued as one entry (`WriteBehind.together`): in order, in one transaction."""

    def __init__(self, writes: list[Callable[[], object]]) -> None:
        self.writes = writes

    def __call__(self) -> None:
        for write in self.writes:
            write()
