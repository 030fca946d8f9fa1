"""One trial inside its Ray worker: train an epoch per call, report it, and at the end carry
the trial's artefacts (`nas.trials.artifacts`) to the driver in the last result.

Workers never write the store: they only return results, and the driver records them. Each
result carries ``started_at``, when the trial started in the worker (epoch seconds), so the
trial's row says when it really started, not when its first epoch reached the driver, and the
architecture's ``params`` and ``flops``, counted in the worker.
"""

from __future__ import annotations

import time
from typing import Any

from nas.trials.artifacts import (
    WIRE_KEY,
    TrialSetup,
    compute_artifacts,
    encode_artifacts,
    final_metrics,
)


_COSTS: dict[str, tuple[int, int]] = {}  # (params, FLOPs) this worker counted, by architecture hash


def trial_config(setup: TrialSetup, phase: str, *, cpus: float, gpus: float) -> dict[str, Any]:
    """The Ray Tune config of one trial: plain data, read back by `TrialRun`."""
    from dataclasses import asdict

    return {
        "arch": setup.arch.to_json(), "seed": setup.seed, "phase": phase,
        "recipe": setup.recipe.to_dict(), "dataset": asdict(setup.data_cfg),
        "cpus": cpus, "gpus": gpus, "save_weights": setup.save_weights,
    }


def setup_of(config: dict[str, Any]) -> TrialSetup:
    """The `TrialSetup` a trial config describes (inverse of `trial_config`)."""
    from nas.data.config import DataConfig
    from nas.models.arch import ArchConfig
    from nas.training.recipe import Recipe

    return TrialSetup(arch=ArchConfig.from_json(config["arch"]), recipe=Recipe(**config["recipe"]),
                      data_cfg=DataConfig(**config["dataset"]), seed=config["seed"],
                      save_weights=bool(config.get("save_weights")))


class TrialRun:
    """One (architecture, seed) inside its Ray worker: trains it an epoch per `next_result`.

    Each call trains one epoch and returns it as a Ray Tune result; the last one (the last
    epoch, or a diverged one) has ``done`` set and, when the trial completed, carries its
    artefacts under `WIRE_KEY` and the metrics they add (e.g. ``mean_inference_flops``).
    The class trainable of `nas.trials.tune` calls it from its actor's main thread.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        # The trial starts here, on the worker's clock (epoch seconds): the driver only hears of
        # it at the first result, an epoch (and the data loading) later.
        self.started_at = time.time()
        import ray
        import torch

        from nas.data.tensors import load_data
        from nas.provenance import device_name
        from nas.training.loop import train_epochs
        from nas.trials.costs import count_costs

        self.setup = setup = setup_of(config)
        self.device = torch.device("cuda" if config["gpus"] > 0 and torch.cuda.is_available() else "cpu")
        self.data = load_data(setup.data_cfg, device=self.device)  # cached per worker process
        threads = max(1, int(config["cpus"])) if self.device.type == "cpu" else None
        node = ray.get_runtime_context()
        # Which machine of the cluster: timings are only comparable on the same hardware.
        self.described = (f"{device_name(self.device, threads)} @ "
                          f"{ray.util.get_node_ip_address()}/{node.get_node_id()[:8]}")
        # Counted here, not in the driver: a search meets thousands of architectures, and each
        # count runs every op of the net through FlopCounterMode (nas.trials.costs)
        if setup.arch.hash not in _COSTS:
            _COSTS[setup.arch.hash] = count_costs(setup.arch)
        self.params, self.flops = _COSTS[setup.arch.hash]
        self.epochs = train_epochs(setup.arch, setup.recipe, self.data, setup.data_cfg,
                                   seed=setup.seed, device=self.device, threads=threads)

    def next_result(self) -> dict[str, Any]:
        result = next(self.epochs)
        metrics = result.final
        diverged = result.status == "diverged"
        out = {**metrics.to_dict(), "diverged": diverged, "device": self.described, "started_at": self.started_at,
               "params": self.params, "flops": self.flops}
        if diverged or metrics.epoch == self.setup.recipe.epochs - 1:
            if not diverged:
                values = compute_artifacts(result.model, self.data, self.setup)
                out.update(final_metrics(values, self.setup))
                out[WIRE_KEY] = encode_artifacts(values)
            out["done"] = True
            self.close()
        return out

    def close(self) -> None:
        """Stop training (a pruned or finished trial) and restore the thread count."""
        self.epochs.close()
