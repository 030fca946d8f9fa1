"""How much compute the Optuna pruner saves, and what it costs in the winner's accuracy.

The same architectures (a seeded random sampler draws the same sequence whatever the
results) are searched twice through `nas.search.launch` on a local Ray, in one run:
  unpruned: every trial trains all epochs; afterwards its best architecture is re-run with 3
            fresh seeds (a resumed confirm phase, not timed) to measure seed-to-seed std;
  pruned:   the same trials under the pruner.
Reported: the share of epochs the pruned search spent, and whether its best architecture's
accuracy is within one seed-std of the unpruned best.

    python benchmarks/pruning_efficiency.py [--trials 20] [--epochs 10] [--subset 2000] [--batch-size 128] [--db FILE]

With `--db FILE` the store is kept, and a search already finished in it is resumed (so not
re-run): e.g. a second pruner against the same unpruned search. The wall share is then
printed only when both searches trained in this run.

Ends with `RESULT pruned_epoch_share=S target<=0.35` and `RESULT best_within_one_std=1`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from nas.data.archive import resolve_data_root
from nas.db import Store
from nas.results import arch_results
from nas.search.launch import launch
from nas.config.experiment import load_experiment

SPACE = {
    "width": {"fixed": 0.125},
    "L1.extra": {"choice": [0, 1]}, "L1.residual": {"choice": [0, 1]},
    "L2.extra": {"choice": [0, 1]}, "L2.residual": {"choice": [0, 1]},
    "L3.extra": {"choice": [0, 1]}, "L3.residual": {"choice": [0, 1]},
}
# Keep the top quarter at every epoch once three trials have finished. Optuna counts the
# percentile from the bad end for a maximised value: percentile=25 keeps the best 25%.
# margin 0: Optuna's own rule, as measured before the noise margin existed (benchmarks/pruning_margin.py
# measures the margin on recorded curves).
PRUNER = {"kind": "percentile", "percentile": 25.0, "n_startup_trials": 3, "n_warmup_steps": 0, "margin": 0}


def write_space(folder: Path, name: str, pruner: dict, confirm: dict, args) -> Path:
    spec = {
        "name": name,
        "dataset": {"train_subset": args.subset, "val_size": 1000},
        "recipe": {"epochs": args.epochs, "batch_size": args.batch_size},
        "space": SPACE,
        "search": {"sampler": "random", "n_trials": args.trials, "seed": 0, "pruner": pruner,
                   "objectives": [{"metric": "val_acc", "direction": "maximize"}]},
        "confirm": confirm,
        "resources": {"cpus_per_trial": None, "max_concurrent": 1},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run(path: Path, db: str, root: str) -> float:
    start = time.perf_counter()
    with Store.open(db) as store:
        launch(load_experiment(path), store=store, db_url=db, data_root=root, log=lambda line: None)
    return time.perf_counter() - start


def _search_epochs(db: str) -> dict[str, int]:
    """Epochs trained by each search phase in the store (none for a missing experiment)."""
    out = {}
    with Store.open(db) as store:
        for name in ("unpruned", "pruned"):
            exp = store.get_experiment(name)
            out[name] = sum(t.epochs_done for t in store.trials(experiment_id=exp.id, phase="search")) if exp else 0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--subset", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--db", default=None, help="SQLite file to keep (and reuse finished searches from)")
    args = parser.parse_args()

    import ray

    root = str(resolve_data_root(args.data_root))
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = f"sqlite:///{Path(args.db).resolve() if args.db else folder / 'pruning.db'}"
        before = _search_epochs(db)
        full = write_space(folder, "unpruned", {"kind": "none"}, {"top_k": 0}, args)
        pruned = write_space(folder, "pruned", PRUNER, {"top_k": 0}, args)
        seconds = {"unpruned": run(full, db, root), "pruned": run(pruned, db, root)}
        # then the seed noise of the unpruned winner: the same experiment resumed with a
        # confirm phase (the search is done, so only the 3 confirm runs train)
        run(write_space(folder, "unpruned", {"kind": "none"}, {"top_k": 1, "repeats": 3}, args), db, root)
        with Store.open(db, read_only=True) as store:
            epochs, best = _search_epochs(db), {}
            for name in ("unpruned", "pruned"):
                best[name] = max(r.accuracy.mean for r in arch_results(store, name, "search"))
            seed_std = arch_results(store, "unpruned", "confirm")[0].accuracy.std
            archs = {n: sorted(t.arch_hash for t in store.trials(experiment_id=store.get_experiment(n).id,
                                                                  phase="search")) for n in ("unpruned", "pruned")}
    ray.shutdown()
    assert archs["unpruned"] == archs["pruned"], "the two searches must see the same architectures"
    share = epochs["pruned"] / epochs["unpruned"]
    gap = best["unpruned"] - best["pruned"]
    print(f"{args.trials} trials x {args.epochs} epochs, {args.subset} images, pruner {PRUNER}")
    for name in ("unpruned", "pruned"):
        print(f"{name:>9}: {epochs[name]:4d} epochs, {seconds[name]:6.1f} s, best val acc {best[name]:.2%}")
    print(f"seed std of the unpruned best (3 confirm seeds): {seed_std:.2%}; best gap {gap:+.2%}")
    print(f"RESULT pruned_epoch_share={share:.3f} target<=0.35")
    if all(epochs[name] > before.get(name, 0) for name in epochs):
        print(f"RESULT wall_share={seconds['pruned'] / seconds['unpruned']:.3f}")
    else:
        print("(wall share not measured: a search was reused from --db)")
    print(f"RESULT best_within_one_std={int(gap <= seed_std)} target=1")


if __name__ == "__main__":
    main()
