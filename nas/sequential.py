"""Group-sequential multiple comparisons: the statistics behind the confirm race's verdicts.

A race looks at its results after every round and calls an architecture `worse` when another
one still in the race beats it by more than seed noise. Two things make a plain t-test at
0.05 after every round wrong, and both are handled here:

- **Many comparisons, one of them chosen by the data.** The leader is the best mean on the
  very seeds it is tested on, so "each against the leader" is biased against the others.
  Here the family is *every pair* of the race's K architectures (a paired t-test on the
  seeds both ran): an architecture is worse when some architecture still in the race is
  better with a p at or below the look's boundary. Hsu's comparisons with the best would
  need fewer tests, but its "not the best" includes ties with the best; our `worse` is
  strict, and with K equal architectures any `worse` is an error, so every pair counts.
  (`nas ablate` uses the family "against the first": each variant against its reference,
  fixed before the data, two-sided.)
- **Many looks.** The boundaries spend alpha over the planned looks (Lan & DeMets, Biometrika
  1983) with the power family alpha(tau) = alpha * tau ** 10 (Kim & DeMets, Biometrics 1987),
  tau the look's seeds over the last look's. Chosen by simulation (docs/statistics.md, "The
  confirm race"): a race's looks are late in its information (3 of 6 seeds is tau = 0.5), and the
  O'Brien-Fleming-type function spent so much before the last look that the race kept only
  0.55-0.85 of one fixed test's power; rho = 10 keeps >= 0.85 on every shipped setting, and
  a clear leader still stops the race early. The race's last actual look spends whatever is
  left (a race stopped by its time budget does not waste alpha; that stop depends on train
  seconds, never on the accuracies).

The boundary of each look is a nominal per-pair p found from the null distribution of the
family's smallest p at every look, simulated once per plan with a fixed seed (`NULL_DRAWS`
races). Under Gaussian seed noise of one spread that distribution is exact: a paired t does
not depend on the noise's scale, nor on anything a seed does to every architecture alike.
The same sample gives each verdict its p (the stagewise-ordered p of group-sequential
designs: the chance, with no differences, of having crossed at an earlier look or of a
smaller p at this one), so `worse` <=> p <= the alpha spent so far.

Error. With no differences the chance of any `worse` is alpha, up to the simulation's error
(about +-0.0014 at 2 s.e.). With some architectures truly worse, a false `worse` needs a pair
of equally good ones, or a worse one over a better one, to cross: noise at least as extreme,
so no more likely. An eliminated architecture leaves the family its size K (boundaries are
not recomputed for a smaller race): simpler, and never liberal. No test runs on fewer than
`MIN_SEEDS` paired seeds: at 2, one difference repeated gives p ~ 1e-15. Checked through the
race's own code by `tests/test_race_calibration.py` and `benchmarks/race_calibration.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize, special, stats

from nas.stats import MIN_SEEDS

ALPHA = 0.05  # family-wise chance of any false `worse` over the whole race
NULL_DRAWS = 100_000  # simulated null races per plan (fewer for very large families, see _draws)
# pairs x seeds past which a plan is not simulated (a race of 20 on 10 seeds, 1,900, takes a
# second or two; top_k 100 would take minutes) and takes the union bound instead: valid for any
# dependence, conservative
MAX_SIMULATED = 2_000
ALL_PAIRS = "all pairs"  # every pair of the arms: no arm is singled out before the data
AGAINST_FIRST = "against the first"  # each arm against arm 0, a reference fixed in advance
SPENDING_RHO = 10  # alpha spent by a look at a fraction tau of the last look's seeds: alpha * tau ** 10
POWER = 0.8  # of the "could detect" difference


@dataclass(frozen=True)
class Looks:
    """A planned sequence of looks: K arms compared on 3, 4, ... paired seeds."""

    arms: int  # architectures in the family (a reference and its variants: all of them)
    seeds: tuple[int, ...]  # paired seeds at each planned look, increasing, each >= MIN_SEEDS
    family: str = ALL_PAIRS
    alpha: float = ALPHA

    def __post_init__(self) -> None:
        if self.arms < 2:
            raise ValueError(f"a comparison needs at least 2 arms, but got {self.arms=}.")
        if not self.seeds or list(self.seeds) != sorted(set(self.seeds)) or self.seeds[0] < MIN_SEEDS:
            raise ValueError(f"looks are increasing seed counts from {MIN_SEEDS}, but got {self.seeds=}.")
        if self.family not in (ALL_PAIRS, AGAINST_FIRST):
            raise ValueError(f"family is {ALL_PAIRS!r} or {AGAINST_FIRST!r}, but got {self.family=}.")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), but got {self.alpha=}.")

    def index(self, seeds: int) -> int | None:
        """The look at `seeds` paired seeds, or None when none is planned there."""
        return self.seeds.index(seeds) if seeds in self.seeds else None

    def spent(self, look: int, final: bool = False) -> float:
        """Alpha spent up to and including `look` (all of it at the race's final look)."""
        if final or look == len(self.seeds) - 1:
            return self.alpha
        return self.alpha * (self.seeds[look] / self.seeds[-1]) ** SPENDING_RHO

    def boundary(self, look: int, final: bool = False) -> float:
        """The nominal per-pair p at or below which a pair separates at `look`."""
        return _null(self).boundary(look, self.spent(look, final))

    def p_value(self, look: int, p: float) -> float:
        """The stagewise-ordered p of a smallest pair p `p` seen at `look` (nan stays nan)."""
        if not math.isfinite(p):
            return math.nan
        # never below the pair's own p: the event contains {this pair's p <= p} (the sample's
        # error could say otherwise)
        return max(p, _null(self).p_value(look, p, _pairs(self)))

    def separates(self, look: int, p: float, final: bool = False) -> bool:
        """Whether a pair with p-value `p` at `look` is beyond seed noise for the whole plan."""
        return math.isfinite(p) and p <= self.boundary(look, final)


def detectable_difference(sd: float, n: int, boundary: float, power: float = POWER) -> float:
    """The true mean difference a pair test at per-pair level `boundary` (two-sided) on `n`
    paired seeds with difference spread `sd` finds with probability `power` (noncentral t,
    the far tail ignored). Nan when there is no test (n < 2, or sd unknown); inf when the
    boundary is beyond the numerics (no difference reaches it)."""
    if n < 2 or not math.isfinite(sd) or not 0.0 < boundary < 1.0:
        return math.nan
    if sd == 0.0:
        return 0.0
    df = n - 1
    critical = special.stdtrit(df, 1.0 - boundary / 2)  # the t quantile
    try:
        noncentrality = optimize.brentq(lambda nc: special.nctdtr(df, nc, critical) - (1.0 - power), 0.0,
                                        10.0 * critical + 20.0)
    except ValueError:  # a boundary so small (an early look, a union bound) that no difference reaches it
        return math.inf
    return noncentrality * sd / math.sqrt(n)


# ----------------------------------------------------------------------------- paired tests


@dataclass(frozen=True)
class Pairwise:
    """Every ordered pair (i, j) of K arms on their shared seeds: arrays of shape (K, K)."""

    n: np.ndarray  # seeds both have a finite result on
    mean: np.ndarray  # mean of arm i - arm j over them
    sd: np.ndarray  # sample sd of those differences (nan for n < 2)
    p: np.ndarray  # two-sided paired t-test p (nan for n < MIN_SEEDS: no test)


def pairwise(values: np.ndarray) -> Pairwise:
    """Paired t-tests of every pair of rows of `values` (K arms x seeds; nan: no result).

    A pair's seeds are those both rows have; a pair on fewer than `MIN_SEEDS` gets no p. Equal
    differences on every seed (sd 0) give p = 1 for a zero mean and p = 0 otherwise.
    """
    values = np.asarray(values, dtype=float)
    d = values[:, None, :] - values[None, :, :]
    ok = np.isfinite(d)
    n = ok.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, d, 0.0).sum(axis=2) / n
        sq = np.where(ok, (d - mean[..., None]) ** 2, 0.0).sum(axis=2)
        sd = np.sqrt(sq / (n - 1))
        t = mean / (sd / np.sqrt(n))
        p = 2.0 * stats.t.sf(np.abs(t), np.maximum(n - 1, 1))
    p = np.where(sd == 0.0, np.where(mean == 0.0, 1.0, 0.0), p)
    p = np.where(n >= MIN_SEEDS, p, np.nan)
    return Pairwise(n=n, mean=np.where(n > 0, mean, np.nan), sd=np.where(n > 1, sd, np.nan), p=p)


