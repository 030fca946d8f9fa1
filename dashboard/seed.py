"""A synthetic store: what `nas launch` would write, without training anything.

`seed_store(url)` writes through `nas.db.Store`, method by method, as the search driver
does: an experiment with a pruned search phase (completed, pruned, failed and diverged
trials, every epoch recorded) and a confirm phase (the best architectures again with
fresh seeds, unpruned), a second experiment still running, and the Optuna studies of the
same names in the same database (``<name>`` and ``<name>:pruning``).

Accuracies and times come from a made-up, monotone model of the architecture (residual
blocks help, width and depth cost time), so the fronts, curves and importances have
shape. The dashboard's tests and benchmark use it; it also lets one look at the
dashboard without a GPU. The numbers are not results: never seed a real store.

    python -m nas.dashboard.seed /tmp/demo.db && nas dashboard --db /tmp/demo.db
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import sys
from dataclasses import dataclass, field

from nas.data.config import TEST_IMAGES
from nas.db import Store

from nas.models.arch import STAGES, ArchConfig, StageConfig
from nas.search.confirm import CONFIRM_SEED_BASE
from nas.search.pruning import PruneReason

SEARCH_SEED_BASE = 0  # the search phase's seeds, as the driver derives them
DEVICE = "NVIDIA H100 80GB HBM3 (synthetic)"
SEEDED_VAL_IMAGES = 1000  # the seeded experiments' val split
DIMENSIONS = tuple(f"{stage}.{attr}" for stage in STAGES for attr in ("extra", "residual"))
BASE_CHANNELS = {"prep": 64, "L1": 128, "L2": 256, "L3": 512}  # nas.models.builder, width 1
SECONDS_PER_GFLOP = 4.0  # synthetic training cost: seconds per epoch per GFLOP/image


@dataclass(frozen=True)
class Seeded:
    """What `seed_store` wrote, for tests to compare against."""

    url: str
    experiment: str  # the finished experiment (search + confirm)
    live_experiment: str  # the running one
    epochs: int  # planned per trial
    search_ids: list[int] = field(default_factory=list)
    confirm_ids: list[int] = field(default_factory=list)
    pruned_ids: list[int] = field(default_factory=list)
    failed_ids: list[int] = field(default_factory=list)
    confirmed_hashes: list[str] = field(default_factory=list)
    ablation_ids: list[int] = field(default_factory=list)


# ---- the synthetic model ----------------------------------------------------------------


def arch_of(point: dict[str, int], width: float) -> ArchConfig:
    """The architecture of a flat space point such as ``{"L1.residual": 1, ...}``."""
    stages = {s: {} for s in STAGES}
    for key, value in point.items():
        stage, attr = key.split(".")
        stages[stage][attr] = value
    return ArchConfig(width=width, **{s: StageConfig(**v) for s, v in stages.items()})


def costs(arch: ArchConfig) -> tuple[int, int]:
    """(parameters, forward FLOPs per 32x32 image) of the fast ResNet, counted by hand.

    Same conventions as `nas.models.count_params` / `count_flops` (a multiply-add is 2
    FLOPs; BN, ReLU and pooling count 0), without building the network.
    """
    channels = {name: max(1, round(c * arch.width)) for name, c in BASE_CHANNELS.items()}

    def conv(cin: int, cout: int, side: int) -> tuple[int, int]:
        return cin * cout * 9 + 2 * cout, 2 * cin * cout * 9 * side * side

    params, flops = conv(3, channels["prep"], 32)
    previous, side = channels["prep"], 32
    for stage in STAGES:
        c, cfg = channels[stage], getattr(arch, stage)
        p, f = conv(previous, c, side)
        side //= 2
        same = conv(c, c, side)
        params += p + (cfg.extra + 2 * cfg.residual) * same[0]
        flops += f + (cfg.extra + 2 * cfg.residual) * same[1]
        previous = c
    return params + previous * 10, flops + 2 * previous * 10


def final_accuracy(arch: ArchConfig, seed: int) -> float:
    """The synthetic model's final validation accuracy (a fraction) for one seed."""
    quality = 0.80 + 0.05 * math.log2(arch.width) / 4
    quality += 0.040 * min(arch.L1.residual, 1) + 0.012 * min(arch.L2.residual, 1)
    quality += 0.045 * min(arch.L3.residual, 1)
    quality += 0.010 * min(arch.L1.extra, 1) + 0.006 * min(arch.L2.extra, 1) - 0.004 * arch.L3.extra
    noise = random.Random(f"{arch.hash}:{seed}").gauss(0.0, 0.004)
    return min(0.99, max(0.1, quality + noise))


