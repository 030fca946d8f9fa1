"""Decision quality measured by replay (the NAS-Bench idea): a strategy run many times on a
recorded table of results (`nas.trials.recorded`), judged against ground truth from seeds it
never sees.

One replay draws a split of the recorded seeds that completed for every architecture: the
first half plays the strategy's seeds (its search seed, then the confirm seeds in order:
`nas.trials.replay.ReplayRun`), the second half is the truth, each architecture's mean final
val accuracy over it. The strategy runs through the real launch (search controller, pruner,
race), in this process (`nas.trials.inline`); brute force and search-only are judged on the
same split: brute force takes the best mean over `brute_seeds` of the strategy's half, every
architecture unpruned; search-only is the strategy's own search without its confirm phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from nas.config.experiment import ExperimentSpec
from nas.db import Store
from nas.db.schema import Phase, TrialStatus
from nas.results import confirm_groups
from nas.search.controller import planned_architectures
from nas.search.launch import launch
from nas.search.pruning import pilot_size
from nas.search.race import BEST, CONFIRM_SEED_BASE, WORSE
from nas.trials.inline import run_inline
from nas.trials.recorded import Recording
from nas.trials.replay import ReplayRun, recorded_seed_map


@dataclass(frozen=True)
class Outcome:
    """One replay: each strategy's pick, its regret against the truth, and what it spent."""

    winner: str  # the strategy's answer (arch hash): the race's best, else its search's most accurate
    search_winner: str  # search-only: the most accurate completed search trial
    brute_winner: str  # brute force: the best mean over its seeds
    regret: float  # truth(best) - truth(winner), a fraction
    search_regret: float
    brute_regret: float
    epochs: int  # the strategy's epochs trained, every phase, pruned trials' included
    brute_epochs: int
    false_worse: bool  # the race called `worse` one whose truth is not below the race's best's


def usable_seeds(recording: Recording) -> list[int]:
    """The recorded seeds every architecture completed."""
    return [s for j, s in enumerate(recording.seeds) if recording.complete[:, j].all()]


def replay_once(recording: Recording, spec: ExperimentSpec, store: Store, name: str, rng: np.random.Generator,
                brute_seeds: int = 5) -> Outcome:
    """One replay of `spec`'s strategy (as experiment `name` in `store`) on a fresh split."""
    seeds = list(rng.permutation(usable_seeds(recording)))
    half = len(seeds) // 2
    strategy_half, truth_half = seeds[:half], seeds[half:]
    confirm = spec.confirm.max_repeats if spec.confirm.until_separated else spec.confirm.repeats
    pilot = 1 if pilot_size(spec.search.pruner, spec.search.repeats, planned_architectures(spec)) else 0  # its second seed
    played = [*range(spec.search.seed, spec.search.seed + spec.search.repeats + pilot),
              *range(CONFIRM_SEED_BASE, CONFIRM_SEED_BASE + (confirm if spec.confirm.top_k else 0))]
    seed_map = recorded_seed_map(played, [int(s) for s in strategy_half])
    columns = [recording.seeds.index(s) for s in truth_half]
    truth = dict(zip(recording.arch_hashes, np.nanmean(recording.val_acc[:, columns, -1], axis=1)))
    best = max(truth.values())

    url = store.engine.url.render_as_string(hide_password=False)
    launched = launch(replace(spec, name=name), store=store, db_url=url, data_root=".",
                      log=lambda line: None, executor=partial(run_inline, make_run=partial(ReplayRun, recording,
                                                                                           seed_map)))
    trials = store.trials(experiment_id=launched.experiment_id)
    searched = [t for t in trials if t.phase == Phase.SEARCH and t.status == TrialStatus.COMPLETED]
    search_winner = max(searched, key=lambda t: t.final_val_acc or -1.0).arch_hash
    groups = confirm_groups(store, name)
    winner = next((h for h, g in groups.items() if g.decision == BEST), search_winner)
    false_worse = any(g.decision == WORSE and truth[h] >= truth[winner] for h, g in groups.items())

    brute_columns = [recording.seeds.index(s) for s in strategy_half[:brute_seeds]]
    brute_means = np.nanmean(recording.val_acc[:, brute_columns, -1], axis=1)
    brute_winner = recording.arch_hashes[int(np.argmax(brute_means))]
    epochs = recording.val_acc.shape[2]
    return Outcome(winner=winner, search_winner=search_winner, brute_winner=brute_winner,
                   regret=best - truth[winner], search_regret=best - truth[search_winner],
                   brute_regret=best - truth[brute_winner], epochs=sum(t.epochs_done for t in trials),
                   brute_epochs=len(recording.arch_hashes) * brute_seeds * epochs, false_worse=false_worse)


def share_ci(hits: int, n: int) -> tuple[float, float, float]:
    """A share with its 95% Wilson interval."""
    if n == 0:
        return math.nan, math.nan, math.nan
    p, z = hits / n, 1.959964
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, centre - half, centre + half


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """A mean with its 95% normal interval over the replays."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return (float(x.mean()) if len(x) else math.nan), math.nan, math.nan
    half = 1.959964 * float(x.std(ddof=1)) / math.sqrt(len(x))
    return float(x.mean()), float(x.mean()) - half, float(x.mean()) + half
