"""Statistics over seeds and objectives: summaries with confidence intervals, Pareto sets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats


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


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when `a` is at least as good as `b` everywhere and better somewhere."""
    better = False
    for x, y, direction in zip(a, b, directions, strict=True):
        if direction == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        if x < y:
            better = True
    return better


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