def curve(arch: ArchConfig, seed: int, epochs: int) -> list[dict[str, float]]:
    """Per-epoch metrics of one synthetic run: accuracy rising to `final_accuracy`."""
    final = final_accuracy(arch, seed)
    rng = random.Random(f"curve:{arch.hash}:{seed}")
    per_epoch = SECONDS_PER_GFLOP * costs(arch)[1] / 1e9 + 0.4
    rows, total = [], 0.0
    for epoch in range(epochs):
        progress = 1.0 - math.exp(-3.0 * (epoch + 1) / epochs)
        progress /= 1.0 - math.exp(-3.0)
        val = 0.1 + (final - 0.1) * progress + rng.gauss(0.0, 0.003)
        seconds = per_epoch * rng.uniform(0.97, 1.03)
        total += seconds
        rows.append(dict(
            train_loss=2.3 * (1.0 - progress) + 0.2 + rng.uniform(0, 0.02),
            train_acc=min(1.0, val + 0.02), val_acc=val, test_acc=val - 0.003,
            epoch_seconds=seconds, cumulative_seconds=total,
        ))
    return rows


def experiment_config(name: str, *, width: float, epochs: int, n_trials: int) -> dict:
    """An experiment config of the shape `ExperimentSpec.resolved()` stores."""
    return {
        "name": name,
        "budget": "synthetic",
        "dataset": {"name": "cifar10", "root": None, "train_subset": 5000, "val_size": SEEDED_VAL_IMAGES},
        "recipe": {"epochs": epochs, "batch_size": 512, "lr": 0.4},
        "space": {"width": {"fixed": width}, **{key: {"choice": [0, 1]} for key in DIMENSIONS}},
        "search": {
            "sampler": "tpe", "n_trials": n_trials, "seed": 0, "repeats": 1,
            "objectives": [
                {"metric": "val_acc", "direction": "maximize"},
                {"metric": "train_seconds", "direction": "minimize"},
            ],
            "pruner": {"kind": "median", "n_startup_trials": 5, "n_warmup_steps": 1},
        },
        "confirm": {"top_k": 3, "repeats": 3},
        "resources": {"cpus_per_trial": 2, "gpus_per_trial": 1, "max_concurrent": 1, "max_failures": 2},
    }


# ---- writing ----------------------------------------------------------------------------


