"""What `nas launch` costs over calling the trainer in a loop.

The same K fixed trials (a grid over residual placement, one seed, no pruning, no confirm)
run two ways, alternating so that machine noise hits both alike:
  bare: one process loads the data once and calls `nas.train.train` on each config;
  nas:  `nas.search.launch` on an already-started local Ray: Optuna in the driver, one
        Ray Tune trial per config (reused actor), every epoch written to a SQLite store.
Ray's start-up is a one-off cost per `nas launch` and is printed separately.

    python benchmarks/orchestration_overhead.py [--rounds 2] [--subset 5000] [--epochs 2]

Ends with `RESULT launch_vs_bare_ratio=R target<=1.10` and
`RESULT overhead_per_trial_s=S target<=0.5`.
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
        "space": {"width": {"fixed": 0.25}, "L1.residual": {"choice": [0, 1]}, "L3.residual": {"choice": [0, 1]}},
        "search": {"sampler": "grid", "pruner": {"kind": "none"}},
        "confirm": {"top_k": 0},
        "resources": {"cpus_per_trial": None, "max_concurrent": 1},
    }
    path = folder / "overhead.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_bare(spec, root: str) -> float:
    _cached_splits.cache_clear()  # read the data from disk every round, as a fresh process (and a Ray worker) does
    _load_cifar10_cached.cache_clear()
    start = time.perf_counter()
    data_cfg = DataConfig(**{**{k: v for k, v in spec.dataset.items() if k != "name"}, "root": root})
    data = load_data(data_cfg)
    for point in spec.space.grid():
        train(spec.space.arch_from_params(point), spec.recipe, data, data_cfg, seed=spec.search.seed)
    return time.perf_counter() - start


def run_nas(spec, root: str, folder: Path, round_: int) -> float:
    db = f"sqlite:///{folder}/round{round_}.db"
    start = time.perf_counter()
    with Store.open(db) as store:
        launch(spec, store=store, db_url=db, data_root=root, log=lambda line: None)
    return time.perf_counter() - start


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
        bare, nas = [], []
        for r in range(args.rounds):
            bare.append(run_bare(spec, root))
            nas.append(run_nas(spec, root, folder, r))
            print(f"round {r}: bare {bare[-1]:6.1f} s   nas launch {nas[-1]:6.1f} s")
        ray.shutdown()
    ratio = statistics.median(n / b for n, b in zip(nas, bare))
    overhead = statistics.median((n - b) / k for n, b in zip(nas, bare))
    print(f"per trial: bare {statistics.median(bare) / k:.1f} s, nas {statistics.median(nas) / k:.1f} s")
    print(f"RESULT launch_vs_bare_ratio={ratio:.3f} target<=1.10")
    print(f"RESULT overhead_per_trial_s={overhead:.2f} target<=0.5")


if __name__ == "__main__":
    main()
