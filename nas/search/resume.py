"""What survives a kill, in one place: the ordering every writer keeps, what a killed driver
can leave in the store, and how `nas launch` resumes from it (`resume`).

The contract (tests/test_crash_points.py SIGKILLs a driver at random moments, on SQLite and
PostgreSQL, runs it again each time, and checks it):

1. A trial's row is started before anything of it reaches Optuna's tables (the recorder's
   first write is `start_trial`); its epochs follow in order.
2. A trial's end is one transaction: its Optuna trial(s) told and stored, and its row
   finished (`TrialBatch._trial_end`, `WriteBehind.together`): a kill leaves both or neither.
3. Writes commit in the order they were queued, each commit a prefix of the queue
   (`nas.db.write_behind`): a kill loses a suffix, never a write from the middle.
4. Every write transaction is fenced by the experiment's lease (`nas.db.lease`): a driver
   that lost it (taken over after it froze) commits nothing more.
5. Unfinished work is planned again under its own identity: a grid point and a pilot's second
   seed on their planned seeds (`SearchController.enqueue_grid`), a race's round from the
   store (`nas.search.launch.run_race`), an ablation's variants on their seeds. A crash never
   changes which seeds an architecture runs, so architectures stay paired.

What a kill leaves, and what `resume` does with it, in this order:

- rows `running` whose Optuna trials were told: only from stores an older nas wrote (before
  rule 2): finished as their Optuna trial says (`SearchController.settle`), before
- rows still `running`: their trial died with the driver; marked `interrupted`
  (`mark_interrupted`) and run again, on their own seed;
- Optuna trials stored `RUNNING` (an older nas stored unfinished trials): their params asked
  again (`SearchController.recover_interrupted`);
- then the grid's unfinished points are enqueued (`enqueue_grid`).

Only the experiment's own driver, holding its lease, resumes it.
"""

from __future__ import annotations

from collections.abc import Callable

from nas.db import Store
from nas.db.write_behind import WriteBehind
from nas.search.controller import SearchController
from nas.trials.experiment import mark_interrupted


def resume(controller: SearchController, store: Store, experiment_id: int, writes: WriteBehind | None,
           log: Callable[[str], None]) -> int:
    """Bring a launch's store and studies back to a state it can go on from (see above); the
    trials a killed driver left running, which run again."""
    controller.settle(store, experiment_id)  # before the rows they settle could be marked interrupted
    controller.writes = writes
    stale = mark_interrupted(store, experiment_id)
    controller.recover_interrupted()
    if stale:
        log(f"resuming {controller.spec.name!r}: {stale} interrupted trial(s) will run again")
    controller.enqueue_grid()
    return stale
