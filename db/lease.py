"""One writer per experiment: a lease in the store (owner host, pid, heartbeat).

`nas launch` and `nas ablate` hold their experiment's lease while they write: trials, epochs,
the Optuna studies, marking a dead driver's trials interrupted. A second writer is refused
with the holder named. The holder renews `heartbeat_at` every `heartbeat_s` from a thread of
its own; a lease not renewed for `stale_after_s` (a SIGKILLed or frozen driver), or one whose
holder is a process of this host that no longer runs, is taken over by the next writer, so a
resume after a crash needs no flag. The pattern is Optuna's trial heartbeat
(`heartbeat_interval`, `grace_period`), applied to the whole experiment.

While held, every write transaction of the `Store` begins by fencing (`Store.write_guard`):
it moves the lease row's heartbeat on where the row still carries this holder's token, in
the same transaction as the writes. A holder that stalled past the limit (SIGSTOP, a paused
VM, a suspended host) and was taken over meanwhile finds another token: its transaction
rolls back and it stops (`LeaseLost`) instead of writing beside the new holder. The check
is inside the transaction, not before it, so a holder frozen between the two commits
nothing; and the database's write lock (SQLite) or the lease row's lock (PostgreSQL) keeps
a takeover out until that transaction ends.

    with Lease(store, "cifar_fast", "nas launch") as lease:
        ...  # write; lease.taken_over says whose stale lease it took

Heartbeats are the holder's clock, compared with the reader's: hosts of one cluster are
assumed to agree within a fraction of `stale_after_s` (NTP).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, insert, inspect, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from nas.db.engine import make_engine
from nas.db.schema import ExperimentLease, utcnow
from nas.db.store import Store
from nas.errors import ExperimentBusy, LeaseLost, StoreError

_log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0  # seconds between renewals
STALE_AFTER_S = 60.0  # a lease not renewed for this long is free: 12 missed heartbeats
_clock = time.monotonic  # how long since our last renewal (for the message when the lease is lost)


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) an experiment's lease."""

    host: str
    pid: int
    command: str
    acquired_at: datetime
    heartbeat_at: datetime
    process_space: str | None = None  # where its pid means something (`process_space`); None: unknown

    def age_s(self) -> float:
        """Seconds since the last heartbeat, on this host's clock."""
        return (utcnow() - self.heartbeat_at).total_seconds()

    def describe(self) -> str:
        return (f"{self.command} on {self.host} (pid {self.pid}) since "
                f"{self.acquired_at:%Y-%m-%d %H:%M:%S} UTC, last heartbeat {max(self.age_s(), 0):.0f} s ago")

    def is_stale(self, stale_after_s: float = STALE_AFTER_S) -> bool:
        """No heartbeat for `stale_after_s`, or its process is gone from this very process
        space: the same host, boot and PID namespace (one hostname is not one machine: two
        containers may share it, each blind to the other's processes)."""
        if self.age_s() > stale_after_s:
            return True
        here = self.host == socket.gethostname() and (self.process_space is None  # written by an older nas
                                                      or self.process_space == process_space())
        return here and not _process_runs(self.pid)


def holder(engine: Engine, experiment: str) -> Holder | None:
    """The lease's current holder (live or stale), or None when the experiment is free.
    A store from before the lease table (revision 0007) has none; one from before revision
    0011 (read before a launch upgrades it) has no process space."""
    table = ExperimentLease.__table__
    with engine.connect() as connection:
        if not inspect(connection).has_table(table.name):
            return None
        present = {column["name"] for column in inspect(connection).get_columns(table.name)}
        row = connection.execute(
            select(*[c for c in table.c if c.name in present]).where(table.c.experiment == experiment)
        ).mappings().one_or_none()
    return None if row is None else _holder(row)


