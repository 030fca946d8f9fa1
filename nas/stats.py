"""Statistics over seeds and objectives: summaries with confidence intervals, Pareto sets and
how sure a front is (seed bootstraps), paired comparisons of two architectures on the same
seeds (paired t; the race's multiplicity and looks are nas.sequential's), the evaluation noise
of one accuracy (its binomial standard error), and per-image correctness: its packed form and
a difference's image-sampling noise beside the seeds'."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

# the fewest paired seeds a test runs on (df 2): at 2, one difference repeated gives p ~ 1e-15,
# and a t with df 1 (a Cauchy) is at the mercy of one odd seed
MIN_SEEDS = 3


@dataclass(frozen=True)
class SeedSummary:
    """Mean of a metric over seeds with its sample std and a t-based 95% CI."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); nan for n < 2
    ci_low: float  # nan for n < 2
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def summarize(values: Sequence[float], confidence: float = 0.95) -> SeedSummary:
    """Mean, std and confidence interval of independent seed results (Student's t)."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(values)
    if n == 0:
        nan = float("nan")
        return SeedSummary(0, nan, nan, nan, nan)
    mean = sum(values) / n
    if n < 2:
        return SeedSummary(1, mean, float("nan"), float("nan"), float("nan"))
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = _scipy_stats.t.ppf(0.5 + confidence / 2, df=n - 1) * std / math.sqrt(n)
    return SeedSummary(n, mean, std, mean - half, mean + half)


def binomial_se(p: float | None, n: int | None) -> float:
    """Standard error of an accuracy `p` measured on `n` images: sqrt(p (1 - p) / n).

    The evaluation noise of a single trial: the images are a sample of the distribution,
    so its accuracy is a binomial proportion (e.g. 45% on 1,000 images: +-1.57 points).
    Nan when the accuracy or the image count is unknown (None, not finite) or n < 1.
    """
    if p is None or n is None or not math.isfinite(p) or n < 1:
        return float("nan")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"an accuracy is a fraction in [0, 1], but got {p=}.")
    return math.sqrt(p * (1.0 - p) / n)


def mean_binomial_se(pairs: Sequence[tuple[float | None, int | None]]) -> float:
    """Mean of `binomial_se` over (accuracy, images) pairs whose SE is known; nan if none."""
    known = [se for se in (binomial_se(p, n) for p, n in pairs) if math.isfinite(se)]
    return sum(known) / len(known) if known else float("nan")


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when `a` is at least as good as `b` everywhere and better somewhere. A missing
    value (None or nan: a diverged run, an unmeasured cost) is the worst there is, so it never
    ties with a measured one."""
    better = False
    for x, y, direction in zip(a, b, directions, strict=True):
        sign = -1.0 if direction == "maximize" else 1.0  # compared as minimisation
        x, y = _cost(x, sign), _cost(y, sign)
        if x > y:
            return False
        if x < y:
            better = True
    return better


def _cost(value: float | None, sign: float) -> float:
    """`value` as a cost to minimise (`sign` -1 for a maximised objective); missing: +inf."""
    return math.inf if value is None or math.isnan(value) else sign * float(value)


def pareto_ranks(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Non-dominated sorting: rank 0 is the Pareto front, rank 1 the front without it, ..."""
    ranks = [-1] * len(points)
    remaining = set(range(len(points)))
    rank = 0
    while remaining:
        front = {
            i for i in remaining
            if not any(dominates(points[j], points[i], directions) for j in remaining if j != i)
        }
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points, in input order."""
    return [i for i, r in enumerate(pareto_ranks(points, directions)) if r == 0]


FRONT_DRAWS = 400  # bootstrap draws of `front_share`: its s.e. is at most 0.025


def front_share(values: Sequence[Mapping[int, Sequence[float]]], directions: Sequence[str],
                draws: int = FRONT_DRAWS, seed: int = 0) -> list[float]:
    """How sure a Pareto front is: per architecture, the share of seed bootstraps in which its
    mean objective values are on the front.

    Args:
        values: per architecture, seed -> its objective values on that seed.
        directions: "maximize" / "minimize" per objective.

    Each draw resamples the seeds (with replacement, from all the seeds any architecture ran),
    so architectures that share seeds are resampled in pairs, as they were measured; one with
    none of the drawn seeds resamples its own. A front member with a share of 0.55 is on it
    by a seed's luck; one at 1.0 on every resample. Seeded: the same values give the same shares.
    """
    rng = random.Random(seed)
    seeds = sorted({s for v in values for s in v})
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])  # compared as minimisation
    hits = np.zeros(len(values))
    for _ in range(draws if seeds else 0):
        drawn = [rng.choice(seeds) for _ in seeds]
        points = []
        for own in values:
            picked = [own[s] for s in drawn if s in own] or [own[rng.choice(list(own))] for _ in own]
            points.append([sum(column) / len(column) for column in zip(*picked)])
        hits += _on_front(np.array(points, dtype=float) * signs)
    return [float(h) / draws if seeds else math.nan for h in hits]


