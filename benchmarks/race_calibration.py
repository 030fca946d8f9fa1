"""The confirm race's error and power, by simulation through its own code (`nas.search.race.replay`).

For each race setting shipped in search_spaces/ (cifar_fast's full 5->10 seeds and cpu 3->6,
page_post4's cpu_race 3->5) and K architectures, simulated paired results
(`nas.search.race_calibration`: seed effect shared, Gaussian noise of one seed-sd per run):

  null      the share of races with any `worse` when every architecture has the same mean
            (the realised family-wise error; stated: 0.05)
  power     the share of races that end with the best alone, when it is 0.5 / 1 / 2 seed-sds
            ahead of the others (equal among themselves); in brackets one fixed-size test at
            the race's most seeds with the same family of comparisons, on the same races
  seeds     seeds per architecture, mean, at 2 sd (the fixed test: always the most)

    python benchmarks/race_calibration.py [--races N] [--archs 2,3,4,8,11] [--race-file FILE]

`--race-file` measures another version of nas/search/race.py the same way, e.g. the rule
before `nas.sequential` (each against the leader, Holm, every round at the full 0.05):
    git show af5bbe0:nas/search/race.py > /tmp/race_af5bbe0.py
    python benchmarks/race_calibration.py --race-file /tmp/race_af5bbe0.py --archs 2,3,4,8

Ends with `RESULT race_null_error=E [lo, hi] target<=0.05` (the null share pooled over the
table's cells, with its 95% Monte Carlo interval), `RESULT race_null_error_max=E se=S` (the
largest cell: with 15 cells of s.e. 0.005, one near 0.058 is expected by chance alone) and
`RESULT race_power_ratio_min=R target>=0.85` (the smallest race / fixed power ratio where the
fixed test's power is at least 0.1).
"""

from __future__ import annotations

import argparse
import math
import time

from nas.config.experiment import ConfirmSettings
import nas.search.race_calibration as calibration
from nas.search.race_calibration import fixed_size, simulate

SETTINGS = {
    "cifar_fast full, 5->10": ConfirmSettings(repeats=5, until_separated=True, max_repeats=10),
    "cifar_fast cpu, 3->6": ConfirmSettings(repeats=3, until_separated=True, max_repeats=6),
    "page_post4 cpu_race, 3->5": ConfirmSettings(repeats=3, until_separated=True, max_repeats=5),
}
EFFECTS = (0.5, 1.0, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--races", type=int, default=2000, help="simulated races per cell")
    parser.add_argument("--archs", default="2,3,4,8,11", help="comma-separated K")
    parser.add_argument("--race-file", default=None, help="another race.py to measure in place of nas's")
    args = parser.parse_args()
    if args.race_file:
        calibration.replay = _load(args.race_file).replay
    archs = [int(k) for k in args.archs.split(",")]
    started = time.perf_counter()
    worst_null, worst_se, worst_ratio = 0.0, 0.0, math.inf
    false, races = 0.0, 0
    print(f"{args.races} races per cell; power: race [one test at the most seeds]")
    print("| setting | K | null (s.e.) | power 0.5 sd | power 1 sd | power 2 sd | seeds at 2 sd |")
    print("|---|---|---|---|---|---|---|")
    for label, setting in SETTINGS.items():
        for k in archs:
            (null,) = simulate([setting], k, 0.0, args.races, seed=1)
            cells, seeds = [], ""
            for effect in EFFECTS:
                race, fixed = simulate([setting, fixed_size(setting)], k, effect, args.races, seed=2)
                cells.append(f"{race.share:.3f} [{fixed.share:.3f}]")
                if fixed.share >= 0.1:
                    worst_ratio = min(worst_ratio, race.share / fixed.share)
                if effect == 2.0:
                    seeds = f"{race.mean_seeds:.2f} of {fixed.mean_seeds:.0f}"
            false, races = false + null.share * null.races, races + null.races
            if null.share > worst_null:
                worst_null, worst_se = null.share, null.se
            print(f"| {label} | {k} | {null.share:.3f} ({null.se:.3f}) | " + " | ".join(cells) + f" | {seeds} |",
                  flush=True)
    print(f"{time.perf_counter() - started:.0f} s")
    pooled = false / races
    half = 1.96 * math.sqrt(pooled * (1 - pooled) / races)
    print(f"RESULT race_null_error={pooled:.4f} [{pooled - half:.4f}, {pooled + half:.4f}] target<=0.05")
    print(f"RESULT race_null_error_max={worst_null:.3f} se={worst_se:.3f}")
    print(f"RESULT race_power_ratio_min={worst_ratio:.2f} target>=0.85")


def _load(path: str):
    """A race module from a file (an older nas/search/race.py), under a name of its own."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("race_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    main()
