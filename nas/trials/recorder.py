"""The one writer of a trial's rows, for `nas train`, `nas launch` and `nas ablate` alike.

    start (architecture + trial row) -> epoch, epoch, ... -> artefacts -> finish (status)

Rows are committed as they happen, so a process that dies loses at most the epoch in flight;
given a `WriteBehind` (`nas launch`), they are queued to it in that order, and `trial_id` is
known once its first rows are written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import datetime
from functools import partial
from typing import Any

from nas.db import Store
from nas.db.schema import Phase, TrialStatus
from nas.db.write_behind import WriteBehind
from nas.provenance import code_version
from nas.trials.artifacts import ARTIFACTS, Artifact, TrialSetup

EPOCH_FIELDS = ("train_loss", "train_acc", "val_acc", "test_acc", "epoch_seconds", "cumulative_seconds",
                "val_images", "test_images", "val_correct", "test_correct")  # a result without one
                # (an older worker, the simulated trainer) records None


class TrialRecorder:
    """Records one (architecture, seed) trial of an experiment in the store.

    Args:
        store: the store, open for writing.
        experiment_id: the experiment the trial belongs to.
        setup: what the trial trains (architecture, recipe, data, seed).
        phase: train | search | confirm | ablation.
        costs: the architecture's (params, FLOPs), stored with it.
        device: where it trains, e.g. ``cpu (Intel Xeon, 2 threads) @ 10.0.0.2/ab12cd34``.
        started_at: when the trial started (an aware datetime: a Ray worker's clock, carried in
            its first result); None: now.
        writes: where the writes are queued, in order (`nas.db.write_behind`); None: written at once.
    """

    def __init__(self, store: Store, experiment_id: int, setup: TrialSetup, phase: Phase | str, *,
                 costs: tuple[int, int], device: str, started_at: datetime | None = None,
                 writes: WriteBehind | None = None) -> None:
        arch = setup.arch
        self.store = store
        self.setup = setup
        self.writes = writes
        self.trial_id: int | None = None
        params, flops = costs
        recipe_json = json.dumps({"recipe": setup.recipe.to_dict(), "dataset": asdict(setup.data_cfg)},
                                 sort_keys=True)

        def start() -> None:
            store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), params, flops)
            self.trial_id = store.start_trial(
                experiment_id, arch.hash, setup.seed, phase, epochs_planned=setup.recipe.epochs,
                recipe_json=recipe_json, device=device, code_version=code_version(), started_at=started_at,
            )

        self._write(start)

    def epoch(self, metrics: Mapping[str, Any]) -> None:
        """One epoch's metrics (`EpochMetrics.to_dict()`, or a Ray Tune result holding them)."""
        epoch, values = int(metrics["epoch"]), {name: metrics.get(name) for name in EPOCH_FIELDS}
        self._write(lambda: self.store.record_epoch(self.trial_id, epoch, **values))

    def artifacts(self, values: Mapping[str, Any]) -> None:
        """Store a finished trial's artefacts (`nas.trials.artifacts.compute_artifacts`)."""
        for artifact in ARTIFACTS:
            if artifact.name in values:
                self._write(partial(self._save, artifact, values[artifact.name]))

    def finish(self, status: TrialStatus | str, *, train_seconds: float | None = None,
               error: str | None = None, prune_reason: str | None = None) -> None:
        """The trial's final status; its final metrics are its last recorded epoch's."""
        self._write(lambda: self.store.finish_trial(self.trial_id, status, train_seconds=train_seconds, error=error,
                                                    prune_reason=prune_reason))

    def _save(self, artifact: Artifact, value: Any) -> None:
        artifact.save(self.store, self.trial_id, value)

    def _write(self, write: Callable[[], object]) -> None:
        if self.writes is None:
            write()
        else:
            self.writes.submit(write)
