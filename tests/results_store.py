"""A small store with known contents for the results API and its formats (written through
`nas.db.Store` as the driver and `nas ablate` write, no training).

Experiment ``known`` searches ``L1.residual`` (0 or 1; width fixed at 0.25) for val accuracy
against params. A = R:L1 (residual 1) is more accurate and smaller than B (residual 0), so A
is on the first Pareto front and B on the second. Search: A seed 0 completed in two epochs,
B seed 0 pruned after one. Confirm: both on the race's first three seeds. Ablation: B linked as A's variant
``L1.residual 1 -> 0``, paired with A on the confirm seeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nas.db import Store
from nas.models.arch import ArchConfig, StageConfig
from nas.search.pruning import PruneReason
from nas.search.race import CONFIRM_SEED_BASE

EXPERIMENT = "known"
A = ArchConfig(width=0.25, L1=StageConfig(residual=1))
B = ArchConfig(width=0.25)
PARAMS = {A.hash: 2_000, B.hash: 3_000}
FLOPS = {A.hash: 5_000_000, B.hash: 4_000_000}
VAL_IMAGES, TEST_IMAGES = 1_000, 10_000
DEVICE = "cpu (test)"
CODE = "0.1.0+test"
CONFIG = {
    "name": EXPERIMENT,
    "space": {"width": {"fixed": 0.25}, "L1.residual": {"choice": [0, 1]}},
    "search": {"seed": 0, "repeats": 1, "objectives": [{"metric": "val_acc", "direction": "maximize"},
                                                         {"metric": "params", "direction": "minimize"}]},
    "confirm": {"top_k": 2, "repeats": 3},
}
# (train_loss, train_acc, val_acc, test_acc) per epoch, 2 s an epoch
SEARCH = {A.hash: [(1.5, 0.40, 0.38, 0.37), (1.0, 0.60, 0.55, 0.54)], B.hash: [(1.6, 0.35, 0.30, 0.29)]}
CONFIRM_SEEDS = tuple(CONFIRM_SEED_BASE + k for k in range(3))  # as the confirm race numbers them
CONFIRM_VAL = {A.hash: (0.80, 0.82, 0.81), B.hash: (0.70, 0.73, 0.71)}


@dataclass(frozen=True)
class Known:
    url: str
    trial_ids: dict[tuple[str, str, int], int]  # (phase, arch hash, seed) -> trial id


def known_store(path) -> Known:
    """Write experiment ``known`` into a new SQLite store at `path`."""
    url = f"sqlite:///{path}"
    ids = {}
    with Store.open(url) as store:
        exp = store.ensure_experiment(EXPERIMENT, config_json=json.dumps(CONFIG), code_version=CODE)
        for arch in (A, B):
            store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), PARAMS[arch.hash], FLOPS[arch.hash])
        for arch, status in ((A, "completed"), (B, "pruned")):
            ids["search", arch.hash, 0] = _trial(store, exp, arch, 0, "search", SEARCH[arch.hash], status)
        for arch in (A, B):
            for seed, val in zip(CONFIRM_SEEDS, CONFIRM_VAL[arch.hash]):
                ids["confirm", arch.hash, seed] = _trial(store, exp, arch, seed, "confirm",
                                                         [(0.5, 0.9, val, val - 0.01)], "completed")
        store.add_ablation_variant(exp, A.hash, B.hash, key="L1.residual", move="off",
                                   change="L1.residual 1 -> 0", position=0, looks=(3, 3))
        store.finish_experiment(exp, "finished")
    return Known(url, ids)


PRUNE_REASON = PruneReason("margin", 0, 0.30, 0.40, 50.0, 6, 2.0, 0.01, 3, 0.033, 0.8, 0.3, 6, "PercentilePruner")


def _trial(store, exp, arch, seed, phase, epochs, status) -> int:
    trial = store.start_trial(exp, arch.hash, seed, phase, epochs_planned=2, recipe_json="{}", device=DEVICE,
                              code_version=CODE)
    for epoch, (loss, train_acc, val, test) in enumerate(epochs):
        store.record_epoch(trial, epoch, train_loss=loss, train_acc=train_acc, val_acc=val, test_acc=test,
                           epoch_seconds=2.0, cumulative_seconds=2.0 * (epoch + 1), val_images=VAL_IMAGES,
                           test_images=TEST_IMAGES)
    # a pruned trial stores why (nas.search.pruning): the numbers are the example's own
    reason = PRUNE_REASON.to_json() if status == "pruned" else None
    store.finish_trial(trial, status, prune_reason=reason)
    return trial
