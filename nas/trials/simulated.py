"""A stand-in trial for measuring the driver at scale: a synthetic learning curve in place of
training, through the real trial path (Ray Tune trainable, results, driver, store, Optuna).

Only the training is replaced: `SimulatedRun` answers `next_result` as `nas.trials.runner.
TrialRun` does, one epoch per call, with the same keys, but its accuracies come from a formula
of the architecture and seed and it sleeps `SIM_EPOCH_S` per epoch instead of training. It
imports no torch, so 64 of them fit on one small machine (`benchmarks/driver_scale.py`,
tests/test_driver_scale.py); for the same reason its params and FLOPs are a formula of the
depth too, not counted.

The curve: an architecture's final accuracy is a fixed function of its config (more residual
blocks and extra layers help a little, with diminishing returns, plus a per-architecture
offset from its hash), seeds add noise of `SEED_SD`, and each epoch approaches the final value
exponentially, plus the binomial noise of scoring `val_size` images.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from typing import Any

from nas.trials.tune import TrialTrainable

SIM_EPOCH_S = float(os.environ.get("NAS_SIM_EPOCH_S", "0.05"))  # seconds a worker sleeps per epoch
SEED_SD = 0.01  # seed-to-seed std of the final accuracy
TRAIN_S_PER_EPOCH = 2.0  # the train seconds reported per epoch, per unit of depth


def _unit(text: str) -> float:
    """A number in [0, 1) that depends only on `text`."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / 16**12


def final_accuracy(arch: dict[str, Any], seed: int) -> float:
    """The synthetic final val accuracy of an architecture config (its JSON form) and seed."""
    stages = [arch.get(f"L{i}", {}) for i in (1, 2, 3)]
    depth = sum(s.get("residual", 0) + s.get("extra", 0) for s in stages)
    quality = 0.80 + 0.03 * math.log1p(depth) + 0.04 * (_unit(json.dumps(arch, sort_keys=True)) - 0.5)
    noise = random.Random(f"{json.dumps(arch, sort_keys=True)}/{seed}").gauss(0.0, SEED_SD)
    return min(0.99, max(0.1, quality + noise))


class SimulatedRun:
    """`TrialRun`'s results, from `final_accuracy` instead of training."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.started_at = time.time()
        self.arch = json.loads(config["arch"]) if isinstance(config["arch"], str) else config["arch"]
        self.seed = int(config["seed"])
        self.epochs = int(config["recipe"]["epochs"])
        self.val_images = int(config["dataset"].get("val_size") or 0) or None
        self.final = final_accuracy(self.arch, self.seed)
        depth = sum(self.arch.get(f"L{i}", {}).get("residual", 0) for i in (1, 2, 3))
        self.epoch_seconds = TRAIN_S_PER_EPOCH * (1 + 0.25 * depth)
        self.params, self.flops = 1_000_000 * (6 + depth), 100_000_000 * (6 + depth)
        self.rng = random.Random(f"{config['arch']}/{self.seed}/curve")
        self.epoch = 0

    def next_result(self) -> dict[str, Any]:
        time.sleep(SIM_EPOCH_S)
        e = self.epoch
        self.epoch += 1
        clean = self.final * (1 - math.exp(-4.0 * (e + 1) / self.epochs)) / (1 - math.exp(-4.0))
        n = self.val_images or 10_000
        acc = min(1.0, max(0.0, clean + self.rng.gauss(0.0, math.sqrt(clean * (1 - clean) / n))))
        last = e == self.epochs - 1
        result = {
            "epoch": e, "train_loss": 2.3 * (1 - clean), "train_acc": clean,
            "val_acc": acc if self.val_images else None,
            "test_acc": acc if (last or not self.val_images) else None,
            "epoch_seconds": self.epoch_seconds, "cumulative_seconds": self.epoch_seconds * (e + 1),
            "val_images": self.val_images, "test_images": 10_000 if (last or not self.val_images) else None,
            "diverged": False, "device": f"simulated @ pid {os.getpid()}", "started_at": self.started_at,
            "params": self.params, "flops": self.flops,
        }
        if last:
            result["done"] = True
        return result

    def close(self) -> None:
        pass


class SimulatedTrainable(TrialTrainable):
    """`TrialTrainable` with `SimulatedRun` in place of `TrialRun`: everything else is real."""

    def setup(self, config: dict[str, Any]) -> None:
        self.run = SimulatedRun(config)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.run = SimulatedRun(new_config)
        return True
