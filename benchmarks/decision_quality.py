"""How often does nas's default strategy find the best architecture, for how much compute?
Replayed many times on a recorded table of results, with ground truth from seeds it never sees.

    python benchmarks/decision_quality.py [--recording FILE] [--replays 1000] [--budget cpu_race]

The recording (`benchmarks/record_decisions.py`, page_post4's 11 architectures at the cpu
scale, 20 seeds each from 20000) is split anew in each replay (`nas.search.replays`): one half
of the seeds plays the strategy, the other half's mean is each architecture's truth. Judged on
the same split:

  strategy     page_post4's `--budget` (default `cpu_race`: one seed per architecture with the
               noise-aware median pruner, then the race of the top 2 on 3->5 fresh seeds),
               through the real launch (controller, pruner, race), in this process
  brute force  every architecture on 5 of the strategy half's seeds, unpruned: the best mean
  search only  the strategy's search, no confirm: its most accurate completed trial

Each figure with its 95% interval over the replays (Wilson for shares, normal for means):
P(the pick is within 0.5 points of the true best), mean regret in points, the strategy's
realised false-`worse` rate (a `worse` whose truth is not below the race's best's) and its
compute share (epochs trained, pruning included, over brute force's). Targets, fixed before
the run (issue 25): the strategy's P(within 0.5 pt) at least brute force's, at <= 0.40 of its
epochs; realised false-`worse` <= 0.05.

What pruning buys: on the same split, the strategy is replayed again without its pruner (and
so without its pilot); the share of that run's epochs the pruned strategy trains and what it
costs in P(within 0.5 pt) (paired over the replays) end the output.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from nas.config.experiment import load_experiment
from nas.config.pruner import PrunerSpec
from nas.db import Store
from nas.search.replays import mean_ci, replay_once, share_ci, usable_seeds
from nas.trials.recorded import Recording

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "search_spaces" / "page_post4.yaml"
RECORDING = ROOT / "benchmarks" / "data" / "page_post4_cpu_record.npz"
WITHIN = 0.005  # "found the best": within half a point of its true mean


def fmt(value: tuple[float, float, float], digits: int = 3) -> str:
    v, low, high = value
    return f"{v:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recording", default=str(RECORDING))
    parser.add_argument("--replays", type=int, default=1000)
    parser.add_argument("--budget", default="cpu_race", help="page_post4's budget that is the strategy")
    parser.add_argument("--seed", type=int, default=0, help="of the seed splits")
    parser.add_argument("--no-unpruned", action="store_true", help="skip the unpruned replays (half the time)")
    args = parser.parse_args()
    if not Path(args.recording).exists():
        print(f"no recording at {args.recording}: record it first with "
              "`NAS_DATA_DIR=../shared/data python benchmarks/record_decisions.py --db record.db`")
        raise SystemExit(0 if args.recording == str(RECORDING) else 2)
    recording = Recording.load(args.recording)
    spec = load_experiment(PAGE, budget=args.budget)
    print(f"recording: {len(recording.arch_hashes)} architectures x {len(usable_seeds(recording))} complete seeds "
          f"({Path(args.recording).stat().st_size:,} bytes; {recording.meta.get('command', '')})")
    unpruned_spec = replace(spec, search=replace(spec.search, pruner=PrunerSpec("none")))
    rng = np.random.default_rng(args.seed)
    outcomes, unpruned = [], []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, Store.open(f"sqlite:///{Path(tmp) / 'replays.db'}") as store:
        for r in range(args.replays):
            split = int(rng.integers(2**63))  # the same split for the strategy with and without its pruner
            outcomes.append(replay_once(recording, spec, store, f"replay{r:05d}", np.random.default_rng(split)))
            if not args.no_unpruned:
                unpruned.append(replay_once(recording, unpruned_spec, store, f"unpruned{r:05d}",
                                            np.random.default_rng(split)))
            if (r + 1) % 100 == 0:
                print(f"  {r + 1} replays, {time.perf_counter() - started:.0f} s", flush=True)
    n = len(outcomes)
    within = {who: share_ci(sum(getattr(o, key) <= WITHIN for o in outcomes), n)
              for who, key in (("strategy", "regret"), ("brute force", "brute_regret"),
                               ("search only", "search_regret"))}
    regret = {who: mean_ci([100 * getattr(o, key) for o in outcomes])
              for who, key in (("strategy", "regret"), ("brute force", "brute_regret"),
                               ("search only", "search_regret"))}
    share = mean_ci([o.epochs / o.brute_epochs for o in outcomes])
    false_worse = share_ci(sum(o.false_worse for o in outcomes), n)
    print(f"{n} replays, {time.perf_counter() - started:.0f} s")
    print("| strategy | P(within 0.5 pt of the true best) | mean regret (pts) |")
    print("|---|---|---|")
    for who in within:
        print(f"| {who} | {fmt(within[who])} | {fmt(regret[who], 2)} |")
    print(f"strategy: compute share {fmt(share)} of brute force's epochs; realised false-worse {fmt(false_worse)}")
    print(f"RESULT strategy_p_within_half_pt={fmt(within['strategy'])}")
    print(f"RESULT brute_force_p_within_half_pt={fmt(within['brute force'])}")
    print(f"RESULT strategy_compute_share={fmt(share)} target<=0.40")
    print(f"RESULT strategy_false_worse={fmt(false_worse)} target<=0.05")
    print(f"RESULT strategy_mean_regret_pt={fmt(regret['strategy'], 2)}")
    if unpruned:  # what pruning (with its pilot) saves, and what it costs, paired replay by replay
        saved = mean_ci([o.epochs / u.epochs for o, u in zip(outcomes, unpruned)])
        cost = mean_ci([float(u.regret <= WITHIN) - float(o.regret <= WITHIN) for o, u in zip(outcomes, unpruned)])
        print(f"without its pruner: P(within 0.5 pt) {fmt(share_ci(sum(u.regret <= WITHIN for u in unpruned), n))}, "
              f"compute share {fmt(mean_ci([u.epochs / u.brute_epochs for u in unpruned]))}")
        print(f"RESULT pruning_epoch_share={fmt(saved)} (the pruned strategy's epochs / the unpruned one's)")
        print(f"RESULT pruning_p_within_cost={fmt(cost)} (P(within 0.5 pt) unpruned - pruned, paired)")


if __name__ == "__main__":
    main()
