"""Results in Python: an experiment's trials, epochs, architectures and ablation as DataFrames.

    import nas

    with nas.open("sqlite:///nas.db") as results:      # or a PostgreSQL URL, or a file path
        print(results.experiments())                   # like `nas list`
        exp = results.experiment("cifar_fast")
        trials = exp.trials()                          # one row per trial
        curves = exp.epochs()                          # one row per trial and epoch
        archs = exp.architectures()                    # mean, 95% CI, Pareto front, decision
        ablation = exp.ablation()                      # each variant against the reference

Read-only on any store URL (the store is opened read-only: nothing is written, and a search
may be running meanwhile); no SQL in the user's code, and neither torch nor Ray is imported.
The columns and dtypes of each frame are `nas.frames.COLUMNS`; the statistics are the ones
`nas status` and `nas ablate` print (`nas.results`, `nas.ablation.report`), not recomputed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from nas.db import Experiment, Store, resolve_db_url
from nas.frames import ablation_frame, architectures_frame, epochs_frame, experiments_frame, trials_frame
from nas.trials.experiment import require_experiment


def open_results(url: str | os.PathLike[str] | None = None) -> Results:
    """The store at `url` (SQLAlchemy URL or SQLite path; default $NAS_DB, else ./nas.db), read-only.

    Raises:
        StoreError: no nas store there (a missing SQLite file is not created), or unreadable.
    """
    return Results(Store.open(resolve_db_url(None if url is None else os.fspath(url)), read_only=True))


class Results:
    """One store's results. Close it (or use it in a ``with``) to release its connections."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def experiments(self) -> pd.DataFrame:
        """One row per experiment, oldest first: trial counts by status, best accuracy, times."""
        return experiments_frame(self.store)

    def experiment(self, name: str) -> ExperimentResults:
        """The experiment called `name`.

        Raises:
            ConfigError: there is none; the message lists the experiments there are.
        """
        return ExperimentResults(self.store, require_experiment(self.store, name))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Results:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Results({self.store.url!r})"


@dataclass(frozen=True)
class ExperimentResults:
    """One experiment's results; each call reads the store afresh (a running search grows)."""

    store: Store
    experiment: Experiment

    @property
    def name(self) -> str:
        return self.experiment.name

    def trials(self) -> pd.DataFrame:
        """One row per trial, in start order: phase, status, architecture and its searched
        dimensions, seed, final metrics with their image counts, time, costs, provenance."""
        return trials_frame(self.store, self.experiment)

    def epochs(self) -> pd.DataFrame:
        """One row per trial and recorded epoch (from 0): the learning curves."""
        return epochs_frame(self.store, self.experiment)

    def architectures(self) -> pd.DataFrame:
        """One row per architecture and phase, in `nas status` order: accuracy mean with 95% CI
        and SD over seeds, Pareto front (from 1) and how sure it is, the race's decision."""
        return architectures_frame(self.store, self.experiment)

    def ablation(self) -> pd.DataFrame:
        """One row per ablation variant: its paired difference to the reference, p and verdict."""
        return ablation_frame(self.store, self.experiment)

    def frame(self, what: str) -> pd.DataFrame:
        """`trials`, `epochs`, `architectures` or `ablation` by name (the CLI's --what)."""
        readers = {"trials": self.trials, "epochs": self.epochs, "architectures": self.architectures,
                   "ablation": self.ablation}
        if what not in readers:
            raise ValueError(f"what must be one of {', '.join(readers)}, but got {what!r}.")
        return readers[what]()
