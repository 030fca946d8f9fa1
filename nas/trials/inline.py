"""A batch of trials run in this process, one at a time: Ray Tune's part played sequentially.

For replays of recorded results (`nas.trials.replay`, `benchmarks/decision_quality.py`): a
search replayed a thousand times cannot start Ray each time, and needs nothing of it but the
order of calls. `run_inline` makes the calls `nas.trials.tune.run_batch`'s glue makes, in the
order Tune makes them (the scheduler's stop decision before the result callbacks; a trial ends
when its result says `done` or it is stopped), so the driver's parts (the search controller,
its pruner, the recorder, the race) run as they do under Tune, with `max_concurrent` 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from nas.trials.batch import TrialBatch


class Run(Protocol):
    """One trial's results, an epoch per call (`nas.trials.runner.TrialRun`'s interface)."""

    def next_result(self) -> dict[str, Any]: ...


def run_inline(batch: TrialBatch, trials: int, make_run: Callable[[dict[str, Any]], Run]) -> None:
    """Run up to `trials` of `batch`'s plans, each to its end or its stop, in this process;
    `make_run(config)` plays a trial from its Ray Tune config. A run that raises is the
    trial's error, as a Tune worker's exception is."""
    for number in range(trials):
        trial_id = f"inline_{number:06d}"
        config = batch.suggest(trial_id)
        if config is None:
            return
        try:
            run = make_run(config)
        except Exception as error:  # noqa: BLE001 - the trial's failure, recorded as under Tune
            batch.error(trial_id, f"{type(error).__name__}: {error}")
            continue
        while True:
            try:
                result = run.next_result()
            except Exception as error:  # noqa: BLE001 - the worker's exception: the trial's error
                batch.error(trial_id, f"{type(error).__name__}: {error}")
                break
            stopped = batch.stop(trial_id, result)  # the driver's own errors propagate, as under Tune
            batch.result(trial_id, result)
            if stopped or result.get("done"):
                batch.complete(trial_id)
                break
