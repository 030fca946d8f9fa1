"""The median/percentile pruner with nas's noise margin, at a cost that does not grow with the
search: the finished trials' curves are indexed per epoch as they finish.

Optuna's `PercentilePruner` walks every completed trial at every report, and nas's rule
(`nas.search.pruning.NoiseMargin.decide`) would walk them again whenever Optuna said stop: a
few ms per epoch at 10,000 trials, per trial the most of the driver's time after sampling.
`IndexedPercentilePruner` decides as `PercentilePruner` followed by `NoiseMargin.decide`
(exactly below 100 pairs per epoch, the rank gate at most 1% stale above: tests/test_driver_scale.py
checks it against both on random studies),
from an index it keeps up to date itself: at each decision it looks only at the trials that
are new since the last one or were not finished then (Optuna's own `_CachedStorage` reads the
same way), so its cost does not grow with the finished trials:

- per epoch, the completed values sorted (the percentile threshold: two lookups);
- per epoch and architecture, running sums of its seeds' spread (the seed noise: O(1));
- per epoch, the (value, final) pairs the rank gate fits, fitted only for a trial the
  threshold and the gap already stop, and again only once the pairs grew by 1% (below 100
  pairs: at every new one, so a small search decides exactly as the walk; above, the gate may
  be up to 1% of the trials stale — O(n log n) per refit, a few hundred refits per epoch over
  10,000 trials).

Each stop's `PruneReason` waits in `reasons`, by trial number, for the controller to store.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import optuna
from optuna.pruners import PercentilePruner
from optuna.pruners._percentile import _get_best_intermediate_result_over_steps, _is_first_in_interval_step
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.search.pruning import NoiseMargin, PruneReason, percentile, rank_gate
from nas.search.trial_feed import TrialFeed

REFIT_GROWTH = 0.01  # the rank gate's staleness bound: refitted when an epoch's pairs grew by 1%

@dataclass
class _Spread:
    """Running count, mean and sum of squared deviations (Welford) of some values."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)


@dataclass
class _Epoch:
    """The completed trials' values at one epoch."""

    sorted_values: list[float] = field(default_factory=list)  # finite, ascending
    reported: int = 0  # completed trials with a value here, NaN included (Optuna's n_min_trials counts those)
    by_arch: dict[str, _Spread] = field(default_factory=dict)  # of each architecture's seeds
    seed_m2: float = 0.0  # sum over architectures of their seeds' m2
    seed_dof: int = 0  # sum over architectures of (seeds - 1)
    # the (value here, final value) pairs, as two lists the rank gate fits without copying them
    values: list[float] = field(default_factory=list)
    finals: list[float] = field(default_factory=list)

    def add(self, value: float, arch: str, final: float | None) -> None:
        bisect.insort(self.sorted_values, value)
        seeds = self.by_arch.setdefault(arch, _Spread())
        old_m2, old_n = seeds.m2, seeds.n
        seeds.add(value)
        self.seed_m2 += seeds.m2 - old_m2
        self.seed_dof += 1 if old_n >= 1 else 0
        if final is not None and math.isfinite(final):
            self.values.append(value)
            self.finals.append(final)

    fit: tuple[bool, float, float, int] | None = None  # the rank gate's last fit (`rank_gate`)

    def gate(self) -> tuple[bool, float, float, int]:
        """The rank gate's fit on the pairs, refitted once they grew by REFIT_GROWTH (every new
        pair below 100): a fit is O(n log n), and refitting at every stop made the driver's
        cost per trial grow with the search (benchmarks/driver_scale.py: 5 -> 28 ms at 10,000)."""
        fitted = self.fit[3] if self.fit is not None else -1
        if self.fit is None or len(self.values) - fitted >= max(1.0, REFIT_GROWTH * fitted):
            self.fit = rank_gate(self.values, self.finals)
        return self.fit