def seed_store(
    url: str,
    *,
    experiment: str = "cifar_fast",
    n_search: int = 24,
    epochs: int = 6,
    width: float = 0.25,
    top_k: int = 3,
    confirm_seeds: int = 3,
    with_study: bool = True,
    with_ablation: bool = False,
) -> Seeded:
    """Write a finished experiment and a running one into the store at `url`.

    Args:
        url: a database URL; the store is created (upgraded) if new.
        experiment: the finished experiment's name; the running one is ``<name>_live``.
        n_search: search-phase trials (architectures drawn from the 64-point space).
        epochs: planned epochs per trial; pruned trials stop after ``epochs // 2``.
        width: the fixed width multiplier of every architecture.
        top_k: architectures re-run in the confirm phase, with `confirm_seeds` seeds each.
        with_study: also write the Optuna studies (``<name>`` and ``<name>:pruning``).
        with_ablation: also write what `nas ablate` would: the confirmed winner's variants
            with one residual block fewer, linked to it, run on its confirm seeds.
    """
    rng = random.Random(0)
    grid = [dict(zip(DIMENSIONS, values)) for values in itertools.product((0, 1), repeat=len(DIMENSIONS))]
    points = [rng.choice(grid) for _ in range(n_search)]
    live = f"{experiment}_live"
    seeded = Seeded(url=url, experiment=experiment, live_experiment=live, epochs=epochs)
    study_rows: list[tuple[dict[str, int], str, list[dict[str, float]], str, int]] = []
    with Store.open(url) as store:
        config = experiment_config(experiment, width=width, epochs=epochs, n_trials=n_search)
        exp_id = store.ensure_experiment(experiment, config_json=json.dumps(config, sort_keys=True),
                                         code_version="0.1.0+synthetic")
        completed: list[float] = []
        used: dict[str, set[int]] = {}
        for i, point in enumerate(points):
            arch = arch_of(point, width)
            seed = SEARCH_SEED_BASE
            while seed in used.setdefault(arch.hash, set()):
                seed += 1
            used[arch.hash].add(seed)
            rows = curve(arch, seed, epochs)
            if i == 7:
                status, rows = "failed", rows[:1]
            elif i == 11:
                status = "diverged"
                rows = [dict(r, train_loss=1e30, val_acc=0.1, test_acc=0.1, train_acc=0.1) for r in rows[:2]]
            elif i >= 5 and completed and rows[-1]["val_acc"] < sorted(completed)[len(completed) // 3]:
                status, rows = "pruned", rows[: max(1, epochs // 2)]
            else:
                status = "completed"
                completed.append(rows[-1]["val_acc"])
            trial_id = _write_trial(store, exp_id, arch, seed, "search", rows, status, epochs)
            seeded.search_ids.append(trial_id)
            if status == "pruned":
                seeded.pruned_ids.append(trial_id)
            if status == "failed":
                seeded.failed_ids.append(trial_id)
            study_rows.append((point, status, rows, arch.hash, seed))
        for arch in _top(points, width, study_rows, top_k):
            seeded.confirmed_hashes.append(arch.hash)
            for k in range(confirm_seeds):
                seed = CONFIRM_SEED_BASE + k
                rows = curve(arch, seed, epochs)
                seeded.confirm_ids.append(
                    _write_trial(store, exp_id, arch, seed, "confirm", rows, "completed", epochs))
        if with_ablation and seeded.confirmed_hashes:
            # As `nas ablate` does: each variant linked to the reference, run on its confirm seeds.
            winner = ArchConfig.from_json(store.get_architecture(seeded.confirmed_hashes[0]).config_json)
            for position, (key, arch) in enumerate(_without_each_residual(winner)):
                params, flops = costs(arch)
                store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), params, flops)
                before = getattr(winner, key.split(".")[0]).residual
                store.add_ablation_variant(
                    exp_id, winner.hash, arch.hash, key=key, move="off" if before == 1 else "down",
                    change=f"{key} {before} -> {before - 1}", position=position,
                )
                for k in range(confirm_seeds):
                    rows = curve(arch, CONFIRM_SEED_BASE + k, epochs)
                    seeded.ablation_ids.append(_write_trial(
                        store, exp_id, arch, CONFIRM_SEED_BASE + k, "ablation", rows, "completed", epochs))
        store.finish_experiment(exp_id, "finished")

        live_config = experiment_config(live, width=width * 2, epochs=epochs, n_trials=8)
        live_id = store.ensure_experiment(live, config_json=json.dumps(live_config, sort_keys=True),
                                          code_version="0.1.0+synthetic")
        for i, point in enumerate(grid[-5:]):
            arch = arch_of(point, width * 2)
            rows = curve(arch, 0, epochs)
            if i == 4:  # still training: two epochs so far
                _write_trial(store, live_id, arch, 0, "search", rows[:2], "running", epochs)
            else:
                _write_trial(store, live_id, arch, 0, "search", rows, "completed", epochs)
    if with_study:
        _write_studies(url, experiment, study_rows)
    return seeded


def _write_trial(store: Store, experiment_id: int, arch: ArchConfig, seed: int, phase: str,
                 rows: list[dict[str, float]], status: str, epochs: int) -> int:
    params, flops = costs(arch)
    store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), params, flops)
    recipe = json.dumps({"recipe": {"epochs": epochs, "batch_size": 512, "lr": 0.4},
                         "dataset": {"train_subset": 5000, "val_size": SEEDED_VAL_IMAGES}}, sort_keys=True)
    trial_id = store.start_trial(experiment_id, arch.hash, seed, phase, epochs_planned=epochs,
                                 recipe_json=recipe, device=DEVICE, code_version="0.1.0+synthetic")
    for epoch, metrics in enumerate(rows):
        # the seeded recipe's val split, and the 10,000 test images: every accuracy with its noise
        store.record_epoch(trial_id, epoch, val_images=SEEDED_VAL_IMAGES, test_images=TEST_IMAGES, **metrics)
    if status != "running":
        error = "RuntimeError: CUDA out of memory (synthetic)" if status == "failed" else None
        if status == "diverged":
            error = "train loss became inf"
        reason = None
        if status == "pruned":  # what the pruning rule (nas.search.pruning) stores: synthetic numbers
            last = rows[-1]["val_acc"]
            reason = PruneReason("margin", len(rows) - 1, last, last + 0.05, 50.0, 6, 2.0, 0.01, 3, 0.033, 0.8, 0.3,
                                 6, "PercentilePruner").to_json()
        store.finish_trial(trial_id, status, error=error, prune_reason=reason)
    return trial_id


