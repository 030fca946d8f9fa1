"""Search trials asked ahead, in a thread of the driver: a GPU that frees up gets its next
trial from a queue instead of waiting for the sampler.

Ray Tune asks for the next trial only when a slot is free, so each ask (TPE: tens of ms) sat
between a finished trial and the next start, and at the start of a search N idle GPUs waited
on N asks in a row. `AskAhead` keeps up to `depth` plans asked in advance, refilled by a
thread while the driver waits on Ray (the wait releases the GIL). With TPE's constant liar the
plans asked ahead count as running trials, so they are not the same architecture; `depth` is
half the trials at once, at most 16: a plan is asked on nearly as much history as when asked
at the last moment (the trials running are unseen either way), and trials that end together
find plans ready (a quarter, 2 plans at 8 at once, ran out: the suggest callback asked in line,
`benchmarks/driver_scale.py`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

P = TypeVar("P")
MAX_DEPTH = 16


def ahead_depth(concurrent: int | None) -> int:
    """Plans to keep asked ahead for `concurrent` trials at once (None: unknown, as for 8)."""
    return max(1, min(MAX_DEPTH, (concurrent or 8) // 2))


class AskAhead(Generic[P]):
    """Up to `depth` of `ask()`'s plans asked in advance, `budget` plans in all.

    Args:
        ask: makes the next plan (one call at a time: this class never overlaps two).
        depth: plans to hold ready.
        budget: plans wanted in all; no more are asked.
        discard: called on each plan asked but never taken, at `close`.
    """

    def __init__(self, ask: Callable[[], P], *, depth: int, budget: int,
                 discard: Callable[[P], None] = lambda plan: None) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, but got {depth=}.")
        self._ask, self._discard = ask, discard
        self.depth, self._budget = depth, budget
        self._ready: deque[P] = deque()
        self._asking = threading.Lock()  # one ask at a time, whichever thread
        self._changed = threading.Condition()
        self._closed = False
        self._in_flight = 0  # asks the thread has started and not yet queued
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._fill, name="nas-ask-ahead", daemon=True)
        self._thread.start()

    def __call__(self) -> P | None:
        """The next plan: one asked ahead (or being asked), else asked now; None once `budget`
        plans were taken."""
        with self._changed:
            while not self._ready and self._in_flight and self._error is None:
                self._changed.wait()  # one is being asked: sooner here than an ask of our own
            if self._error is not None:
                raise self._error
            if self._ready:
                plan = self._ready.popleft()
                self._changed.notify_all()
                return plan
            if self._budget <= 0:
                return None
            self._budget -= 1
        with self._asking:
            return self._ask()

    def close(self) -> None:
        """Stop asking; plans asked but not taken are discarded."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()
        while self._ready:
            self._discard(self._ready.popleft())

    def _fill(self) -> None:
        while True:
            with self._changed:
                while not self._closed and (len(self._ready) >= self.depth or self._budget <= 0):
                    self._changed.wait()
                if self._closed:
                    return
                self._budget -= 1
                self._in_flight += 1
            try:
                with self._asking:
                    plan = self._ask()
            except BaseException as error:  # noqa: BLE001 - raised to the caller at its next call
                with self._changed:
                    self._error = error
                    self._in_flight -= 1
                    self._changed.notify_all()
                return
            with self._changed:
                self._ready.append(plan)
                self._in_flight -= 1
                self._changed.notify_all()