def _on_front(costs: np.ndarray) -> np.ndarray:
    """Which rows of `costs` (points x objectives, minimised; nan the worst) no other row
    dominates: `dominates` for all pairs at once."""
    costs = np.where(np.isnan(costs), np.inf, costs)
    no_worse = (costs[:, None, :] <= costs[None, :, :]).all(axis=2)  # [j, i]: j no worse than i everywhere
    better = (costs[:, None, :] < costs[None, :, :]).any(axis=2)
    return ~(no_worse & better).any(axis=0)


# ----------------------------------------------------------------------------- rank correlation


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho (ties get average ranks); nan with < 3 pairs or a constant side."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(_scipy_stats.spearmanr(x, y).statistic)


def fisher_interval(rho: float, n: int) -> tuple[float, float]:
    """The 95% interval of Spearman's rho over `n` pairs by Fisher's z, with the SE
    sqrt(1.06 / (n - 3)) of Fieller, Hartley & Pearson (1957); n > 3."""
    centre = math.atanh(min(max(rho, -1 + 1e-9), 1 - 1e-9))
    half = 1.96 * math.sqrt(1.06 / (n - 3))
    return math.tanh(centre - half), math.tanh(centre + half)


# ----------------------------------------------------------------------------- paired comparisons


@dataclass(frozen=True)
class PairedDifference:
    """How a variant differs from a reference measured on the same seeds.

    The differences d_i = variant_i - reference_i over the n shared seeds are summarised
    by their mean with a Student-t 95% CI (df = n - 1) and the two-sided paired t-test
    of mean(d) = 0 (what `scipy.stats.ttest_rel(variant, reference)` computes).
    """

    n: int  # pairs (seeds run by both)
    mean: float  # mean of variant - reference
    std: float  # sample std of the differences (ddof=1); nan for n < 2
    ci_low: float  # nan for n < 2
    ci_high: float
    p_value: float  # two-sided paired t-test; nan for n < 2

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2

    def excludes_zero(self) -> bool:
        """Whether the CI lies entirely on one side of 0 (False when there is no CI)."""
        return self.ci_low > 0 or self.ci_high < 0


def paired_difference(
    variant: Sequence[float], reference: Sequence[float], confidence: float = 0.95
) -> PairedDifference:
    """Mean of ``variant - reference`` over paired seeds, its t CI and the paired t-test.

    Args:
        variant, reference: results of the same seeds in the same order, so that
            ``variant[i]`` and ``reference[i]`` come from seed i. Pairs where either is
            None or not finite are left out.
        confidence: of the interval, e.g. 0.95.

    Returns:
        With n < 2 the mean alone (std, CI and p are nan); with n < MIN_SEEDS no p (nan) and
        the CI of df 1. When every difference is the same the test is degenerate: p is 1 for
        a zero difference and 0 otherwise, and the CI collapses onto the mean.
    """
    if len(variant) != len(reference):
        raise ValueError(f"paired samples must have equal lengths, but got {len(variant)} and {len(reference)}.")
    diffs = [
        float(v) - float(r) for v, r in zip(variant, reference)
        if v is not None and r is not None and math.isfinite(v) and math.isfinite(r)
    ]
    n = len(diffs)
    nan = float("nan")
    if n == 0:
        return PairedDifference(0, nan, nan, nan, nan, nan)
    mean = sum(diffs) / n
    if n < 2:
        return PairedDifference(1, mean, nan, nan, nan, nan)
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if std == 0.0:
        return PairedDifference(n, mean, 0.0, mean, mean, (1.0 if mean == 0.0 else 0.0) if n >= MIN_SEEDS else nan)
    se = std / math.sqrt(n)
    half = _scipy_stats.t.ppf(0.5 + confidence / 2, df=n - 1) * se
    p_value = paired_t_pvalue(variant, reference)
    return PairedDifference(n, mean, std, mean - half, mean + half, p_value)