def _without_each_residual(arch: ArchConfig) -> list[tuple[str, ArchConfig]]:
    """(changed key, variant) for each stage with a residual block: one block fewer."""
    variants = []
    for stage in STAGES:
        cfg = getattr(arch, stage)
        if cfg.residual:
            fewer = dataclasses.replace(cfg, residual=cfg.residual - 1)
            variants.append((f"{stage}.residual", arch.replace(**{stage: fewer})))
    return variants


def _top(points, width, study_rows, k) -> list[ArchConfig]:
    """The k best completed search architectures by final accuracy (the confirm set)."""
    best: dict[str, tuple[float, ArchConfig]] = {}
    for point, status, rows, arch_hash, _ in study_rows:
        if status == "completed":
            acc = rows[-1]["val_acc"]
            if arch_hash not in best or acc > best[arch_hash][0]:
                best[arch_hash] = (acc, arch_of(point, width))
    return [arch for _, arch in sorted(best.values(), key=lambda t: -t[0])[:k]]


def _write_studies(url: str, experiment: str, study_rows) -> None:
    """The Optuna studies the driver keeps next to the store (same database)."""
    import optuna
    from nas.db import resolve_db_url
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = resolve_db_url(url)
    if storage.startswith(("postgresql://", "postgres://")):  # psycopg 3, as nas.search does
        storage = "postgresql+psycopg://" + storage.split("://", 1)[1]
    study = optuna.create_study(study_name=experiment, storage=storage,
                                directions=["maximize", "minimize"], load_if_exists=True)
    pruning = optuna.create_study(study_name=f"{experiment}:pruning", storage=storage,
                                  direction="maximize", load_if_exists=True)
    distributions = {key: CategoricalDistribution([0, 1]) for key in DIMENSIONS}
    for point, status, rows, arch_hash, seed in study_rows:
        state = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(status, TrialState.FAIL)
        curve_values = {epoch: row["val_acc"] for epoch, row in enumerate(rows)}
        values = [rows[-1]["val_acc"], rows[-1]["cumulative_seconds"]] if state == TrialState.COMPLETE else None
        study.add_trial(create_trial(
            params=point, distributions=distributions, values=values, state=state,
            intermediate_values=curve_values, user_attrs={"seed": seed, "arch_hash": arch_hash},
        ))
        pruning.add_trial(create_trial(
            value=rows[-1]["val_acc"] if state == TrialState.COMPLETE else None, state=state,
            intermediate_values=curve_values,
        ))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m nas.dashboard.seed DB_URL_OR_PATH")
    done = seed_store(sys.argv[1])
    print(f"wrote {done.experiment} and {done.live_experiment} to {sys.argv[1]}")