class IndexedPercentilePruner(PercentilePruner):
    """Optuna's `PercentilePruner` (median: percentile 50), then nas's noise margin, decided
    from an index of the study's completed trials.

    Args:
        percentile, n_startup_trials, n_warmup_steps, interval_steps, n_min_trials: as Optuna's.
        margin: nas's rule on top (None: Optuna's rule alone).
    """

    def __init__(self, percentile: float, n_startup_trials: int = 5, n_warmup_steps: int = 0,
                 interval_steps: int = 1, *, n_min_trials: int = 1, margin: NoiseMargin | None = None) -> None:
        super().__init__(percentile, n_startup_trials, n_warmup_steps, interval_steps, n_min_trials=n_min_trials)
        self.margin = margin
        self._epochs: dict[int, _Epoch] = {}
        self._completed = 0
        self._feed = TrialFeed()  # the trials finished since the last decision
        self.reasons: dict[int, PruneReason] = {}  # why each trial it stopped was stopped, by number

    def _sync(self, study: optuna.Study) -> None:
        """Index the trials completed since the last decision (one pruner serves one study)."""
        for trial in self._feed.read(study)[0]:
            if trial.state == TrialState.COMPLETE:
                self._add(trial)

    def _add(self, trial: FrozenTrial) -> None:
        self._completed += 1
        arch = trial.user_attrs.get("arch_hash", f"#{trial.number}")
        for step, value in trial.intermediate_values.items():
            epoch = self._epochs.setdefault(step, _Epoch())
            epoch.reported += 1
            if value is not None and not math.isnan(value):
                epoch.add(value, arch, trial.value)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        # PercentilePruner.prune's ladder, with the index in place of every completed trial
        self._sync(study)
        if self._completed == 0 or self._completed < self._n_startup_trials:
            return False
        step = trial.last_step
        if step is None or step < self._n_warmup_steps:
            return False
        if not _is_first_in_interval_step(step, trial.intermediate_values.keys(), self._n_warmup_steps,
                                          self._interval_steps):
            return False
        direction = study.direction
        best = float(_get_best_intermediate_result_over_steps(trial, direction))
        if math.isnan(best):
            self.reasons[trial.number] = PruneReason("optuna", step, best, pruner="PercentilePruner")
            return True
        epoch = self._epochs.get(step)
        if epoch is None or epoch.reported < self._n_min_trials or not epoch.sorted_values:
            return False  # as Optuna: too few trials reported here, or only NaN
        maximize = direction == StudyDirection.MAXIMIZE
        threshold = percentile(epoch.sorted_values, 100 - self._percentile if maximize else self._percentile)
        if not (best < threshold if maximize else best > threshold):
            return False
        if self.margin is None:
            self.reasons[trial.number] = PruneReason("optuna", step, best, threshold, self._percentile,
                                                     len(epoch.sorted_values), pruner="PercentilePruner")
            return True
        reason = self.margin.judge(step, best, epoch.sorted_values, epoch.seed_m2, epoch.seed_dof, epoch.gate,
                                   maximize)
        if reason is None:
            return False
        self.reasons[trial.number] = reason
        return True


def indexed(pruner: optuna.pruners.BasePruner, margin: NoiseMargin | None) -> optuna.pruners.BasePruner:
    """`pruner` as an `IndexedPercentilePruner` (with `margin`) when it is Optuna's percentile
    or median pruner, also inside a `PatientPruner` (there without a margin); else as it is."""
    if type(pruner) in (PercentilePruner, optuna.pruners.MedianPruner):
        return IndexedPercentilePruner(pruner._percentile, pruner._n_startup_trials, pruner._n_warmup_steps,
                                       pruner._interval_steps, n_min_trials=pruner._n_min_trials, margin=margin)
    if isinstance(pruner, optuna.pruners.PatientPruner) and pruner._wrapped_pruner is not None:
        pruner._wrapped_pruner = indexed(pruner._wrapped_pruner, None)
    return pruner