def paired_t_pvalue(variant: Sequence[float], reference: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test that mean(variant - reference) is 0.

    t = mean(d) / (std(d) / sqrt(n)) with n - 1 degrees of freedom, d the paired
    differences (pairs with a missing or non-finite value left out); nan for n < 2.
    """
    diffs = [
        float(v) - float(r) for v, r in zip(variant, reference, strict=True)
        if v is not None and r is not None and math.isfinite(v) and math.isfinite(r)
    ]
    n = len(diffs)
    if n < MIN_SEEDS:
        return float("nan")
    mean = sum(diffs) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if std == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    t = mean / (std / math.sqrt(n))
    return float(2 * _scipy_stats.t.sf(abs(t), df=n - 1))


# ----------------------------------------------------------------------------- per image


def pack_correct(correct: Sequence[bool] | np.ndarray) -> bytes:
    """Which images an evaluation got right, one bit each in the split's order (little bit
    order: image i is bit i % 8 of byte i // 8); 5,000 images are 625 bytes."""
    return np.packbits(np.asarray(correct, dtype=bool), bitorder="little").tobytes()


def unpack_correct(data: bytes, images: int) -> np.ndarray:
    """The bool per image that `pack_correct` packed (`images` of them)."""
    if len(data) != (images + 7) // 8:
        raise ValueError(f"{len(data)} bytes cannot hold the correctness of {images} images "
                         f"(it takes {(images + 7) // 8}).")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=images, bitorder="little").astype(bool)


@dataclass(frozen=True)
class ImageDifference:
    """A - B over paired seeds and the same images, with the noise of both samples.

    The per-image differences x[s, i] = correct_A[s, i] - correct_B[s, i] (seeds s, images i)
    follow the two-way random-effects model x = mu + a_s + b_i + e_si: a seed's effect, an
    image's effect (some images favour A whatever the seed), and the rest. Their mean D
    estimates mu, the difference on new images from the same distribution, with
        Var(D) = sigma_a^2 / n + sigma_b^2 / N + sigma_e^2 / (n N)
               = (MS_seeds + MS_images - MS_residual) / (n N)      (two-way ANOVA mean squares)
    The paired t over seeds sees only MS_seeds / (n N): the seed noise on these images. The
    image term is what a verdict needs to hold beyond the particular val set.
    """

    seeds: int
    images: int
    mean: float  # D, a fraction
    seed_se: float  # sqrt(MS_seeds / (n N)): what a paired t over seeds uses (nan for one seed)
    se: float  # sqrt(Var(D)), seeds and images
    df: float  # Satterthwaite's, for the interval
    ci_low: float
    ci_high: float

    def seed_interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """The paired t's interval over the seeds alone (these images only); nan for one seed."""
        if self.seeds < 2 or not math.isfinite(self.seed_se):
            return math.nan, math.nan
        half = _scipy_stats.t.ppf(0.5 + confidence / 2, df=self.seeds - 1) * self.seed_se
        return self.mean - half, self.mean + half

    @property
    def image_share(self) -> float:
        """The share of Var(D) that the image sample adds to the seed noise."""
        if not (math.isfinite(self.se) and self.se > 0 and math.isfinite(self.seed_se)):
            return math.nan
        return max(0.0, 1.0 - self.seed_se ** 2 / self.se ** 2)


def image_difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray], confidence: float = 0.95) -> ImageDifference:
    """A - B from per-image correctness on paired seeds (`a[k]`, `b[k]`: seed k's bools over
    the same images in the same order); see `ImageDifference`. One seed: the image term alone
    (McNemar's setting: the paired proportions of one run each)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired seeds must be as many for A as for B and at least one, but got {len(a)} and {len(b)}.")
    x = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)  # (n, N)
    n, images = x.shape
    mean = float(x.mean())
    seed_means, image_means = x.mean(axis=1), x.mean(axis=0)
    ms_images = n * float(((image_means - mean) ** 2).sum()) / max(images - 1, 1)
    if n == 1:
        var, seed_se, terms = ms_images / images, math.nan, [(ms_images / images, images - 1)]
    else:
        ms_seeds = images * float(((seed_means - mean) ** 2).sum()) / (n - 1)
        residual = x - seed_means[:, None] - image_means[None, :] + mean
        ms_residual = float((residual ** 2).sum()) / ((n - 1) * (images - 1))
        var = max((ms_seeds + ms_images - ms_residual) / (n * images), ms_seeds / (n * images))
        seed_se = math.sqrt(ms_seeds / (n * images))
        terms = [(ms_seeds / (n * images), n - 1), (ms_images / (n * images), images - 1),
                 (ms_residual / (n * images), (n - 1) * (images - 1))]
    se = math.sqrt(var)
    denominator = sum(v * v / d for v, d in terms if d > 0)
    df = var * var / denominator if denominator > 0 else math.inf  # Satterthwaite
    half = _scipy_stats.t.ppf(0.5 + confidence / 2, df=df) * se if se > 0 else 0.0
    return ImageDifference(n, images, mean, seed_se, se, df, mean - half, mean + half)
