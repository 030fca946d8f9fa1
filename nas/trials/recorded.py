"""A recorded table of results (the NAS-Bench idea): every (architecture, seed) of a grid study
trained once, kept as one small file, so decision strategies can be replayed on it many
times with ground truth from seeds they never see (issue 25; `benchmarks/record_decisions.py`
writes it from a `nas launch` of page_post4's `record` budget).

The file is a NumPy `.npz` (no pickle): per architecture (K) and seed (S), every epoch's (E)
train loss and accuracy, val and test accuracy and cumulative train seconds, and the last epoch's per-image correctness
on val and test (packed bits, `nas.stats.pack_correct`), with the recipe, data and code version
it was recorded under as JSON. A missing run is nan (accuracies, seconds) and zero bits with
`complete` False.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.db import Store
from nas.db.schema import Phase, TrialStatus

FORMAT = 1  # bumped when the arrays change meaning


@dataclass(frozen=True)
class Recording:
    """Results per (architecture, seed); arrays indexed [arch, seed, (epoch)]."""

    arch_hashes: tuple[str, ...]
    short_names: tuple[str, ...]
    seeds: tuple[int, ...]
    train_loss: np.ndarray  # (K, S, E) float, mean over the epoch's batches
    train_acc: np.ndarray  # (K, S, E)
    val_acc: np.ndarray  # (K, S, E)
    test_acc: np.ndarray  # (K, S, E)
    seconds: np.ndarray  # (K, S, E) cumulative train seconds
    val_correct: np.ndarray  # (K, S, ceil(val images / 8)) uint8, the last epoch
    test_correct: np.ndarray  # (K, S, ceil(test images / 8)) uint8
    val_images: int
    test_images: int
    complete: np.ndarray  # (K, S) bool: the run finished with every epoch recorded
    meta: dict[str, Any]  # recipe, dataset, experiment, code version, command

    def save(self, path: str | Path) -> None:
        arrays = {name: getattr(self, name) for name in
                  ("train_loss", "train_acc", "val_acc", "test_acc", "seconds", "val_correct", "test_correct",
                   "complete")}
        np.savez_compressed(path, format=np.array(FORMAT), arch_hashes=np.array(self.arch_hashes),
                            short_names=np.array(self.short_names), seeds=np.array(self.seeds),
                            images=np.array([self.val_images, self.test_images]),
                            meta=np.array(json.dumps(self.meta, sort_keys=True)), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != FORMAT:
                raise ValueError(f"{path}: recording format {int(data['format'])}, this nas reads {FORMAT}; "
                                 "record it again (benchmarks/record_decisions.py).")
            val_images, test_images = (int(v) for v in data["images"])
            return cls(tuple(map(str, data["arch_hashes"])), tuple(map(str, data["short_names"])),
                       tuple(int(s) for s in data["seeds"]), data["train_loss"], data["train_acc"], data["val_acc"],
                       data["test_acc"], data["seconds"],
                       data["val_correct"], data["test_correct"], val_images, test_images, data["complete"],
                       json.loads(str(data["meta"])))


def from_store(store: Store, experiment: str, meta: dict[str, Any] | None = None) -> Recording:
    """The completed search trials of `experiment` as a `Recording` (architectures in the order
    they first ran, seeds ascending; the last result of an (architecture, seed) counts)."""
    found = store.get_experiment(experiment)
    if found is None:
        raise KeyError(f"no experiment named {experiment!r} in the store.")
    trials = [t for t in store.trials(experiment_id=found.id, phase=Phase.SEARCH, status=TrialStatus.COMPLETED)]
    hashes = list(dict.fromkeys(t.arch_hash for t in trials))
    seeds = sorted({t.seed for t in trials})
    epochs = max((t.epochs_planned for t in trials), default=0)
    k, s = len(hashes), len(seeds)
    val_bits = store.correct([t.id for t in trials], "val")
    test_bits = store.correct([t.id for t in trials], "test")
    val_images = max((n for _, n in val_bits.values()), default=0)
    test_images = max((n for _, n in test_bits.values()), default=0)
    out = {name: np.full((k, s, epochs), np.nan)
           for name in ("train_loss", "train_acc", "val_acc", "test_acc", "seconds")}
    val_correct = np.zeros((k, s, (val_images + 7) // 8), dtype=np.uint8)
    test_correct = np.zeros((k, s, (test_images + 7) // 8), dtype=np.uint8)
    complete = np.zeros((k, s), dtype=bool)
    for trial in trials:
        i, j = hashes.index(trial.arch_hash), seeds.index(trial.seed)
        rows = store.epochs(trial.id)
        for row in rows:
            out["train_loss"][i, j, row.epoch] = row.train_loss
            out["train_acc"][i, j, row.epoch] = row.train_acc
            out["val_acc"][i, j, row.epoch] = np.nan if row.val_acc is None else row.val_acc
            out["test_acc"][i, j, row.epoch] = np.nan if row.test_acc is None else row.test_acc
            out["seconds"][i, j, row.epoch] = row.cumulative_seconds
        if trial.id in val_bits and val_bits[trial.id][1] == val_images:
            val_correct[i, j] = np.frombuffer(val_bits[trial.id][0], dtype=np.uint8)
        if trial.id in test_bits and test_bits[trial.id][1] == test_images:
            test_correct[i, j] = np.frombuffer(test_bits[trial.id][0], dtype=np.uint8)
        complete[i, j] = len(rows) == epochs and trial.id in val_bits
    names = tuple(store.get_architecture(h).short_name for h in hashes)
    return Recording(tuple(hashes), names, tuple(seeds), out["train_loss"], out["train_acc"], out["val_acc"],
                     out["test_acc"], out["seconds"],
                     val_correct, test_correct, val_images, test_images, complete,
                     {"experiment": experiment, "code_version": found.code_version,
                      "config": json.loads(found.config_json) if found.config_json else {}, **(meta or {})})
