"""Pruning that respects the recipe and says when it is safe.

- **Never inside the LR warm-up.** While the learning rate still ramps up, every net is near
  chance and early curves do not rank architectures. Unless the YAML sets `n_warmup_steps`,
  the first epoch a pruner may decide on is the first one that ends after the warm-up
  (`first_prunable_epoch`), for every pruner kind.
- **Only clearly below the threshold.** A median or percentile pruner stops a trial only when
  its value is below the threshold by more than `margin` standard errors of the noise at that
  epoch (`NoiseMargin`): seed noise pooled over the study's repeated architectures (until
  there are enough repeats, the spread across all trials, its upper bound) plus the binomial
  noise of evaluating on `eval_images` images. `margin: 0` is Optuna's own rule; the default is 2.
- **Only where the curve predicts.** With a margin, a trial is also never stopped at an epoch
  whose values do not yet rank the finished trials' final accuracies beyond chance
  (`curve_ranks_finals`: Spearman's rho over at least 6 of them, the lower end of its 95%
  interval above 0), so a late starter is not stopped on a curve that says nothing yet.
- **How early curves rank the finished ones.** Per epoch, Spearman's rank correlation between
  the pruned metric at that epoch and the final accuracy, over the completed search trials,
  with a bootstrap 95% CI (`curve_rank_correlation`; Fisher's z above 500 trials): where it
  is high and its CI narrow, stopping on the curve loses little; where it straddles 0, pruning
  acts on noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as scipy_stats
from sqlalchemy import select

from nas.config.pruner import PrunerSpec
from nas.db import Store
from nas.db.schema import EpochResult, Phase, Trial, TrialStatus
from nas.training.recipe import Recipe
from nas.trials.plan import judged_accuracy

WARMUP_KINDS = ("median", "percentile")  # Optuna pruners with an n_warmup_steps option
MARGIN_KINDS = ("median", "percentile")  # pruners with a threshold a margin can be measured from
DEFAULT_MARGIN = 2.0  # standard errors: the smallest that kept the best trial in 98% of replays (benchmarks/pruning_margin.py)
# pooled seed-spread degrees of freedom below which it is not trusted alone (its relative SE,
# sqrt(2 / dof), is still above 80%): the spread across trials bounds it from above instead
MIN_SEED_DOF = 3
# finished trials an epoch's curve must rank (`curve_ranks_finals`) before nas's rule prunes at it
MIN_RANK_TRIALS = 6
BOOTSTRAP_SAMPLES = 1000  # resamples of the trials for each epoch's CI
# pairs above which an epoch's CI is Fisher's z interval, not the bootstrap: from a few hundred
# pairs on the two agree to ~0.01 (tests/test_pruning.py), while resampling 60,000 trials
# 1,000 times takes a minute an epoch, and the dashboard reads it live
BOOTSTRAP_MAX_TRIALS = 500


def first_prunable_epoch(recipe: Recipe) -> int:
    """The first epoch (from 0) whose end lies after the LR warm-up.

    After epoch e, (e + 1) / epochs of the steps are done; the warm-up is `recipe.warmup` of
    them, so e + 1 >= warmup * epochs: e.g. 24 epochs with warm-up 0.2 (4.8 epochs) -> 4.
    """
    return max(0, math.ceil(recipe.warmup * recipe.epochs - 1e-9) - 1)


def pruning_gate(pruner: PrunerSpec, recipe: Recipe) -> int:
    """The first epoch the pruner may stop a trial at: its `n_warmup_steps` when the YAML sets
    one (also on the pruner a patient pruner wraps), else the end of the LR warm-up."""
    for spec in (pruner, pruner.wrapped):
        if spec is not None and "n_warmup_steps" in dict(spec.options):
            return int(dict(spec.options)["n_warmup_steps"])
    return first_prunable_epoch(recipe)


def with_warmup(pruner: PrunerSpec, recipe: Recipe) -> PrunerSpec:
    """`pruner` with `n_warmup_steps` set to the warm-up's end where its kind takes one and the
    YAML left it out, so Optuna's own bookkeeping starts where the gate does."""
    wrapped = with_warmup(pruner.wrapped, recipe) if pruner.wrapped is not None else None
    options = dict(pruner.options)
    if pruner.kind in WARMUP_KINDS and "n_warmup_steps" not in options:
        options["n_warmup_steps"] = first_prunable_epoch(recipe)
    return replace(pruner, options=tuple(sorted(options.items())), wrapped=wrapped)


# ----------------------------------------------------------------------------- the noise margin


