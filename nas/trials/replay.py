"""A trial served from a recording (`nas.trials.recorded`) instead of trained: the results a
recorded (architecture, seed) produced, epoch by epoch, with the keys `nas.trials.runner.
TrialRun` reports, so the search controller, its pruner and the confirm race decide on them
unchanged (`benchmarks/decision_quality.py`).

Which recorded seed plays a strategy's seed is the caller's choice (`seeds`): a replay draws
the strategy's seeds from one half of the recorded ones and keeps the other half for the
ground truth, so no result the strategy sees is part of what it is judged against.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from nas.models.arch import ArchConfig
from nas.trials.recorded import Recording


class ReplayRun:
    """`TrialRun`'s results for the trial `config` describes, from `recording`.

    Args:
        recording: the recorded table.
        seeds: strategy seed -> recorded seed.
        config: the trial's Ray Tune config (`nas.trials.runner.trial_config`).
    """

    def __init__(self, recording: Recording, seeds: Mapping[int, int], config: dict[str, Any]) -> None:
        arch = ArchConfig.from_json(config["arch"]) if isinstance(config["arch"], str) else \
            ArchConfig.from_dict(config["arch"])
        if arch.hash not in recording.arch_hashes:
            raise KeyError(f"{arch.short_name()} ({arch.hash}) is not in the recording.")
        seed = int(config["seed"])
        if seed not in seeds:
            raise KeyError(f"seed {seed} has no recorded seed to play it.")
        self.recording = recording
        self.i = recording.arch_hashes.index(arch.hash)
        self.j = recording.seeds.index(seeds[seed])
        if not recording.complete[self.i, self.j]:
            raise KeyError(f"{arch.short_name()} seed {seeds[seed]} did not complete in the recording.")
        self.epochs = int(config["recipe"]["epochs"])
        self.epoch = 0

    def next_result(self) -> dict[str, Any]:
        r, i, j, e = self.recording, self.i, self.j, self.epoch
        self.epoch += 1
        last = e == self.epochs - 1
        seconds = float(r.seconds[i, j, e])
        result = {
            "epoch": e, "train_loss": float(r.train_loss[i, j, e]), "train_acc": float(r.train_acc[i, j, e]),
            "val_acc": _value(r.val_acc[i, j, e]), "test_acc": _value(r.test_acc[i, j, e]),
            "epoch_seconds": seconds - (float(r.seconds[i, j, e - 1]) if e else 0.0), "cumulative_seconds": seconds,
            "val_images": r.val_images or None, "test_images": r.test_images or None,
            "diverged": False, "device": "replay", "started_at": None,  # params, FLOPs: counted by the driver
        }
        if last:
            result.update(val_correct=r.val_correct[i, j].tobytes(), test_correct=r.test_correct[i, j].tobytes(),
                          done=True)
        return result


def _value(value: float) -> float | None:
    return None if not math.isfinite(float(value)) else float(value)


def recorded_seed_map(strategy_seeds: list[int], recorded: list[int]) -> dict[int, int]:
    """Strategy seed -> recorded seed, in order; more strategy seeds than recorded is an error."""
    if len(strategy_seeds) > len(recorded):
        raise ValueError(f"{len(strategy_seeds)} strategy seeds but {len(recorded)} recorded seeds to play them.")
    return dict(zip(strategy_seeds, recorded))