# ----------------------------------------------------------------------------- the null sample


@dataclass(frozen=True)
class _NullSample:
    """The smallest pair p at each look of `draws` simulated races with no differences."""

    draws: int
    alive: tuple[np.ndarray, ...]  # per look: sorted smallest p of the races not stopped before it
    stopped: tuple[int, ...]  # per look: races stopped at an earlier look (planned boundaries)

    def boundary(self, look: int, spent: float) -> float:
        return _boundary(self.alive[look], self.stopped[look], self.draws, spent)

    def p_value(self, look: int, p: float, pairs: int) -> float:
        below = int(np.searchsorted(self.alive[look], p, side="right"))
        if below < 10:  # past the sample's resolution: the union bound over the pairs, tight there
            return (self.stopped[look] + min(pairs * p * self.draws, 10)) / self.draws
        return (self.stopped[look] + below) / self.draws


def _pairs(looks: Looks) -> int:
    return looks.arms * (looks.arms - 1) // 2 if looks.family == ALL_PAIRS else looks.arms - 1


def _draws(looks: Looks) -> int:
    return int(min(NULL_DRAWS, max(20_000, 5e7 // (_pairs(looks) * looks.seeds[-1]))))


def _null(looks: Looks) -> _NullSample | _UnionBound:
    if _pairs(looks) * looks.seeds[-1] > MAX_SIMULATED:
        return _UnionBound(looks)
    return _null_sample(looks.arms, looks.seeds, looks.family, looks.alpha)


@dataclass(frozen=True)
class _UnionBound:
    """Boundaries without simulation, for families too large to simulate: each look's alpha
    increment split evenly over the pairs (Bonferroni over pairs and looks)."""

    looks: Looks

    def boundary(self, look: int, spent: float) -> float:
        before = self.looks.spent(look - 1) if look else 0.0
        return max(0.0, spent - before) / _pairs(self.looks)

    def p_value(self, look: int, p: float, pairs: int) -> float:
        before = self.looks.spent(look - 1) if look else 0.0
        return min(1.0, before + pairs * p)


@lru_cache(maxsize=64)
def _null_sample(arms: int, seeds: tuple[int, ...], family: str, alpha: float) -> _NullSample:
    looks = Looks(arms, seeds, family, alpha)
    draws = _draws(looks)
    smallest = _smallest_p(arms, seeds, family, draws)  # (draws, looks)
    alive_mask = np.ones(draws, dtype=bool)
    alive, stopped = [], []
    for look in range(len(seeds)):
        at = np.sort(smallest[alive_mask, look])
        alive.append(at)
        stopped.append(draws - int(alive_mask.sum()))
        planned = _boundary(at, stopped[-1], draws, looks.spent(look))
        alive_mask &= ~(smallest[:, look] <= planned)
    return _NullSample(draws, tuple(alive), tuple(stopped))


def _boundary(alive: np.ndarray, stopped: int, draws: int, spent: float) -> float:
    """The p at or below which the races still on (sorted `alive`) cross, so that `spent` of
    all `draws` have crossed by this look; 0 (nothing separates) when it is already spent."""
    crossing = int(round(spent * draws)) - stopped
    if crossing <= 0 or not len(alive):
        return 0.0
    return float(alive[min(crossing, len(alive)) - 1])


def _smallest_p(arms: int, seeds: tuple[int, ...], family: str, draws: int) -> np.ndarray:
    """Per simulated race and look, the family's smallest two-sided paired-t p (N(0, 1) noise)."""
    rng = np.random.default_rng([arms, seeds[-1], len(seeds), 1 if family == ALL_PAIRS else 2, 20261206])
    if family == ALL_PAIRS:
        first, second = np.triu_indices(arms, k=1)
    else:
        first, second = np.zeros(arms - 1, dtype=int), np.arange(1, arms)
    last = seeds[-1]
    chunk = max(1, int(4e6 // (len(first) * last)))
    out = np.empty((draws, len(seeds)))
    for start in range(0, draws, chunk):
        size = min(chunk, draws - start)
        noise = rng.standard_normal((size, arms, last))
        d = noise[:, first, :] - noise[:, second, :]  # (size, pairs, seeds)
        s1, s2 = np.cumsum(d, axis=2), np.cumsum(d * d, axis=2)
        for look, n in enumerate(seeds):
            mean = s1[:, :, n - 1] / n
            var = (s2[:, :, n - 1] - n * mean * mean) / (n - 1)
            t = np.abs(mean) / np.sqrt(np.maximum(var, 1e-300) / n)
            out[start:start + size, look] = 2.0 * stats.t.sf(t.max(axis=1), n - 1)
    return out
