"""What the pruner's noise margin costs and saves, replayed on recorded learning curves.

Records (once; reused through `--db`) an unpruned search: a grid of residual/extra
placements, each architecture on `--repeats` seeds, every epoch's val accuracy stored (or,
with `--experiment NAME`, replays another unpruned search already in `--db`, e.g. page_post4's
cpu study). Then replays a median pruner over those curves in an in-memory Optuna study,
trial by trial in `--orders` seeded random orders, for each margin: a trial is stopped only
when Optuna's median rule says so AND nas's rule does (`NoiseMargin.prunes`): it lies more
than `margin` standard errors of the noise below the median (seed spread pooled over the
repeated architectures seen so far, bounded below by the spread across trials until there
are 3 degrees of freedom, plus binomial noise of the val split), at an epoch whose curve
ranks the finished trials (the rank gate). Margin 0 is Optuna's rule; the default margin is
also replayed without the rank gate. CPU training is deterministic, so a pruned trial's
recorded curve is what it would have done.

    python benchmarks/pruning_margin.py [--db FILE] [--repeats 2] [--epochs 6] [--orders 50]
    python benchmarks/pruning_margin.py --db page_post4_cpu.db --experiment page_post4

Per margin: the share of epochs trained (the saving), the share of the top quarter of
trials (by final val accuracy) pruned (the cost), and how often the best final accuracy
was lost. Ends with `RESULT margin_<m>_epoch_share=...`, `RESULT margin_<m>_top_quarter_pruned=...`
per margin, and `RESULT default_margin_best_lost=L target<=0.05` with the default's share of
the top quarter pruned.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from nas.config.experiment import load_experiment
from nas.data.archive import resolve_data_root
from nas.db import Store
from nas.db.schema import Phase, TrialStatus
from nas.search.launch import launch
from nas.search.pruning import DEFAULT_MARGIN, NoiseMargin, first_prunable_epoch
from nas.training.recipe import Recipe

MARGINS = (0.0, 0.5, 1.0, 2.0, 3.0)
SPACE = {
    "width": {"fixed": 0.125},
    "L1.residual": {"choice": [0, 1]}, "L2.residual": {"choice": [0, 1]},
    "L3.residual": {"choice": [0, 1]}, "L2.extra": {"choice": [0, 1]},
}
VAL_SIZE = 1000
N_STARTUP = 3  # finished trials before the pruner decides


def record(db: str, args) -> None:
    """The unpruned grid x repeats, through `nas launch` (resumed if the store has it)."""
    spec = {
        "name": "pruning_curves",
        "dataset": {"train_subset": args.subset, "val_size": VAL_SIZE},
        "recipe": {"epochs": args.epochs, "batch_size": 256, "eval_batch_size": 1000},
        "space": SPACE,
        "search": {"sampler": "grid", "repeats": args.repeats, "pruner": {"kind": "none"},
                   "objectives": [{"metric": "val_acc", "direction": "maximize"}]},
        "confirm": {"top_k": 0, "repeats": 1},
        "resources": {"cpus_per_trial": None, "max_concurrent": 1},
    }
    import ray

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pruning_curves.yaml"
        path.write_text(yaml.safe_dump(spec))
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
        with Store.open(db) as store:
            launch(load_experiment(path), store=store, db_url=db, data_root=str(resolve_data_root(None, None)),
                   log=print)
        ray.shutdown()


def curves(db: str, name: str = "pruning_curves") -> list[tuple[str, list[float]]]:
    """(architecture hash, val accuracy per epoch) of every completed search trial."""
    with Store.open(db, read_only=True) as store:
        found = store.get_experiment(name)
        trials = store.trials(experiment_id=found.id, phase=Phase.SEARCH, status=TrialStatus.COMPLETED)
        return [(t.arch_hash, [e.val_acc for e in store.epochs(t.id)]) for t in trials]


def replay(recorded: list[tuple[str, list[float]]], order: list[int], margin: float,
           first_epoch: int, rank_gate: bool = True, val_size: int = VAL_SIZE) -> list[int | None]:
    """The epoch (from 0) each trial is pruned at under `margin` (None: ran to the end), with
    or without nas's rank gate (`curve_ranks_finals`)."""
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=N_STARTUP,
                                                                   n_warmup_steps=first_epoch))
    rule = NoiseMargin(percentile=50.0, margin=margin, eval_images=val_size, rank_gate=rank_gate) if margin else None
    pruned_at: list[int | None] = [None] * len(recorded)
    for i in order:
        arch, curve = recorded[i]
        trial = study.ask()
        trial.set_user_attr("arch_hash", arch)
        stopped = None
        for epoch, value in enumerate(curve[:-1]):  # after the last epoch there is nothing to save
            trial.report(value, step=epoch)
            if not trial.should_prune():
                continue
            completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if rule is not None and not rule.prunes(completed, epoch, max(curve[: epoch + 1]), maximize=True):
                continue
            stopped = epoch
            break
        if stopped is None:
            trial.report(curve[-1], step=len(curve) - 1)
            study.tell(trial, curve[-1])
        else:
            study.tell(trial, state=TrialState.PRUNED)
        pruned_at[i] = stopped
    return pruned_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", help="store to record into / reuse (default: a temporary file)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--subset", type=int, default=2500)
    parser.add_argument("--orders", type=int, default=50, help="seeded random trial orders replayed")
    parser.add_argument("--experiment", default=None,
                        help="replay another unpruned search stored in --db instead (e.g. page_post4 of "
                             "`nas launch search_spaces/page_post4.yaml --budget cpu`); nothing is recorded")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = tempfile.mkdtemp(prefix="nas-margin-")
    db = args.db or f"sqlite:///{folder}/curves.db"
    if "://" not in db:
        db = f"sqlite:///{Path(db).resolve()}"
    expected = 2 ** (len(SPACE) - 1) * args.repeats
    val_size = VAL_SIZE
    if args.experiment:
        recorded = curves(db, args.experiment)
        with Store.open(db, read_only=True) as store:
            val_size = json.loads(store.get_experiment(args.experiment).config_json)["dataset"]["val_size"]
    else:
        if len(curves(db) if _has(db) else []) < expected:
            record(db, args)
        recorded = curves(db)
    first_epoch = first_prunable_epoch(Recipe(epochs=len(recorded[0][1])))  # never inside the warm-up
    finals = [c[-1] for _, c in recorded]
    quarter = sorted(finals, reverse=True)[max(0, len(finals) // 4 - 1)]
    top = [i for i, f in enumerate(finals) if f >= quarter]
    epochs = sum(len(c) for _, c in recorded)
    print(f"{len(recorded)} recorded trials x {len(recorded[0][1])} epochs; top quarter: final val >= {quarter:.2%}")
    print(f"{'margin':>14} {'epochs trained':>15} {'top quarter pruned':>19} {'best lost':>10}")
    default = (math.nan, math.nan)
    # every margin with nas's rank gate (the default rule), and the default margin without it
    for margin, gate in [(m, True) for m in MARGINS] + [(DEFAULT_MARGIN, False)]:
        trained = lost = best_lost = 0
        for k in range(args.orders):
            order = list(range(len(recorded)))
            random.Random(k).shuffle(order)
            pruned_at = replay(recorded, order, margin, first_epoch, gate, val_size)
            trained += sum(len(c) if p is None else p + 1 for (_, c), p in zip(recorded, pruned_at))
            lost += sum(1 for i in top if pruned_at[i] is not None)
            kept = [f for f, p in zip(finals, pruned_at) if p is None]
            best_lost += max(kept, default=-math.inf) < max(finals)
        share, lost_share = trained / (epochs * args.orders), lost / (len(top) * args.orders)
        label, key = (f"{margin:g}", f"{margin:g}") if gate or not margin else (f"{margin:g} no gate", f"{margin:g}_nogate")
        print(f"{label:>14} {share:>15.3f} {lost_share:>19.3f} {best_lost / args.orders:>10.2f}")
        print(f"RESULT margin_{key}_epoch_share={share:.3f}")
        print(f"RESULT margin_{key}_top_quarter_pruned={lost_share:.3f}")
        print(f"RESULT margin_{key}_best_lost={best_lost / args.orders:.2f}")
        if gate and margin == DEFAULT_MARGIN:
            default = (best_lost / args.orders, lost_share)
    print(f"RESULT default_margin_best_lost={default[0]:.2f} target<=0.05 (margin {DEFAULT_MARGIN:g}, rank gate)")
    print(f"RESULT default_margin_top_quarter_pruned={default[1]:.3f}")


def _has(db: str) -> bool:
    try:
        with Store.open(db, read_only=True) as store:
            return store.get_experiment("pruning_curves") is not None
    except Exception:  # noqa: BLE001 - no store yet
        return False


if __name__ == "__main__":
    main()
