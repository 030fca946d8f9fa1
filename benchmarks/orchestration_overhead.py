"""What `nas launch` costs over calling the trainer in a loop.

The same K fixed trials (a grid over residual blocks at L1/L2/L3: 8 configs, one seed, no
pruning, no confirm) run two ways, alternating so that machine noise hits both alike:
  bare: one process loads the data once and calls `nas.train.train` on each config;
  nas:  `nas.search.launch` on an already-started local Ray: Optuna in the driver, one
        Ray Tune trial per config (reused actor), every epoch written to a SQLite store.
`ray.init` is a one-off cost per `nas launch` and is printed, not counted. The rest of the
overhead is split in two, from when each run's first trial ends:
  startup:   nas's first trial ends this much later than bare's (Tuner start, the worker
             process, its torch import and data load, minus bare's own data load);
  per trial: what is left of (nas - bare - startup), over the K - 1 later trials.

    python benchmarks/orchestration_overhead.py [--rounds 2] [--subset 5000] [--epochs 2]

Ends with `RESULT launch_vs_bare_ratio=R target<=1.10`,
`RESULT overhead_per_trial_s=S target<=0.5` and `RESULT startup_s=T` (no target: paid once).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from nas.data import DataConfig, _cached_splits, _load_cifar10_cached, load_data, resolve_data_root
from nas.db import Store
from nas.search import launch
from nas.space import load_experiment
from nas.train import train


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


def run_bare(spec, root: str) -> tuple[float, float]:
    """(total seconds, seconds until the first trial ended)."""
    _cached_splits.cache_clear()  # read the data from disk every round, as a fresh process (and a Ray worker) does
    _load_cifar10_cached.cache_clear()
    start = time.perf_counter()
    data_cfg = DataConfig(**{**{k: v for k, v in spec.dataset.items() if k != "name"}, "root": root})
    data = load_data(data_cfg)
    first = None
    for point in spec.space.grid():
        train(spec.space.arch_from_params(point), spec.recipe, data, data_cfg, seed=spec.search.seed)
        first = first or time.perf_counter() - start
    return time.perf_counter() - start, first


def run_nas(spec, root: str, folder: Path, round_: int) -> tuple[float, float]:
    """(total seconds, seconds until the first trial ended), the latter from the store."""
    db = f"sqlite:///{folder}/round{round_}.db"
    start_wall, start = time.time(), time.perf_counter()
    with Store.open(db) as store:
        launch(spec, store=store, db_url=db, data_root=root, log=lambda line: None)
        total = time.perf_counter() - start
        trials = store.trials(experiment_id=store.get_experiment(spec.name).id)
        first_end = min(t.finished_at for t in trials).timestamp()
    return total, first_end - start_wall


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
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray_start = time.perf_counter() - start
        print(f"{k} trials of {spec.recipe.epochs} epochs on {args.subset} images, {args.rounds} rounds; "
              f"ray.init took {ray_start:.1f} s (once per launch, not counted below)")
        bare, nas, startup, per_trial = [], [], [], []
        for r in range(args.rounds):
            (b, b_first), (n, n_first) = run_bare(spec, root), run_nas(spec, root, folder, r)
            bare.append(b)
            nas.append(n)
            startup.append(n_first - b_first)
            per_trial.append((n - b - startup[-1]) / (k - 1))
            print(f"round {r}: bare {b:6.1f} s (first trial ends at {b_first:5.1f} s)   "
                  f"nas launch {n:6.1f} s (first trial ends at {n_first:5.1f} s)")
        ray.shutdown()
    ratio = statistics.median(n / b for n, b in zip(nas, bare))
    print(f"per trial: bare {statistics.median(bare) / k:.1f} s, nas {statistics.median(nas) / k:.1f} s; "
          f"total overhead {statistics.median(n - b for n, b in zip(nas, bare)):.1f} s")
    print(f"RESULT launch_vs_bare_ratio={ratio:.3f} target<=1.10")
    print(f"RESULT overhead_per_trial_s={statistics.median(per_trial):.2f} target<=0.5")
    print(f"RESULT startup_s={statistics.median(startup):.1f}")


if __name__ == "__main__":
    main()
