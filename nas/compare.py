"""Experiments side by side: the architectures they share, and whether they rank them alike.

The question a researcher asks of a cheap budget: *does it rank architectures as the full
budget does?* `compare` answers it from each experiment's per-architecture results
(`nas.results.arch_results`, the numbers `nas status` prints, not recomputed):

- **Which result of an architecture.** Per architecture, the phase with the most completed
  seeds: confirm or search (confirm on a tie, since its seeds are the race's shared ones).
- **Which architectures are the same.** ``hash``: the same canonical config. ``name``: the
  same short name once its width token (``w=0.25``) is dropped, so page_post4's cpu budget
  (w=0.25) meets its full budget (w=1). ``auto`` (the default) takes ``name`` unless width
  varies inside one experiment (two of its architectures would share a name), else
  ``hash``; the output always says which it used.
- **How alike the rankings are.** Spearman's rho and Kendall's tau-b over the shared
  architectures' mean accuracies (ties averaged, as scipy does), each with two percentile
  95% bootstrap CIs: over *architectures* (resample which architectures were compared: is
  the agreement a property of this handful?) and over *seeds* (resample each architecture's
  seeds within each experiment: how much of it is seed noise?). Both are seeded; the number
  of resamples is part of the result. A correlation needs at least `MIN_SHARED` shared
  architectures.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nas.db import Store
from nas.db.schema import Phase, TrialStatus
from nas.errors import ConfigError
from nas.stats import SeedSummary
from nas.trials.plan import judged_accuracy

MIN_SHARED = 3  # architectures a rank correlation needs (two always agree or disagree perfectly)
RESAMPLES = 2000  # bootstrap resamples by default; with 11 architectures a CI end moves by ~0.05 between seeds
MATCHES = ("auto", "hash", "name")
PHASES = (Phase.CONFIRM, Phase.SEARCH)  # in order of preference on a tie in seeds

# the compared architectures, one row per architecture and experiment (--what architectures)
ARCHITECTURE_COLUMNS = {
    "architecture": "what the experiments share: the short name (name match, without w=) or the hash",
    "experiment": "the experiment, as given (NAME, or NAME@STORE when a name repeats)",
    "store": "its store's URL, password masked",
    "arch_hash": "the architecture's hash in that experiment",
    "short_name": "its short name there (with its width)",
    "phase": "the phase its result comes from: the one with the most completed seeds",
    "seeds": "completed seeds in that phase",
    "accuracy_mean": "mean accuracy over those seeds (val, else test)",
    "accuracy_ci_low": "95% CI of that mean, Student t; NaN under 2 seeds",
    "accuracy_ci_high": "upper end of that CI",
    "accuracy_sd": "sample SD over seeds; NaN under 2 seeds",
    "rank": "its rank among the shared architectures in that experiment, 1 = most accurate",
}
# one row per pair of experiments (--what correlations)
CORRELATION_COLUMNS = {
    "experiment_a": "the first experiment of the pair", "experiment_b": "the second",
    "architectures": "shared architectures the correlation is over", "match": "hash | name",
    "spearman": "Spearman's rho of their mean accuracies",
    "spearman_ci_low": "95% bootstrap CI over architectures, lower end", "spearman_ci_high": "upper end",
    "spearman_seed_ci_low": "95% bootstrap CI over seeds, lower end; NaN with one seed each",
    "spearman_seed_ci_high": "upper end",
    "kendall": "Kendall's tau-b", "kendall_ci_low": "95% bootstrap CI over architectures, lower end",
    "kendall_ci_high": "upper end", "kendall_seed_ci_low": "95% bootstrap CI over seeds, lower end",
    "kendall_seed_ci_high": "upper end",
    "same_best": "whether both experiments rank the same architecture first",
    "resamples": "bootstrap resamples of each CI", "bootstrap_seed": "the generator's seed",
}


# ---- what is compared ---------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One experiment to compare: its name, the store it lives in, and how output labels it."""

    name: str
    url: str
    label: str


