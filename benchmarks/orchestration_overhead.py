"""What `nas launch` costs over calling the trainer in a loop.

The same K fixed trials (a grid over residual blocks at L1/L2/L3: 8 configs, one seed, no
pruning, no confirm) run two ways, alternating so that machine noise hits both alike:
  bare: one process loads the data once and calls `nas.training.loop.train` on each config;
  nas:  `nas.search.launch` on an already-started local Ray: Optuna in the driver, one
        Ray Tune trial per config (reused actor), every epoch written to a SQLite store.
`ray.init` is a one-off cost per `nas launch` and is printed, not counted. The rest of the
overhead is split in two, from when each trial ends (in the store for nas, timed for bare):
  startup:   nas's first trial ends this much later than bare's (Tuner start, the worker
             process, its torch import and data load, minus bare's own data load);
  per trial: the median over the K - 1 later trials of (nas's time from the previous
             trial's end to this one's) - (bare's), in the same grid order.

    python benchmarks/orchestration_overhead.py [--rounds 2] [--subset 5000] [--epochs 2]

Ends with `RESULT launch_vs_bare_ratio=R target<=1.10`,
`RESULT overhead_per_trial_s=S target<=0.5` and `RESULT startup_s=T` (no target: paid once).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml

from nas.data.archive import _load_cifar10_cached, resolve_data_root
from nas.data.tensors import _cached_splits, load_data
from nas.db import Store
from nas.search.launch import launch
from nas.config.experiment import load_experiment
from nas.training.loop import train


def write_space(folder: Path, args) -> Path:
    spec = {
        "name": "overhead",
        "dataset": {"train_subset": args.subset, "val_size": 1000},
        "recipe": {"epochs": args.epochs},
        "space": {"width": {"fixed": 0.25}, "L1.residual": {"choice": [0, 1]},
                  "L2.residual": {"choice": [0, 1]}, "L3.residual": {"choice": [0, 1]}},
        "search": {"sampler": "grid", "pruner": {"kind": "none"}},
        "confirm": {"top_k": 0},
        "resources": {"cpus_per_trial": None, "max_concurrent": 1},
    }
    path = folder / "overhead.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_bare(spec, root: str) -> tuple[float, list[float]]:
    """(total seconds, seconds from the start at which each trial ended)."""
    _cached_splits.cache_clear()  # read the data from disk every round, as a fresh process (and a Ray worker) does
    _load_cifar10_cached.cache_clear()
    start = time.perf_counter()
    data_cfg = replace(spec.dataset, root=root)
    data = load_data(data_cfg)
    ends = []
    for point in spec.space.grid():
        train(spec.space.arch_from_params(point), spec.recipe, data, data_cfg, seed=spec.search.seed)
        ends.append(time.perf_counter() - start)
    return time.perf_counter() - start, ends


def run_nas(spec, root: str, folder: Path, round_: int) -> tuple[float, list[float]]:
    """(total seconds, seconds from the start at which each trial ended, from the store)."""
    db = f"sqlite:///{folder}/round{round_}.db"
    start_wall, start = time.time(), time.perf_counter()
    with Store.open(db) as store:
        launch(spec, store=store, db_url=db, data_root=root, log=lambda line: None)
        total = time.perf_counter() - start
        trials = store.trials(experiment_id=store.get_experiment(spec.name).id)
        ends = sorted(t.finished_at.timestamp() - start_wall for t in trials)
    return total, ends


def gaps(ends: list[float]) -> list[float]:
    """Seconds from each trial's end to the next one's."""
    return [b - a for a, b in zip(ends, ends[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()

    import ray

    root = str(resolve_data_root(args.data_root))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = load_experiment(write_space(folder, args))
        k = len(spec.space.grid())
        start = time.perf_counter()
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray_start = time.perf_counter() - start
        print(f"{k} trials of {spec.recipe.epochs} epochs on {args.subset} images, {args.rounds} rounds; "
              f"ray.init took {ray_start:.1f} s (once per launch, not counted below)")
        bare, nas, startup, per_trial = [], [], [], []
        for r in range(args.rounds):
            (b, b_ends), (n, n_ends) = run_bare(spec, root), run_nas(spec, root, folder, r)
            bare.append(b)
            nas.append(n)
            startup.append(n_ends[0] - b_ends[0])
            per_trial.append(statistics.median(x - y for x, y in zip(gaps(n_ends), gaps(b_ends))))
            print(f"round {r}: bare {b:6.1f} s (first trial ends at {b_ends[0]:5.1f} s)   "
                  f"nas launch {n:6.1f} s (first trial ends at {n_ends[0]:5.1f} s)   "
                  f"later trials: nas - bare " + " ".join(f"{x - y:+.2f}" for x, y in zip(gaps(n_ends), gaps(b_ends))) + " s")
        ray.shutdown()
    ratio = statistics.median(n / b for n, b in zip(nas, bare))
    print(f"per trial: bare {statistics.median(bare) / k:.1f} s, nas {statistics.median(nas) / k:.1f} s; "
          f"total overhead {statistics.median(n - b for n, b in zip(nas, bare)):.1f} s")
    print(f"RESULT launch_vs_bare_ratio={ratio:.3f} target<=1.10")
    print(f"RESULT overhead_per_trial_s={statistics.median(per_trial):.2f} target<=0.5")
    print(f"RESULT startup_s={statistics.median(startup):.1f}")


if __name__ == "__main__":
    main()