@dataclass(frozen=True)
class NoiseMargin:
    """The rule on top of a median/percentile pruner's: prune only when clearly below.

    Args:
        percentile: the pruner's (median: 50); of the other trials' values at the epoch.
        margin: standard errors of the noise by which the trial must be below it.
        eval_images: the size of the set the pruned metric is measured on.
    """

    percentile: float
    margin: float
    eval_images: int
    rank_gate: bool = True  # also wait until the epoch's curve ranks the finished trials (`curve_ranks_finals`)

    @classmethod
    def of(cls, pruner: PrunerSpec, eval_images: int) -> NoiseMargin | None:
        """The margin rule of `pruner` (None for kinds without a threshold, or margin 0)."""
        if pruner.kind not in MARGIN_KINDS:
            return None
        options = dict(pruner.options)
        margin = float(options.get("margin", DEFAULT_MARGIN))
        if margin == 0:
            return None
        return cls(float(options.get("percentile", 50.0)), margin, eval_images)

    def prunes(self, completed, step: int, value: float, maximize: bool) -> bool:
        """The rule, once Optuna's pruner says stop: whether a trial whose best value so far is
        `value` at epoch `step` is stopped, given the study's completed trials (their
        intermediate values and final value)."""
        others, by_arch = values_at(completed, step)
        if self.rank_gate and not curve_ranks_finals(*curve_vs_final(completed, step)):
            return False
        return self.clearly_worse(value, others, by_arch, maximize)

    def threshold(self, values: list[float], maximize: bool) -> float:
        # as Optuna's PercentilePruner: for a maximised value the top `percentile` survive
        return float(np.percentile(values, 100 - self.percentile if maximize else self.percentile))

    def noise(self, value: float, others: list[float], by_arch: dict[str, list[float]]) -> float:
        """The standard deviation of one trial's value at an epoch: seed noise plus the binomial
        evaluation noise. The seed noise is the seeds' spread pooled over the architectures with
        several trials there, once that has MIN_SEED_DOF degrees of freedom; before (a search
        with few or no repeats cannot tell seed noise from architecture differences) it is at
        least the spread of all the completed trials' values there, an upper bound, so that the
        pruner does not stop trials on what may be seed noise."""
        dof = sum(len(v) - 1 for v in by_arch.values() if len(v) > 1)
        seed_m2 = sum(float(np.var(v, ddof=1)) * (len(v) - 1) for v in by_arch.values() if len(v) > 1)
        spread_var = float(np.var(others, ddof=1)) if len(others) > 1 else 0.0
        return self.noise_of(value, seed_m2, dof, spread_var, len(others))

    def noise_of(self, value: float, seed_m2: float, seed_dof: int, spread_var: float, n_others: int) -> float:
        """`noise` from running sums: the seeds' sum of squared deviations and degrees of freedom
        pooled over architectures, and the variance of all `n_others` values (what
        `nas.search.curves` keeps per epoch)."""
        seed_var = seed_m2 / seed_dof if seed_dof else 0.0
        if seed_dof < MIN_SEED_DOF and n_others > 1:
            seed_var = max(seed_var, spread_var)
        p = min(max(value, 0.0), 1.0)
        return math.sqrt(seed_var + p * (1 - p) / max(1, self.eval_images))

    def clearly_worse(self, value: float, others: list[float], by_arch: dict[str, list[float]],
                      maximize: bool) -> bool:
        """Whether `value` is beyond the threshold of `others` by more than the margin."""
        if not others:
            return False
        threshold = self.threshold(others, maximize)
        gap = self.margin * self.noise(value, others, by_arch)
        return value < threshold - gap if maximize else value > threshold + gap


def values_at(study_trials, step: int) -> tuple[list[float], dict[str, list[float]]]:
    """The completed trials' values at `step`, and the same grouped by architecture hash."""
    values, by_arch = [], {}
    for trial in study_trials:
        value = trial.intermediate_values.get(step)
        if value is None or not math.isfinite(value):
            continue
        values.append(value)
        by_arch.setdefault(trial.user_attrs.get("arch_hash", f"#{trial.number}"), []).append(value)
    return values, by_arch


def curve_vs_final(study_trials, step: int) -> tuple[list[float], list[float]]:
    """The completed trials' values at `step` and their final values, paired."""
    pairs = [(t.intermediate_values.get(step), t.value) for t in study_trials]
    pairs = [(v, f) for v, f in pairs if v is not None and f is not None and math.isfinite(v) and math.isfinite(f)]
    return [v for v, _ in pairs], [f for _, f in pairs]


def curve_ranks_finals(values: list[float], finals: list[float]) -> bool:
    """Whether the finished trials' values at an epoch rank their final values beyond chance:
    over at least MIN_RANK_TRIALS of them, the lower end of the 95% interval of Spearman's rho
    (`fisher_interval`) is above 0. Until then an early curve may be a late starter's (a deeper
    net near chance after the warm-up that finishes among the best), and stopping on it is a
    guess."""
    n = len(values)
    if n < MIN_RANK_TRIALS:
        return False
    rho = spearman(values, finals)
    if math.isnan(rho):
        return False
    return fisher_interval(rho, n)[0] > 0