def parse_sources(texts: list[str], default_url: str) -> list[Source]:
    """``NAME`` (in `default_url`'s store) or ``NAME@STORE`` (a URL or SQLite path) each.

    The first ``@`` splits: experiment names cannot hold one, URLs may (user@host). A name
    given twice is labelled NAME@STORE, as typed (password masked), so the columns differ.

    Raises:
        ConfigError: fewer than two experiments, an empty name or store, or one given twice.
    """
    from nas.db import resolve_db_url
    from nas.errors import masked_url

    if len(texts) < 2:
        raise ConfigError(f"nas compare needs at least two experiments, but got {len(texts)}: "
                          "e.g. nas compare cpu_study full_study, or cpu@a.db full@b.db.")
    parsed = []
    for text in texts:
        name, at, store = text.partition("@")
        if not name or (at and not store):
            raise ConfigError(f"cannot read {text!r}: give NAME or NAME@STORE (a URL or an SQLite file), "
                              "e.g. cpu_study@sqlite:///cpu.db.")
        parsed.append((name, resolve_db_url(store) if at else default_url, masked_url(store) if at else None))
    seen = [(name, url) for name, url, _ in parsed]
    if len(set(seen)) < len(seen):
        twice = next(f"{n}@{u}" for n, u in seen if seen.count((n, u)) > 1)
        raise ConfigError(f"{masked_url(twice)} is given twice; compare different experiments.")
    names = [name for name, _, _ in parsed]
    return [Source(name, url, f"{name}@{shown or masked_url(url)}" if names.count(name) > 1 else name)
            for name, url, shown in parsed]


@dataclass(frozen=True)
class Entry:
    """One architecture's result in one experiment."""

    arch_hash: str
    short_name: str
    phase: str
    accuracy: SeedSummary
    per_seed: tuple[float, ...]  # the seeds' accuracies the mean is over, for the seed bootstrap

    @property
    def width_free_name(self) -> str:
        return width_free(self.short_name)


def width_free(short_name: str) -> str:
    """`short_name` without its width token: ``R:L1 w=0.25`` -> ``R:L1``."""
    return " ".join(t for t in short_name.split() if not t.startswith("w=")) or "base"


def read_entries(store: Store, experiment_name: str) -> list[Entry]:
    """Each architecture of the experiment with completed trials, from the phase (confirm or
    search) in which it has the most seeds.

    Raises:
        ConfigError: no such experiment (the message lists those there are), or none of its
            trials completed in search or confirm yet.
    """
    from nas.results import arch_results
    from nas.trials.experiment import require_experiment

    experiment = require_experiment(store, experiment_name)
    chosen: dict[str, tuple] = {}
    for phase in PHASES:
        for row in arch_results(store, experiment_name, phase):
            if row.arch_hash not in chosen or row.seeds > chosen[row.arch_hash][0].seeds:
                chosen[row.arch_hash] = (row, phase)
    if not chosen:
        raise ConfigError(f"experiment {experiment_name!r} has no completed search or confirm trials yet; "
                          "compare it once some have finished (nas status shows its progress).")
    per_seed: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for phase in {phase for _, phase in chosen.values()}:
        for t in store.trials(experiment_id=experiment.id, phase=phase, status=TrialStatus.COMPLETED):
            accuracy = judged_accuracy(t.final_val_acc, t.final_test_acc)
            if accuracy is not None and math.isfinite(accuracy):
                per_seed[t.arch_hash, str(phase)].setdefault(t.seed, float(accuracy))
    return [Entry(row.arch_hash, row.short_name, str(phase), row.accuracy,
                  tuple(per_seed[row.arch_hash, str(phase)].values()))
            for row, phase in chosen.values()]


# ---- rank correlation ---------------------------------------------------------------------


def spearman(x, y) -> np.ndarray:
    """Spearman's rho of each row of `x` with the same row of `y` (arrays of shape (..., n)):
    Pearson's r of their average ranks; NaN for a row of equal values."""
    from scipy.stats import rankdata

    return _pearson(rankdata(x, axis=-1), rankdata(y, axis=-1))


