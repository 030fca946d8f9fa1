"""What one trial is before it runs: an (architecture, seed) in a phase, and what the driver
learns of it while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nas.db.schema import Phase, TrialStatus
from nas.models.arch import ArchConfig

if TYPE_CHECKING:
    from nas.trials.recorder import TrialRecorder

# A trial that counts as done: it needs no re-run (interrupted and running ones do).
FINISHED = (TrialStatus.COMPLETED, TrialStatus.PRUNED, TrialStatus.DIVERGED, TrialStatus.FAILED)
# A trial whose final accuracy is a result of (architecture, seed): trained to its end.
RESULTS = (TrialStatus.COMPLETED, TrialStatus.DIVERGED)


@dataclass
class TrialPlan:
    """One (architecture, seed) run in a phase; the driver hands it to Ray Tune."""

    arch: ArchConfig
    seed: int
    phase: Phase
    save_weights: bool = False  # keep the final state_dict (confirm: `nas export` needs it)
    # -- filled in while it runs --
    recorder: TrialRecorder | None = None  # from its first result (or its end, if none came)
    pruned: bool = False  # the scheduler stopped it
    prune_reason: str | None = None  # why, as nas.search.pruning.PruneReason's JSON (stored with the row)
    last: dict[str, Any] = field(default_factory=dict)  # the newest result

    @property
    def accuracy(self) -> float | None:
        """The newest result's accuracy the search judges by (`judged_accuracy`)."""
        return judged_accuracy(self.last.get("val_acc"), self.last.get("test_acc"))


def judged_accuracy(val_acc: float | None, test_acc: float | None) -> float | None:
    """The accuracy a trial is judged by: val when the data has a val split, else test."""
    return val_acc if val_acc is not None else test_acc
