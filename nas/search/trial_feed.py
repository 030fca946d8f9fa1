"""A study's trials as they finish, read without walking all of them.

The pruner's index (`nas.search.curves`) and the sampler's bounded history
(`nas.search.history`) keep up with a study from the trials that are new since their last look
or were not finished then. Listing the study's trials to find those (`get_all_trials`, even
without a deep copy) touches every trial object: in the driver of a 5,000-trial search that
list copy alone was a quarter of a millisecond per pruning decision and grew with the search
(benchmarks/driver_scale.py --profile). On the in-memory storage nas's live studies use, a trial
is looked up by number and id instead (O(1) each); another storage is listed as before (its
cache reads the unfinished trials in one query).
"""

from __future__ import annotations

import optuna
from optuna.storages import InMemoryStorage
from optuna.trial import FrozenTrial


class TrialFeed:
    """The trials of one study that finished since the last `read`, and those still running."""

    def __init__(self) -> None:
        self._upto = 0  # trial numbers below this have been looked at...
        self._unfinished: dict[int, int] = {}  # ...and these were not finished then: number -> trial id

    def read(self, study: optuna.Study) -> tuple[list[FrozenTrial], dict[int, FrozenTrial]]:
        """(the trials finished since the last read: those unfinished then by number, then the
        new ones by number; the trials not finished now, by number)."""
        storage, study_id = study._storage, study._study_id
        if not isinstance(storage, InMemoryStorage):
            return self._listed(storage.get_all_trials(study_id, deepcopy=False))
        finished: list[FrozenTrial] = []
        running: dict[int, FrozenTrial] = {}
        for number, trial_id in sorted(self._unfinished.items()):
            trial = storage.get_trial(trial_id)
            if trial.state.is_finished():
                del self._unfinished[number]
                finished.append(trial)
            else:
                running[number] = trial
        while True:
            try:
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self._upto)
            except KeyError:  # no trial with this number yet
                break
            trial = storage.get_trial(trial_id)
            if trial.state.is_finished():
                finished.append(trial)
            else:
                self._unfinished[self._upto] = trial_id
                running[self._upto] = trial
            self._upto += 1
        return finished, running

    def _listed(self, trials: list[FrozenTrial]) -> tuple[list[FrozenTrial], dict[int, FrozenTrial]]:
        finished: list[FrozenTrial] = []
        running: dict[int, FrozenTrial] = {}
        for number in [*sorted(self._unfinished), *range(self._upto, len(trials))]:
            trial = trials[number]
            if trial.state.is_finished():
                self._unfinished.pop(number, None)
                finished.append(trial)
            else:
                self._unfinished[number] = -1  # listed by number: the id is not needed
                running[number] = trial
        self._upto = len(trials)
        return finished, running
