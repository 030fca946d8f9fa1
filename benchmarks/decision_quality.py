"""Does nas's default strategy reach brute force's answer, for how much of its compute?

Both halves are Page's study at cpu scale (search_spaces/page_post4.yaml), launched through
`nas.search.launch` on a local Ray:
  brute force: `--budget cpu`, every one of the 11 architectures x 5 shared seeds, unpruned;
               its answer is best / tied / worse on those seeds (`nas.results.search_groups`:
               paired t-test against the leader, Holm-adjusted).
  strategy:    `--budget cpu_race`, nas's default: one seed per architecture with the
               noise-aware median pruner, then the racing confirm of the top 2.
Compute is epochs trained (every trial of every phase), so the share does not depend on how
loaded the machine is.

    python benchmarks/decision_quality.py [--db BRUTE.db] [--strategy-db FILE] [--data-root DIR]

The brute-force half takes ~35-60 min on 2 cores: with `--db` it is kept there, and reused
(or resumed, if it was stopped) on the next run; the strategy half (~10-15 min) runs every
time unless `--strategy-db` names a store that holds it. The age of the stored brute-force
half is printed.

Ends with `RESULT compute_share=S target<=0.40` (epochs, strategy / brute force),
`RESULT winner_in_top_group=W target=1` (the strategy's winner is not significantly worse than
the brute-force best: it is in brute force's best-or-tied group) and
`RESULT top_group_recall=R` (the share of brute force's top group the strategy also calls best
or tied).
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from nas.config.experiment import load_experiment
from nas.data.archive import resolve_data_root
from nas.db import Store
from nas.db.schema import ExperimentStatus, Phase
from nas.results import arch_results, confirm_groups, search_groups
from nas.search.launch import launch
from nas.search.race import BEST, TIED

PAGE = Path(__file__).resolve().parents[1] / "search_spaces" / "page_post4.yaml"
NAME = "page_post4"


def run_half(budget: str, db: str, root: str) -> bool:
    """Launch (or resume) one half into `db`; False when it was finished there already."""
    with Store.open(db) as store:
        found = store.get_experiment(NAME)
        if found is not None and found.status == ExperimentStatus.FINISHED:
            return False
        print(f"running the {budget} half into {db} ...", flush=True)
        launch(load_experiment(PAGE, budget=budget), store=store, db_url=db, data_root=root, log=lambda line: None)
    return True


def epochs_trained(store: Store) -> int:
    """Every epoch any trial of the experiment trained (search and confirm; stopped runs too)."""
    return sum(t.epochs_done for t in store.trials(experiment_id=store.get_experiment(NAME).id))


def top(groups: dict) -> set[str]:
    return {h for h, g in groups.items() if g.decision in (BEST, TIED)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help="SQLite file of the brute-force half (kept, reused)")
    parser.add_argument("--strategy-db", default=None, help="SQLite file of the strategy half (kept, reused)")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()

    import ray

    root = str(resolve_data_root(args.data_root))
    with tempfile.TemporaryDirectory() as tmp:
        brute_db = f"sqlite:///{Path(args.db).resolve() if args.db else Path(tmp) / 'brute.db'}"
        strategy_db = f"sqlite:///{Path(args.strategy_db).resolve() if args.strategy_db else Path(tmp) / 'strategy.db'}"
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
        ran = {"brute force": run_half("cpu", brute_db, root), "strategy": run_half("cpu_race", strategy_db, root)}
        ray.shutdown()
        with Store.open(brute_db, read_only=True) as brute, Store.open(strategy_db, read_only=True) as strategy:
            report(brute, strategy, ran)


def report(brute: Store, strategy: Store, ran: dict[str, bool]) -> None:
    brute_rows = arch_results(brute, NAME, Phase.SEARCH)
    brute_groups = search_groups(brute, NAME)
    names = {r.arch_hash: r.short_name for r in brute_rows}
    race = confirm_groups(strategy, NAME)
    searched = arch_results(strategy, NAME, Phase.SEARCH)
    confirmed = arch_results(strategy, NAME, Phase.CONFIRM)
    # the strategy's answer: the race's best (its search's most accurate if it never raced)
    winner = next((h for h, g in race.items() if g.decision == BEST),
                  max(searched, key=lambda r: r.accuracy.mean).arch_hash if searched else None)

    experiment = brute.get_experiment(NAME)
    stamp = experiment.finished_at or experiment.created_at
    age = datetime.now(UTC) - stamp.replace(tzinfo=stamp.tzinfo or UTC)
    print(f"brute force: {'trained in this run' if ran['brute force'] else 'reused from --db'}, "
          f"finished {stamp:%Y-%m-%d %H:%M} UTC ({age.days} days old), code {experiment.code_version}")
    print(f"{'architecture':<18} {'brute force: val acc (5 seeds, 95% CI)':<40} {'decision':<22} "
          f"{'strategy: search':<17} confirm")
    by_hash = {r.arch_hash: r for r in searched}
    raced = {r.arch_hash: r for r in confirmed}
    for row in brute_rows:
        mine = by_hash.get(row.arch_hash)
        search_text = f"{mine.accuracy.mean:.2%}" if mine else "pruned"
        confirm_text = (f"{raced[row.arch_hash].accuracy.mean:.2%} x{raced[row.arch_hash].seeds} "
                        f"{raced[row.arch_hash].decision}") if row.arch_hash in raced else ""
        acc = row.accuracy
        print(f"{row.short_name:<18} {acc.mean:6.2%} ± {acc.half_width:.2%} ({acc.ci_low:.2%} - {acc.ci_high:.2%})"
              f"{'':<8} {row.decision or '-':<22} {search_text:<17} {confirm_text}")
    pruned = sum(1 for t in strategy.trials(experiment_id=strategy.get_experiment(NAME).id, phase=Phase.SEARCH)
                 if t.status == "pruned")
    spent, full = epochs_trained(strategy), epochs_trained(brute)
    best_top, strategy_top = top(brute_groups), top(race)
    print(f"strategy: {len(searched)} searched to the end, {pruned} pruned; raced "
          f"{', '.join(names.get(h, h) for h in race) or 'none'}; winner {names.get(winner, winner)}")
    print(f"brute force's top group (best or tied): {', '.join(sorted(names[h] for h in best_top))}")
    print(f"epochs trained: strategy {spent}, brute force {full}")
    print(f"RESULT compute_share={spent / full:.3f} target<=0.40")
    print(f"RESULT winner_in_top_group={int(winner in best_top)} target=1")
    print(f"RESULT top_group_recall={len(best_top & strategy_top) / len(best_top):.3f}")


if __name__ == "__main__":
    main()
