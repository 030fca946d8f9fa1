"""The pruning rule, in one home: when nas stops a search trial, and why.

- **Never inside the LR warm-up.** While the learning rate still ramps up, every net is near
  chance and early curves do not rank architectures. Unless the YAML sets `n_warmup_steps`,
  the first epoch a pruner may decide on is the first one that ends after the warm-up
  (`first_prunable_epoch`), for every pruner kind.
- **Only clearly below the threshold.** Once Optuna's median or percentile rule says stop, nas
  stops the trial only when its best value so far lies below the threshold (the percentile of
  the completed trials at that epoch) by more than the seed noise allows: the gap is
  t(dof, 1 - tail) x s, where s is the seeds' spread at that epoch pooled over the
  architectures that ran several seeds (a search's repeats, or its pilot: `pilot_size`), dof
  its degrees of freedom, and tail = Phi(-margin) (`margin: 2`, the default: a one-sided 2.3%
  tail). So an architecture whose true value at the epoch is at the threshold is stopped with
  probability at most `tail` (Gaussian seed noise, the threshold taken as given). On a fixed
  val split the seed spread already holds the evaluation noise, so nothing is added for it
  (noise counted once). Under MIN_SEED_DOF degrees of freedom the noise is not known, and
  nas's rule keeps the trial. `margin: 0` is Optuna's own rule.
- **Only where the curve predicts.** With a margin, a trial is also never stopped at an epoch
  whose values do not yet rank the finished trials' final accuracies beyond chance
  (`curve_ranks_finals`: Spearman's rho over at least 6 of them, the lower end of its 95%
  interval above 0), so a late starter is not stopped on a curve that says nothing yet.
- **The pilot.** A search with one seed per architecture cannot tell seed noise from the
  architectures' differences, so its first `pilot` architectures also run a second seed
  (a grid runs them first, a sampler as it meets them): from then on the rule knows the
  noise. By default (median/percentile pruners with a margin and `repeats: 1`) PILOT of them,
  and only in a search of at least PILOT_PAYS_FROM architectures, the length from which the
  pruning it enables repays its extra trials; a shorter one prunes only once a sampler's
  re-sampled architectures give the noise. `pilot: N` in the YAML runs N whatever the length,
  `pilot: 0` none.
- **Why.** Every stop comes with a `PruneReason` (the epoch, the value, the threshold, the
  noise, the gap, the rank gate's state), stored with the trial and shown by `nas status` and
  the dashboard.

`NoiseMargin.decide` states the rule over the completed trials; `nas.search.curves` decides
the same from an index, at a cost that does not grow with the search.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, fields, replace

from scipy import special as scipy_special

from nas.config.pruner import PrunerSpec
from nas.stats import fisher_interval, spearman
from nas.training.recipe import Recipe

WARMUP_KINDS = ("median", "percentile")  # Optuna pruners with an n_warmup_steps option
MARGIN_KINDS = ("median", "percentile")  # pruners with a threshold a margin can be measured from
# standard errors, read as a one-sided normal tail (2: 2.3%); chosen on the pruning_curves
# recording (benchmarks/pruning_margin.py), reported on page_post4's (benchmarks/decision_quality.py)
DEFAULT_MARGIN = 2.0
# pooled seed-spread degrees of freedom from which the rule prunes (the pilot gives PILOT)
MIN_SEED_DOF = 3
PILOT = 3  # architectures a search with one seed each also runs on a second seed (dof 3)
# The pilot pays for itself only in a long search: its PILOT extra trials cost PILOT / N of an
# N-architecture search, and the default margin's pruning saved 0.69% of the epochs on
# recording A (`benchmarks/pruning_margin.py --db curves.db`: margin_2_epoch_share=0.993), so
# by default it runs from PILOT / 0.0069 architectures on (that script's RESULT
# pilot_pays_from=433). Chosen on A, reported on page_post4's recording (decision_quality.py).
PILOT_PAYS_FROM = 433
# finished trials an epoch's curve must rank (`curve_ranks_finals`) before nas's rule prunes at it
MIN_RANK_TRIALS = 6


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


def pilot_size(pruner: PrunerSpec, repeats: int, architectures: int) -> int:
    """Architectures of the search that run a second seed so the margin knows the seed noise:
    the pruner's `pilot` when set, else PILOT where the rule needs it (a median/percentile
    pruner with a margin), nothing else gives it (one seed per architecture) and the search
    plans enough `architectures` for its pruning to repay it (PILOT_PAYS_FROM)."""
    options = dict(pruner.options)
    needs = pruner.kind in MARGIN_KINDS and float(options.get("margin", DEFAULT_MARGIN)) > 0
    if not needs:
        return 0
    if "pilot" in options:
        return int(options["pilot"])
    return PILOT if repeats == 1 and architectures >= PILOT_PAYS_FROM else 0


# ----------------------------------------------------------------------------- the rule


@dataclass(frozen=True)
class PruneReason:
    """Why a trial was stopped: what the rule saw at that epoch."""

    rule: str  # "margin" (Optuna's threshold, the seed-noise gap, the rank gate) | "optuna" (its rule alone)
    epoch: int  # from 0
    value: float  # the trial's best value so far (what Optuna's rule compares)
    threshold: float = math.nan  # the percentile of the completed trials' values at the epoch
    percentile: float = math.nan  # of the threshold (median: 50)
    completed: int = 0  # completed trials with a value at the epoch
    margin: float = math.nan  # standard errors (a one-sided normal tail of Phi(-margin))
    seed_sd: float = math.nan  # the pooled seed spread at the epoch
    seed_dof: int = 0  # its degrees of freedom
    gap: float = math.nan  # t(seed_dof, 1 - tail) x seed_sd: how far below the threshold it had to be
    rank_rho: float = math.nan  # Spearman's rho of the epoch's values with the finals (the rank gate)
    rank_low: float = math.nan  # the lower end of its 95% interval (> 0: the gate is open)
    rank_trials: int = 0  # finished trials it was measured over
    pruner: str = ""  # the Optuna pruner's class

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items()
                           if not (isinstance(v, float) and math.isnan(v))}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> PruneReason | None:
        """The stored reason (None for a trial stored without one, or one not readable)."""
        try:
            data = json.loads(text or "")
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError):
            return None

    def text(self) -> str:
        """One line for a reader, e.g. `epoch 3: 41.2% < median 47.9% - 3.2 pts (seed sd 0.9
        pts, 3 dof, margin 2); curve ranks finals (rho 0.71, CI low 0.21, 9 trials)`."""
        where = f"epoch {self.epoch + 1}: {_pct(self.value)}"
        if math.isnan(self.threshold):
            return f"{where} ({self.pruner or 'the pruner'}'s own rule)"
        bar = "median" if self.percentile == 50 else f"{self.percentile:g}th percentile"
        if self.rule != "margin":
            return f"{where} below the {bar} {_pct(self.threshold)} of {self.completed} trials (Optuna's rule, no margin)"
        return (f"{where} < {bar} {_pct(self.threshold)} - {100 * self.gap:.1f} pts (seed sd "
                f"{100 * self.seed_sd:.1f} pts, {self.seed_dof} dof, margin {self.margin:g}); curve ranks "
                f"finals (rho {self.rank_rho:.2f}, CI low {self.rank_low:.2f}, {self.rank_trials} trials)")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


@functools.lru_cache(maxsize=1024)
def _t_quantile(margin: float, dof: int) -> float:
    # scipy.special's stdtrit is what scipy.stats.t.ppf computes, without the ~1 ms of the
    # distribution machinery per call (a new dof at almost every stop of a long search)
    return float(scipy_special.stdtrit(dof, scipy_special.ndtr(margin)))


def seed_gap(margin: float, seed_m2: float, seed_dof: int) -> tuple[float, float]:
    """(the pooled seed sd, the gap t(dof, Phi(margin)) x sd) from the seeds' pooled sum of
    squared deviations; the gap is inf under MIN_SEED_DOF (the noise is not known)."""
    if seed_dof < MIN_SEED_DOF:
        return (math.sqrt(seed_m2 / seed_dof) if seed_dof else math.nan), math.inf
    sd = math.sqrt(seed_m2 / seed_dof)
    return sd, _t_quantile(margin, seed_dof) * sd


@dataclass(frozen=True)
class NoiseMargin:
    """nas's rule on top of a median/percentile pruner's: prune only when clearly below.

    Args:
        percentile: the pruner's (median: 50); of the other trials' values at the epoch.
        margin: standard errors of the seed noise, read as a one-sided normal tail.
        rank_gate: also wait until the epoch's curve ranks the finished trials.
    """

    percentile: float
    margin: float
    rank_gate: bool = True

    @classmethod
    def of(cls, pruner: PrunerSpec) -> NoiseMargin | None:
        """The margin rule of `pruner` (None for kinds without a threshold, or margin 0)."""
        if pruner.kind not in MARGIN_KINDS:
            return None
        options = dict(pruner.options)
        margin = float(options.get("margin", DEFAULT_MARGIN))
        if margin == 0:
            return None
        return cls(float(options.get("percentile", 50.0)), margin)

    def threshold_of(self, sorted_values: list[float], maximize: bool) -> float:
        """As Optuna's PercentilePruner: for a maximised value the top `percentile` survive."""
        return percentile(sorted_values, 100 - self.percentile if maximize else self.percentile)

    def judge(self, step: int, value: float, sorted_values: list[float], seed_m2: float, seed_dof: int,
              gate, maximize: bool) -> PruneReason | None:
        """The rule from an epoch's summary: the completed trials' values there (ascending),
        their seeds' pooled squared deviations and dof, and `gate()` -> `rank_gate`'s fit of the
        epoch's (value, final) pairs (called only when the rest says stop). A reason, or None."""
        if not sorted_values:
            return None
        threshold = self.threshold_of(sorted_values, maximize)
        sd, gap = seed_gap(self.margin, seed_m2, seed_dof)
        if not (value < threshold - gap if maximize else value > threshold + gap):
            return None
        rho = low = math.nan
        n = 0
        if self.rank_gate:
            ranked, rho, low, n = gate()
            if not ranked:
                return None
        return PruneReason("margin", step, value, threshold, self.percentile, len(sorted_values), self.margin,
                           sd, seed_dof, gap, rho, low, n)

    def decide(self, completed, step: int, value: float, maximize: bool) -> PruneReason | None:
        """The rule, once Optuna's pruner says stop, walked over the study's completed trials
        (their intermediate values, architecture and final value): a reason to stop a trial
        whose best value so far is `value` at epoch `step`, or None to keep it."""
        values, by_arch = values_at(completed, step)
        m2 = dof = 0
        for seeds in by_arch.values():
            if len(seeds) > 1:
                mean = sum(seeds) / len(seeds)
                m2 += sum((v - mean) ** 2 for v in seeds)
                dof += len(seeds) - 1
        return self.judge(step, value, sorted(values), m2, dof, lambda: rank_gate(*curve_vs_final(completed, step)), maximize)

    def prunes(self, completed, step: int, value: float, maximize: bool) -> bool:
        return self.decide(completed, step, value, maximize) is not None


def percentile(sorted_values: list[float], q: float) -> float:
    """As `np.percentile(values, q)` (linear interpolation) of ascending values, in O(1)."""
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


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


def rank_gate(values: list[float], finals: list[float]) -> tuple[bool, float, float, int]:
    """The rank gate fitted on an epoch's (value, final) pairs: (whether the curve ranks the
    finals beyond chance, Spearman's rho, the lower end of its 95% interval, pairs)."""
    n = len(values)
    rho = spearman(values, finals) if n >= MIN_RANK_TRIALS else math.nan
    low = fisher_interval(rho, n)[0] if not math.isnan(rho) else math.nan
    return (not math.isnan(low) and low > 0), rho, low, n


def curve_ranks_finals(values: list[float], finals: list[float]) -> bool:
    """Whether the finished trials' values at an epoch rank their final values beyond chance:
    over at least MIN_RANK_TRIALS of them, the lower end of the 95% interval of Spearman's rho
    (`fisher_interval`) is above 0. Until then an early curve may be a late starter's (a deeper
    net near chance after the warm-up that finishes among the best), and stopping on it is a
    guess."""
    return rank_gate(values, finals)[0]