def fisher_interval(rho: float, n: int) -> tuple[float, float]:
    """The 95% interval of Spearman's rho over `n` pairs by Fisher's z, with the SE
    sqrt(1.06 / (n - 3)) of Fieller, Hartley & Pearson (1957); n > 3."""
    centre = math.atanh(min(max(rho, -1 + 1e-9), 1 - 1e-9))
    half = 1.96 * math.sqrt(1.06 / (n - 3))
    return math.tanh(centre - half), math.tanh(centre + half)


# ----------------------------------------------------------------------------- is pruning safe?


@dataclass(frozen=True)
class EpochCorrelation:
    """How one epoch's curve value ranks the trials' final accuracy."""

    epoch: int  # from 0
    trials: int  # completed search trials with a value at this epoch
    rho: float  # Spearman's rank correlation; nan with fewer than 3 trials or no spread
    ci_low: float  # 95% bootstrap percentile interval (Fisher z above BOOTSTRAP_MAX_TRIALS); nan when rho is
    ci_high: float


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho (ties get average ranks); nan with < 3 pairs or a constant side."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(scipy_stats.spearmanr(x, y).statistic)


def rank_correlations(curves: list[list[float | None]], finals: list[float], *,
                      samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> list[EpochCorrelation]:
    """Per epoch, rho between `curves[i][epoch]` and `finals[i]` with a bootstrap CI
    (`fisher_interval` over more than `BOOTSTRAP_MAX_TRIALS` pairs).

    Args:
        curves: per trial, its metric at each epoch (None where not measured).
        finals: per trial, its final accuracy.
        samples: bootstrap resamples of the trials (with replacement).
        seed: of the resampling, so the same store gives the same CI.
    """
    rng = np.random.default_rng(seed)
    epochs = max((len(c) for c in curves), default=0)
    out = []
    for epoch in range(epochs):
        pairs = [(c[epoch], f) for c, f in zip(curves, finals)
                 if epoch < len(c) and c[epoch] is not None and f is not None]
        x, y = [p[0] for p in pairs], [p[1] for p in pairs]
        rho = spearman(x, y)
        low = high = math.nan
        if not math.isnan(rho):
            low, high = (fisher_interval(rho, len(pairs)) if len(pairs) > BOOTSTRAP_MAX_TRIALS else
                         _bootstrap_interval(np.asarray(x, dtype=float), np.asarray(y, dtype=float), samples, rng))
        out.append(EpochCorrelation(epoch, len(pairs), rho, low, high))
    return out


def _bootstrap_interval(x: np.ndarray, y: np.ndarray, samples: int, rng: np.random.Generator) -> tuple[float, float]:
    """The 95% percentile interval of Spearman's rho over `samples` resamples of the pairs;
    resamples with a constant side (no rho) are left out. Resamples are ranked in blocks
    (Pearson's r of average ranks is Spearman's rho); the same draws, and so the same
    interval, as resampling one at a time, 10-100x faster."""
    n, draws = len(x), []
    block = max(1, 1_000_000 // n)
    for start in range(0, samples, block):
        pick = rng.integers(0, n, (min(block, samples - start), n))
        rx, ry = scipy_stats.rankdata(x[pick], axis=1), scipy_stats.rankdata(y[pick], axis=1)
        rx -= rx.mean(axis=1, keepdims=True)
        ry -= ry.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
        draws.append(r[np.isfinite(r)])
    kept = np.concatenate(draws)
    if not len(kept):
        return math.nan, math.nan
    low, high = np.percentile(kept, [2.5, 97.5])
    return float(low), float(high)


def curve_rank_correlation(store: Store, experiment_id: int, metric: str = "val_acc") -> list[EpochCorrelation]:
    """`rank_correlations` over an experiment's completed search trials, from the store (one
    query for every curve: 60,000 trials' epochs in about a second)."""
    trial, epoch = Trial.__table__, EpochResult.__table__
    query = (
        select(epoch.c.trial_id, epoch.c[metric], trial.c.final_val_acc, trial.c.final_test_acc)
        .select_from(epoch.join(trial, trial.c.id == epoch.c.trial_id))
        .where(trial.c.experiment_id == experiment_id, trial.c.phase == Phase.SEARCH,
               trial.c.status == TrialStatus.COMPLETED)
        .order_by(epoch.c.trial_id, epoch.c.epoch)
    )
    curves: dict[int, list[float | None]] = {}
    finals: dict[int, float] = {}
    with store.engine.connect() as connection:
        for trial_id, value, val_acc, test_acc in connection.execute(query).fetchall():  # all at once: 2x faster
            final = judged_accuracy(val_acc, test_acc)
            if final is not None:
                curves.setdefault(trial_id, []).append(value)
                finals[trial_id] = final
    return rank_correlations(list(curves.values()), [finals[i] for i in curves])
