"""Choosing the pruner's margin: what each margin costs and saves, replayed on recorded curves.

Records (once; reused through `--db`) an unpruned search: a grid of residual/extra
placements at width 0.125, each architecture on `--repeats` seeds, every epoch's val accuracy
stored (or, with `--experiment NAME`, replays another unpruned search already in `--db`). This
recording is where the default margin is chosen; it is reported on another one, other
architectures and seeds (page_post4's, benchmarks/decision_quality.py).

Each replay plays the default search's shape in a seeded random order of the architectures:
one recorded seed each, the first PILOT architectures on two (the pilot that gives the rule
its seed noise), through a median pruner in an in-memory Optuna study; a trial is stopped
only when Optuna's median rule says so AND nas's rule does (`NoiseMargin.decide`: below the
median by more than t x the pooled seed spread, at an epoch whose curve ranks the finished
trials). Margin 0 is Optuna's rule; the default margin is also replayed without the rank
gate. CPU training is deterministic, so a pruned trial's recorded curve is what it would have done.

    python benchmarks/pruning_margin.py [--db FILE] [--repeats 2] [--epochs 6] [--orders 200]

Per margin: the share of epochs trained (the saving), the share of the top quarter of
architectures (by mean final val accuracy) pruned (the cost), and how often the best
architecture played was pruned. Ends with `RESULT margin_<m>_epoch_share=...`,
`RESULT margin_<m>_top_quarter_pruned=...` per margin, and `RESULT default_margin_best_lost=L
target<=0.05` with the default's share of the top quarter pruned, and `RESULT pilot_pays_from=N`:
the search length (architectures) from which the default margin's saving repays the pilot's
PILOT extra trials, where `nas.search.pruning.PILOT_PAYS_FROM` comes from (on recording A).
"""

from __future__ import annotations

import argparse
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
from nas.search.pruning import DEFAULT_MARGIN, PILOT, PILOT_PAYS_FROM, NoiseMargin, first_prunable_epoch
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


def played(recorded: list[tuple[str, list[float]]], order: int) -> list[int]:
    """The trials one replay plays, in order: the architectures shuffled, one recorded seed
    each, the first PILOT on two (as the default search with its pilot)."""
    rng = random.Random(order)
    by_arch: dict[str, list[int]] = {}
    for i, (arch, _) in enumerate(recorded):
        by_arch.setdefault(arch, []).append(i)
    archs = sorted(by_arch)
    rng.shuffle(archs)
    out = []
    for k, arch in enumerate(archs):
        seeds = list(by_arch[arch])
        rng.shuffle(seeds)
        out.extend(seeds[:2] if k < PILOT else seeds[:1])
    return out


def replay(recorded: list[tuple[str, list[float]]], order: list[int], margin: float,
           first_epoch: int, rank_gate: bool = True) -> dict[int, int | None]:
    """The epoch (from 0) each played trial is pruned at under `margin` (None: ran to the
    end), with or without nas's rank gate (`curve_ranks_finals`)."""
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=N_STARTUP,
                                                                   n_warmup_steps=first_epoch))
    rule = NoiseMargin(percentile=50.0, margin=margin, rank_gate=rank_gate) if margin else None
    pruned_at: dict[int, int | None] = {}
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
    parser.add_argument("--orders", type=int, default=200, help="seeded random trial orders replayed")
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
    if args.experiment:
        recorded = curves(db, args.experiment)
    else:
        if len(curves(db) if _has(db) else []) < expected:
            record(db, args)
        recorded = curves(db)
    first_epoch = first_prunable_epoch(Recipe(epochs=len(recorded[0][1])))  # never inside the warm-up
    finals: dict[str, list[float]] = {}
    for arch, curve in recorded:
        finals.setdefault(arch, []).append(curve[-1])
    means = {arch: sum(v) / len(v) for arch, v in finals.items()}
    ranked = sorted(means, key=means.get, reverse=True)
    top = set(ranked[: max(1, len(ranked) // 4)])
    print(f"{len(recorded)} recorded trials ({len(means)} architectures) x {len(recorded[0][1])} epochs; "
          f"top quarter: {len(top)} architectures, mean final val >= {min(means[a] for a in top):.2%}; "
          f"{args.orders} replays of one seed each, the first {PILOT} on two")
    print(f"{'margin':>14} {'epochs trained':>15} {'top quarter pruned':>19} {'best lost':>10}")
    default = (math.nan, math.nan)
    # every margin with nas's rank gate (the default rule), and the default margin without it
    for margin, gate in [(m, True) for m in MARGINS] + [(DEFAULT_MARGIN, False)]:
        trained = epochs = lost = top_played = best_lost = 0
        for k in range(args.orders):
            order = played(recorded, k)
            pruned_at = replay(recorded, order, margin, first_epoch, gate)
            epochs += sum(len(recorded[i][1]) for i in order)
            trained += sum(len(recorded[i][1]) if p is None else p + 1 for i, p in pruned_at.items())
            in_top = [i for i in order if recorded[i][0] in top]
            top_played += len(in_top)
            lost += sum(1 for i in in_top if pruned_at[i] is not None)
            best = max(order, key=lambda i: means[recorded[i][0]])  # the truly best architecture played
            best_lost += all(pruned_at[i] is not None for i in order if recorded[i][0] == recorded[best][0])
        share, lost_share = trained / epochs, lost / max(1, top_played)
        label, key = (f"{margin:g}", f"{margin:g}") if gate or not margin else (f"{margin:g} no gate", f"{margin:g}_nogate")
        print(f"{label:>14} {share:>15.3f} {lost_share:>19.3f} {best_lost / args.orders:>10.3f}")
        print(f"RESULT margin_{key}_epoch_share={share:.3f}")
        print(f"RESULT margin_{key}_top_quarter_pruned={lost_share:.3f}")
        print(f"RESULT margin_{key}_best_lost={best_lost / args.orders:.3f}")
        if gate and margin == DEFAULT_MARGIN:
            default = (best_lost / args.orders, lost_share, 1 - share)
    print(f"RESULT default_margin_best_lost={default[0]:.3f} target<=0.05 (margin {DEFAULT_MARGIN:g}, rank gate)")
    print(f"RESULT default_margin_top_quarter_pruned={default[1]:.3f}")
    # the pilot's PILOT trials repay themselves once the saving on N architectures covers them
    pays = math.ceil(PILOT / default[2]) if default[2] > 0 else math.inf
    print(f"RESULT pilot_pays_from={pays} architectures (PILOT {PILOT} / the default margin's saving "
          f"{default[2]:.4f}; nas.search.pruning.PILOT_PAYS_FROM is {PILOT_PAYS_FROM})")


def _has(db: str) -> bool:
    try:
        with Store.open(db, read_only=True) as store:
            return store.get_experiment("pruning_curves") is not None
    except Exception:  # noqa: BLE001 - no store yet
        return False


if __name__ == "__main__":
    main()