def kendall(x, y) -> np.ndarray:
    """Kendall's tau-b of each row of `x` with the same row of `y`, ties counted as scipy's
    `kendalltau` counts them; NaN for a row of equal values."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = x.shape[-1]
    upper = np.triu_indices(n, k=1)
    dx = np.sign(x[..., :, None] - x[..., None, :])[..., upper[0], upper[1]]
    dy = np.sign(y[..., :, None] - y[..., None, :])[..., upper[0], upper[1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (dx * dy).sum(-1) / np.sqrt((dx != 0).sum(-1) * (dy != 0).sum(-1))


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def _percentile_ci(values: np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the finite `values` (a resample of equal values
    has no correlation and is left out); NaN, NaN when none is finite."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def _in_chunks(draw, resamples: int, n: int):
    """`draw(k)` for k resamples at a time, so that Kendall's n x n pairs stay small in memory."""
    chunk = max(1, min(resamples, 2_000_000 // max(n * n, 1)))
    done = 0
    while done < resamples:
        k = min(chunk, resamples - done)
        yield draw(k)
        done += k


@dataclass(frozen=True)
class Correlation:
    """How alike two experiments rank their shared architectures."""

    a: str
    b: str
    n: int  # shared architectures
    spearman: float
    kendall: float
    spearman_ci: tuple[float, float]  # bootstrap over architectures
    kendall_ci: tuple[float, float]
    spearman_seed_ci: tuple[float, float]  # bootstrap over seeds; NaN with one seed each
    kendall_seed_ci: tuple[float, float]
    same_best: bool
    resamples: int
    seed: int


def correlate(a: str, b: str, xa: list[Entry], xb: list[Entry], *, resamples: int = RESAMPLES,
              seed: int = 0) -> Correlation:
    """The rank correlation of `xa` and `xb` (the same architectures, in the same order) with
    percentile bootstrap CIs over architectures and over seeds (`resamples` each, from `seed`)."""
    n = len(xa)
    if n < MIN_SHARED:
        raise ConfigError(f"{a} and {b} share {n} architecture{'s' if n != 1 else ''}; a rank correlation needs "
                          f"at least {MIN_SHARED}.")
    ma = np.array([e.accuracy.mean for e in xa])
    mb = np.array([e.accuracy.mean for e in xb])
    rng = np.random.default_rng(seed)

    def by_architecture(k: int):
        index = rng.integers(0, n, size=(k, n))
        return spearman(ma[index], mb[index]), kendall(ma[index], mb[index])

    rho, tau = (np.concatenate(parts) for parts in zip(*_in_chunks(by_architecture, resamples, n)))
    seed_rho = seed_tau = np.array([math.nan])
    if any(len(e.per_seed) >= 2 for e in [*xa, *xb]):
        def by_seed(k: int):
            sa, sb = _seed_means(xa, k, rng), _seed_means(xb, k, rng)
            return spearman(sa, sb), kendall(sa, sb)

        seed_rho, seed_tau = (np.concatenate(parts) for parts in zip(*_in_chunks(by_seed, resamples, n)))
    return Correlation(
        a, b, n, float(spearman(ma, mb)), float(kendall(ma, mb)), _percentile_ci(rho), _percentile_ci(tau),
        _percentile_ci(seed_rho), _percentile_ci(seed_tau), same_best=int(np.argmax(ma)) == int(np.argmax(mb)),
        resamples=resamples, seed=seed)


def _seed_means(entries: list[Entry], k: int, rng: np.random.Generator) -> np.ndarray:
    """(k, n) means of each entry's seeds resampled with replacement (its mean with one seed)."""
    out = np.empty((k, len(entries)))
    for j, entry in enumerate(entries):
        seeds = np.array(entry.per_seed) if entry.per_seed else np.array([entry.accuracy.mean])
        out[:, j] = seeds[rng.integers(0, len(seeds), size=(k, len(seeds)))].mean(1)
    return out


# ---- the comparison -----------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Several experiments' shared architectures, each one's result in each, and the rank
    correlation of every pair (in the order given)."""

    sources: list[Source]
    match: str  # hash | name: what made two architectures the same
    keys: list[str]  # the shared architectures, most accurate in the first experiment first
    entries: dict[str, dict[str, Entry]]  # label -> key -> its result there
    only: dict[str, list[str]]  # label -> its architectures the others lack
    correlations: list[Correlation] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.sources]

    def rank(self, label: str) -> dict[str, int]:
        """The shared architectures' ranks in one experiment, 1 = most accurate (ties share
        the better rank)."""
        means = pd.Series({key: self.entries[label][key].accuracy.mean for key in self.keys}, dtype="float64")
        return {key: int(r) for key, r in means.rank(ascending=False, method="min").items()}

    def widths(self, label: str) -> list[str]:
        """The width tokens of an experiment's shared architectures (``w=0.25``; ``w=1``: none)."""
        tokens = {next((t for t in self.entries[label][key].short_name.split() if t.startswith("w=")), "w=1")
                  for key in self.keys}
        return sorted(tokens)

    def architectures_frame(self) -> pd.DataFrame:
        """One row per shared architecture and experiment (`ARCHITECTURE_COLUMNS`)."""
        from nas.errors import masked_url

        rows = []
        for source in self.sources:
            ranks = self.rank(source.label)
            for key in self.keys:
                e = self.entries[source.label][key]
                rows.append({
                    "architecture": key, "experiment": source.label, "store": masked_url(source.url),
                    "arch_hash": e.arch_hash, "short_name": e.short_name, "phase": e.phase, "seeds": e.accuracy.n,
                    "accuracy_mean": e.accuracy.mean, "accuracy_ci_low": e.accuracy.ci_low,
                    "accuracy_ci_high": e.accuracy.ci_high, "accuracy_sd": e.accuracy.std, "rank": ranks[key],
                })
        dtypes = {"seeds": "int64", "rank": "int64"} | {c: "float64" for c in ARCHITECTURE_COLUMNS if "accuracy" in c}
        return pd.DataFrame(rows, columns=list(ARCHITECTURE_COLUMNS)).astype(
            {c: dtypes.get(c, "str") for c in ARCHITECTURE_COLUMNS})

    def correlations_frame(self) -> pd.DataFrame:
        """One row per pair of experiments (`CORRELATION_COLUMNS`)."""
        rows = [{
            "experiment_a": c.a, "experiment_b": c.b, "architectures": c.n, "match": self.match,
            "spearman": c.spearman, "spearman_ci_low": c.spearman_ci[0], "spearman_ci_high": c.spearman_ci[1],
            "spearman_seed_ci_low": c.spearman_seed_ci[0], "spearman_seed_ci_high": c.spearman_seed_ci[1],
            "kendall": c.kendall, "kendall_ci_low": c.kendall_ci[0], "kendall_ci_high": c.kendall_ci[1],
            "kendall_seed_ci_low": c.kendall_seed_ci[0], "kendall_seed_ci_high": c.kendall_seed_ci[1],
            "same_best": c.same_best, "resamples": c.resamples, "bootstrap_seed": c.seed,
        } for c in self.correlations]
        ints = {"architectures": "int64", "resamples": "int64", "bootstrap_seed": "int64", "same_best": "bool"}
        return pd.DataFrame(rows, columns=list(CORRELATION_COLUMNS)).astype(
            {c: ints.get(c, "str" if c in ("experiment_a", "experiment_b", "match") else "float64")
             for c in CORRELATION_COLUMNS})


def choose_match(match: str, per_source: list[list[Entry]]) -> str:
    """`match` itself, or for ``auto``: ``name`` unless two architectures of one experiment
    differ only in width (then ``hash``).

    Raises:
        ConfigError: `match` is not one of `MATCHES`, or ``name`` where it is ambiguous.
    """
    if match not in MATCHES:
        raise ConfigError(f"--match must be one of {', '.join(MATCHES)}, but got {match!r}.")
    ambiguous = next((e for entries in per_source for e in entries
                      if sum(x.width_free_name == e.width_free_name for x in entries) > 1), None)
    if match == "name" and ambiguous is not None:
        raise ConfigError(f"--match name: {ambiguous.width_free_name!r} names several architectures of one "
                          "experiment (its width varies); use --match hash.")
    if match == "auto":
        return "hash" if ambiguous is not None else "name"
    return match


def compare(sources: list[Source], per_source: list[list[Entry]], *, match: str = "auto",
            resamples: int = RESAMPLES, seed: int = 0) -> Comparison:
    """Compare the experiments `sources` whose results are `per_source` (`read_entries`).

    The correlations need `MIN_SHARED` shared architectures; with fewer, `correlations` is
    empty (the caller says so).

    Raises:
        ConfigError: a bad `match` (`choose_match`), or `resamples` < 100.
    """
    if resamples < 100:
        raise ConfigError(f"--resamples must be at least 100 for a 95% CI, but got {resamples}.")
    used = choose_match(match, per_source)
    keyed = {s.label: {(e.arch_hash if used == "hash" else e.width_free_name): e for e in entries}
             for s, entries in zip(sources, per_source)}
    labels = [s.label for s in sources]
    shared = set.intersection(*(set(k) for k in keyed.values()))
    first = keyed[labels[0]]
    keys = sorted(shared, key=lambda k: (-first[k].accuracy.mean, k))
    only = {label: sorted(set(keyed[label]) - shared) for label in labels}
    correlations = []
    if len(keys) >= MIN_SHARED:
        correlations = [correlate(a, b, [keyed[a][k] for k in keys], [keyed[b][k] for k in keys],
                                  resamples=resamples, seed=seed)
                        for i, a in enumerate(labels) for b in labels[i + 1:]]
    return Comparison(sources, used, keys, {label: {k: keyed[label][k] for k in keys} for label in labels},
                      only, correlations)


def read_comparison(sources: list[Source], *, match: str = "auto", resamples: int = RESAMPLES,
                    seed: int = 0) -> Comparison:
    """`compare` on the stores `sources` name, each opened once, read-only."""
    from nas.api import open_results
    from nas.errors import masked_url

    per_source, opened = [], {}
    try:
        for source in sources:
            if source.url not in opened:
                opened[source.url] = open_results(source.url)
            try:
                per_source.append(read_entries(opened[source.url].store, source.name))
            except ConfigError as err:  # which of the stores, when there are several
                raise ConfigError(f"{masked_url(source.url)}: {err}") from None
    finally:
        for results in opened.values():
            results.close()
    return compare(sources, per_source, match=match, resamples=resamples, seed=seed)
