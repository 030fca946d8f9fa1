"""A sampler that sees a bounded history, so an ask costs the same at 10,000 trials as at 100.

TPE, and Optuna's inference of the search space under it, walk every finished trial on every
ask: measured in memory (multi-objective TPE over cifar_fast's space), an ask took 9 ms at 100
trials, 62 ms at 1,000 and 1.5 s at 10,000 with independent sampling, 7, 23 and 312 ms with
multivariate sampling. `BoundedHistory` gives the sampler a view of the study that holds the
`recent` most recently finished trials, the `elite` best of all complete ones (by
value, or the first non-domination fronts for several objectives; recomputed every `refresh`
finished trials) and every unfinished trial (TPE's constant liar counts the running ones).

The view is kept up to date from the trials new since the last ask or unfinished then, so an
ask never walks every trial. A search with up to `recent` + `elite` finished trials is sampled
exactly as without the bound; "recent" counts in the order trials finished.
Above it, TPE still sees where the best trials lie (its "good" group is at most 25 trials,
all of them elites) and models the rest from the recent ones, as a sliding-window TPE does.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.search.trial_feed import TrialFeed

RECENT = 500  # finished trials the sampler sees, the newest
ELITE = 50  # and the best of all finished trials
REFRESH = 50  # finished trials between two elite selections


class BoundedHistory(BaseSampler):
    """`sampler`, shown the recent and the best trials of a study rather than all of them.

    Args:
        sampler: the sampler that decides (e.g. TPE).
        recent: the newest finished trials it sees.
        elite: the best finished trials it sees besides them.
        refresh: how many newly finished trials before the elite is chosen again.
    """

    def __init__(self, sampler: BaseSampler, *, recent: int = RECENT, elite: int = ELITE,
                 refresh: int = REFRESH) -> None:
        if recent < 1 or elite < 0 or refresh < 1:
            raise ValueError(f"recent and refresh must be at least 1 and elite at least 0, but got {recent=}, "
                             f"{elite=}, {refresh=}.")
        self.sampler = sampler
        self.recent, self.elite, self.refresh = recent, elite, refresh
        # what the study held at the last ask, kept up to date from the trials new since then
        # or unfinished then (one sampler serves one study): no ask walks every trial
        self._feed = TrialFeed()
        self._finished: deque[FrozenTrial] = deque(maxlen=recent)  # the newest, in the order they finished
        self._complete: list[FrozenTrial] = []
        self._n_finished = 0
        self._elite: list[FrozenTrial] = []
        self._elite_at = -refresh  # complete trials when the elite was chosen

    def view(self, study: optuna.Study) -> optuna.Study:
        """The study as the sampler sees it: itself while small, else a bounded view."""
        finished, running = self._feed.read(study)
        for trial in finished:
            self._finished.append(trial)
            self._n_finished += 1
            if trial.state == TrialState.COMPLETE and trial.values is not None:
                self._complete.append(trial)
        if self._n_finished <= self.recent + self.elite:
            return study
        if len(self._complete) - self._elite_at >= self.refresh:
            self._elite = _best(self._complete, study.directions, self.elite)
            self._elite_at = len(self._complete)
        shown = {t.number: t for t in self._elite}
        shown.update((t.number, t) for t in self._finished)
        shown.update(running)
        return _StudyView(study, [shown[n] for n in sorted(shown)])

    # -- BaseSampler: the decisions see the view; the bookkeeping sees the study --

    def infer_relative_search_space(self, study, trial):
        return self.sampler.infer_relative_search_space(self.view(study), trial)

    def sample_relative(self, study, trial, search_space):
        return self.sampler.sample_relative(self.view(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.sampler.sample_independent(self.view(study), trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


def _best(complete: list[FrozenTrial], directions: list[StudyDirection], k: int) -> list[FrozenTrial]:
    """The `k` best complete trials: by value, or by non-domination front for several objectives."""
    if not complete or k == 0:
        return []
    signs = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in directions])
    losses = np.array([t.values for t in complete], dtype=float) * signs  # lower is better
    if len(directions) == 1:
        order = np.argsort(losses[:, 0], kind="stable")
    else:
        from optuna.study._multi_objective import _fast_non_domination_rank

        ranks = _fast_non_domination_rank(losses, n_below=k)
        order = np.lexsort((losses[:, 0], ranks))  # front by front; within one, by the first objective
    return [complete[i] for i in order[:k]]


class _StudyView:
    """A study whose trial listings are a given subset; everything else is the study's."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        self._view_of = study
        self._view_trials = trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._view_of, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list[FrozenTrial]:
        import copy

        trials = self._view_trials if states is None else [t for t in self._view_trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else list(trials)

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self._get_trials()