def process_space() -> str | None:
    """This process's host boot and PID namespace (Linux), e.g. `3f2a.../pid:[4026531836]`: pids
    of one space are comparable. None where /proc does not say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def refuse_if_held(url: str, experiment: str, stale_after_s: float = STALE_AFTER_S) -> None:
    """ExperimentBusy when a live process holds `experiment`'s lease in the store at `url`;
    opens it read-only and writes nothing: a command's early check, before it reads data or
    starts Ray (the lease itself is taken later, by `Lease`). A database that does
    not exist yet has no holder."""
    try:
        engine = make_engine(url, read_only=True)
    except StoreError:
        return  # nothing there yet (engine.probe has refused what cannot become a store)
    try:
        current = holder(engine, experiment)
    finally:
        engine.dispose()
    if current is not None and not current.is_stale(stale_after_s):
        raise _busy(experiment, current, stale_after_s)


class Lease:
    """The lease of one experiment, held by this process for a `with` block."""

    def __init__(self, store: Store, experiment: str, command: str, *,
                 heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S) -> None:
        if not 0 < heartbeat_s < stale_after_s:
            raise ValueError(f"heartbeat_s must be positive and below stale_after_s, but got {heartbeat_s=}, "
                             f"{stale_after_s=}.")
        self.store, self.experiment, self.command = store, experiment, command
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.token = uuid.uuid4().hex
        self.taken_over: Holder | None = None  # the stale holder this lease replaced
        self.lost: str | None = None  # why the lease is no longer ours
        self._renewed = 0.0  # _clock() of the last confirmed renewal
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the lease's life --

    def acquire(self) -> None:
        """Take the lease: free, stale, or refused with the live holder named.

        Raises:
            ExperimentBusy: a live process holds it.
        """
        table = ExperimentLease.__table__
        for _ in range(5):  # a race with another writer: read again and decide again
            current = holder(self.store.engine, self.experiment)
            now = utcnow()
            mine = dict(token=self.token, host=socket.gethostname(), pid=os.getpid(), command=self.command,
                        acquired_at=now, heartbeat_at=now, process_space=process_space())
            with self.store.engine.begin() as connection:
                if current is None:
                    try:
                        connection.execute(insert(table).values(experiment=self.experiment, **mine))
                    except IntegrityError:
                        continue
                    break
                if not current.is_stale(self.stale_after_s):
                    raise _busy(self.experiment, current, self.stale_after_s)
                taken = connection.execute(  # only if no one renewed or took it since we read it
                    update(table).where(table.c.experiment == self.experiment,
                                        table.c.heartbeat_at == current.heartbeat_at,
                                        table.c.pid == current.pid, table.c.host == current.host).values(**mine))
                if taken.rowcount == 1:
                    self.taken_over = current
                    break
        else:
            raise ExperimentBusy(f"experiment {self.experiment!r}: its lease changed hands while this process "
                                 "tried to take it; another writer is starting, try again later.")
        self._renewed = _clock()

    def renew(self) -> None:
        """Move the heartbeat on. Raises LeaseLost when another process holds the lease now."""
        with self._lock:
            if self.lost:
                raise LeaseLost(self.lost)
            table = ExperimentLease.__table__
            with self.store.engine.begin() as connection:
                renewed = connection.execute(
                    update(table).where(table.c.experiment == self.experiment, table.c.token == self.token)
                    .values(heartbeat_at=utcnow())).rowcount
            if renewed != 1:
                now_held = holder(self.store.engine, self.experiment)
                self.lost = (f"experiment {self.experiment!r}: this process lost its lease"
                             + (f" to {now_held.describe()}" if now_held else "")
                             + f" after {_clock() - self._renewed:.0f} s without a heartbeat; "
                             "it stopped writing. Its finished trials are kept.")
                raise LeaseLost(self.lost)
            self._renewed = _clock()

    def fence(self, session) -> None:
        """First in each write transaction (`Store.write_guard`): the lease is still ours, and
        its heartbeat moves on, in that transaction; else LeaseLost, and it rolls back."""
        if self.lost:
            raise LeaseLost(self.lost)
        table = ExperimentLease.__table__
        fenced = session.execute(update(table).where(table.c.experiment == self.experiment,
                                                     table.c.token == self.token).values(heartbeat_at=utcnow()))
        if fenced.rowcount != 1:
            self.lost = (f"experiment {self.experiment!r}: this process lost its lease after "
                         f"{_clock() - self._renewed:.0f} s without a heartbeat (another writer took it over); "
                         "it stopped writing. Its finished trials are kept.")
            raise LeaseLost(self.lost)
        self._renewed = _clock()

    def release(self) -> None:
        """Give the lease back (only if it is still ours)."""
        table = ExperimentLease.__table__
        with self.store.engine.begin() as connection:
            connection.execute(delete(table).where(table.c.experiment == self.experiment,
                                                   table.c.token == self.token))

    # -- held for a block: heartbeats in a thread, every store write checked --

    def __enter__(self) -> Lease:
        self.acquire()
        self._thread = threading.Thread(target=self._beat, name=f"nas-lease-{self.experiment}", daemon=True)
        self._thread.start()
        self.store.write_guard = self.fence
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 5)
        if self.store.write_guard == self.fence:
            self.store.write_guard = None
        if not self.lost:
            self.release()
        elif exc is not None and not isinstance(exc, LeaseLost):
            # Ray Tune wraps an error raised in its callbacks (where the guard fires) in a
            # TuneError of its own: say what happened instead.
            raise LeaseLost(self.lost) from exc

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.renew()
            except LeaseLost:
                return  # the next write raises it in the writing thread
            except Exception as error:  # noqa: BLE001 - a database hiccup: the next beat tries again
                _log.warning("lease heartbeat of %r failed (the next beat tries again): %r", self.experiment, error)
                continue


def _holder(row) -> Holder:
    return Holder(host=row["host"], pid=row["pid"], command=row["command"],
                  acquired_at=row["acquired_at"], heartbeat_at=row["heartbeat_at"],
                  process_space=row.get("process_space"))


def _busy(experiment: str, current: Holder, stale_after_s: float) -> ExperimentBusy:
    return ExperimentBusy(
        f"experiment {experiment!r} is being written by {current.describe()}; wait for it to finish or stop "
        f"that process (a lease without a heartbeat for {stale_after_s:.0f} s is taken over by the next run).")


def _process_runs(pid: int) -> bool:
    """Whether process `pid` of this host runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): it exists
