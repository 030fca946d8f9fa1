"""Time to accuracy (issue 28): today's recipe vs a combination of training tricks and a
schedule, side by side.

Page ("How to train your ResNet", posts 5-8) took his ResNet from 75 s to 26 s at the same 94%
by training tricks, each a field of `ArchConfig.tricks` here (`nas.models.tricks`), and by
training fewer epochs once they let him. This script asks the same question at the cpu
budget's scale (width 0.25, 5,000 training and 5,000 val images): how many train seconds does
each recipe need to reach a fixed val accuracy?

A combination is a trick set (TRICK_SETS) and a schedule (SCHEDULES: epochs and batch size;
the peak lr scaled with the square root of the batch). Today's recipe is every trick off on
today's schedule (4 epochs of 512 images: 9 steps an epoch at this scale).

For each architecture, today's recipe runs first on the reported seeds; the target is the
median of its last-epoch val accuracies (the lower middle one for an even number of seeds),
fixed and printed before any other run. Then the combination runs on the same seeds, and so do
its two halves alone (the schedule with no trick, the tricks on today's schedule), which say
where a saving comes from. A run's time to accuracy is the cumulative train seconds
(`EpochMetrics.cumulative_seconds`: the training steps and the whitening's fit, evaluation
excluded) at the first epoch whose val accuracy reaches the target, every epoch evaluated
(with the combination's test-time augmentation); a run that never reaches it counts as
infinite. A run other than today's stops at the epoch it reaches the target (later epochs
cannot change its time). Every run trains through `nas.training.loop.train`, what `nas
train` runs.

`--choose` first compares the combinations (every trick set x every schedule) on one
architecture on seeds disjoint from the reported ones (from CHOOSE_SEED_BASE): today's recipe
there sets that architecture's selection target, and the combination with the lowest median
time is used (equal times, such as none reaching it: the highest median last-epoch accuracy).

    python benchmarks/time_to_accuracy.py                       # 3 archs x 3 seeds, the defaults
    python benchmarks/time_to_accuracy.py --choose              # pick the combination first
    python benchmarks/time_to_accuracy.py --archs R:L1+L3 --seeds 1 --epochs 2   # a quick check

Ends with `RESULT time_ratio_<arch>=R target<=0.5` per architecture (the combination's median
time / today's), `RESULT time_ratio_<half>_only_<arch>=R` for each half alone, then
`RESULT images_per_s_<recipe>=...` (training images per train second).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import time
from dataclasses import dataclass, field, replace

import torch

from nas.data.archive import resolve_data_root
from nas.data.config import DataConfig
from nas.data.tensors import load_data
from nas.models import ArchConfig, parse_short_name
from nas.models.tricks import TricksConfig
from nas.training.loop import train
from nas.training.recipe import Recipe

ARCHS = ("R:L1+L3", "base", "R:L1+L2+L3")  # Page's winner first
TODAY = "today"  # today's recipe: every trick off on today's schedule (Page's post 4, nas's default)
NO_TRICKS = "none"
# Page's timeline (posts 5-8) as tricks; label smoothing is already today's recipe. EMA decay per
# step: 9 steps an epoch at this scale, so 0.9 averages over about the last epoch (Page: 0.99
# every 5 steps of ~97 an epoch).
PAGE = TricksConfig(activation="celu", pool_before_bn=True, ghost_batch=32, freeze_bn_scale=True,
                    whiten=True, ema_decay=0.9, tta="flip")
CANDIDATES = {
    "page": PAGE,
    "page_no_ema": replace(PAGE, ema_decay=0.0),
    # ghost BN off: on this 2-core CPU one R:L1+L3 w=0.25 training step of 512 images took ~5.8 s
    # with ghost batches of 32 vs ~3.4 s without (folding groups into channels copies the
    # channels_last activations), so it cannot pay for itself here; chosen on step cost alone
    "page_no_ghost": replace(PAGE, ghost_batch=0),
}
# the cheap ones: pool before BN and CELU change the step's cost only a little (the pool saves
# BN and activation work), flip TTA costs evaluation only; no EMA, whitening or frozen scales
CANDIDATES["pool_celu_tta"] = TricksConfig(activation="celu", pool_before_bn=True, tta="flip")
CANDIDATES["page_no_ghost_no_ema"] = replace(PAGE, ghost_batch=0, ema_decay=0.0)
# Keller Jordan's airbench94: GELU, BatchNorm without a trained scale, patch whitening, lookahead
# (0.95**5 every 5 steps, ramped), BN parameters at 64x the lr, alternating flip, flip and
# translate TTA (its label smoothing 0.2 is today's recipe)
CANDIDATES["airbench"] = TricksConfig(activation="gelu", freeze_bn_scale=True, whiten=True, lookahead=0.95**5,
                                      bias_lr=64.0, alternating_flip=True, tta="flip_translate")
TRICK_SETS = {NO_TRICKS: TricksConfig(), **CANDIDATES}


@dataclass(frozen=True)
class Schedule:
    """Epochs and batch size; None: today's (--epochs, --batch-size)."""

    epochs: int | None = None
    batch_size: int | None = None

    def recipe(self, args) -> Recipe:
        """The recipe at this schedule: today's peak lr scaled by the square root of the batch
        ratio (Krizhevsky 2014; Hoffer et al. 2017), so that the lr is not a third thing tuned here."""
        batch = self.batch_size or args.batch_size
        return Recipe(epochs=self.epochs or args.epochs, batch_size=batch,
                      lr=round(Recipe().lr * math.sqrt(batch / args.batch_size), 4))


# Page trained fewer epochs as his tricks allowed; at 5,000 images a batch of 512 is 9 steps an
# epoch, so smaller batches buy steps at (on a CPU) about the same cost per image
SCHEDULES = {TODAY: Schedule(), "b128_e2": Schedule(epochs=2, batch_size=128), "b64_e1": Schedule(epochs=1, batch_size=64)}
# what `--choose` picked on the selection seeds (2026-12-07: 0.471 of today's time there; none
# of the 17 combinations on today's schedule or of 64 images for 1 epoch reached the target)
DEFAULT_COMBO = "pool_celu_tta"
DEFAULT_SCHEDULE = "b128_e2"
CHOOSE_ARCH = "R:L1+L3"
CHOOSE_SEED_BASE = 1000  # selection seeds 1000, 1001, ...: disjoint from the reported 0, 1, 2
TARGET_RATIO = 0.5  # the target: the combination in at most half of today's time


def combination_name(tricks: str, schedule: str) -> str:
    """``page_no_ema`` on today's schedule; ``none@b128_e2``; today's recipe: ``today``."""
    if tricks == NO_TRICKS and schedule == TODAY:
        return TODAY
    return tricks if schedule == TODAY else f"{tricks}@{schedule}"


# ---- one run ----------------------------------------------------------------------------


@dataclass
class Run:
    """One (architecture, recipe, seed) training, epoch by epoch."""

    val: list[float] = field(default_factory=list)  # val accuracy after each epoch
    seconds: list[float] = field(default_factory=list)  # cumulative train seconds after each epoch
    images: int = 0  # training images stepped over
    eval_seconds: float = 0.0  # wall seconds outside the training steps (evaluation, mostly)

    def time_to(self, target: float) -> float:
        """Train seconds at the first epoch reaching `target`; inf when none does."""
        return next((s for v, s in zip(self.val, self.seconds) if v >= target), math.inf)


def run_one(arch: ArchConfig, recipe: Recipe, data, data_cfg: DataConfig, seed: int,
            stop_at: float | None = None) -> Run:
    """Train through `nas.training.loop.train` (as `nas train` does); stop once val >= `stop_at`."""
    run = Run()
    last = [time.perf_counter()]

    def on_epoch(m) -> bool:
        now = time.perf_counter()
        run.val.append(math.nan if m.val_acc is None else m.val_acc)  # None: diverged, not evaluated
        run.seconds.append(m.cumulative_seconds)
        run.eval_seconds += (now - last[0]) - m.epoch_seconds
        last[0] = now
        return stop_at is not None and run.val[-1] >= stop_at

    train(arch, recipe, data, data_cfg, seed=seed, on_epoch=on_epoch)
    steps = max(1, len(data.train_y) // recipe.batch_size)
    run.images = len(run.val) * steps * min(recipe.batch_size, len(data.train_y))
    return run


def slug(name: str) -> str:
    """An architecture's short name as a RESULT key: ``R:L1+L3`` -> ``R_L1_L3``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def median_spread(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    reached = f"{len(finite)}/{len(values)} reached" if len(finite) < len(values) else ""
    spread = f"[{min(values):.1f}, {max(values):.1f}]".replace("inf", "never")
    return f"median {statistics.median(values):.1f} s {spread} {reached}".rstrip()


# ---- the comparison ---------------------------------------------------------------------


@dataclass
class Totals:
    """Per recipe: training images and seconds, evaluation images and seconds, over all runs."""

    images: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    eval_images: dict[str, float] = field(default_factory=dict)
    eval_seconds: dict[str, float] = field(default_factory=dict)

    def add(self, recipe: str, run: Run, val_images: int) -> None:
        for table, value in ((self.images, run.images), (self.seconds, run.seconds[-1]),
                             (self.eval_images, len(run.val) * val_images), (self.eval_seconds, run.eval_seconds)):
            table[recipe] = table.get(recipe, 0.0) + value


def compare(name: str, combos: list[tuple[str, str]], seeds, args, data, data_cfg, totals: Totals,
            today_runs: dict | None = None) -> dict[str, tuple[float, float]]:
    """Today's recipe, then each (trick set, schedule) of `combos`, on `seeds` for one
    architecture; per combination its time ratio and the median val accuracy of its runs' last
    epochs (what breaks a tie of ratios). `today_runs`: today's runs by (name, seed), reused
    across calls (the candidates share them)."""
    arch = parse_short_name(name).replace(width=args.width)
    today_recipe = SCHEDULES[TODAY].recipe(args)
    today = []
    today_runs = {} if today_runs is None else today_runs
    for seed in seeds:
        if (name, seed) not in today_runs:
            today_runs[name, seed] = run_one(arch, today_recipe, data, data_cfg, seed)
        today.append(today_runs[name, seed])
        totals.add(TODAY, today[-1], len(data.val_y))
        print(f"  {name} {TODAY:<13} seed {seed}: val {' '.join(f'{v:.4f}' for v in today[-1].val)}  "
              f"train {today[-1].seconds[-1]:.1f} s")
    # one of today's own last epochs (the lower middle one for an even count), so at least half of
    # today's runs reach it and today's median time is finite
    target = statistics.median_low(r.val[-1] for r in today)
    print(f"  {name}: target val {target:.4f} (median of today's last epochs), fixed before the other runs")
    today_t = [r.time_to(target) for r in today]
    found = {}
    for tricks, schedule in combos:
        combo = combination_name(tricks, schedule)
        recipe = SCHEDULES[schedule].recipe(args)
        runs = []
        for seed in seeds:
            runs.append(run_one(arch.replace(tricks=TRICK_SETS[tricks]), recipe, data, data_cfg, seed,
                                stop_at=None if args.run_to_end else target))
            totals.add(combo, runs[-1], len(data.val_y))
            print(f"  {name} {combo:<13} seed {seed}: val {' '.join(f'{v:.4f}' for v in runs[-1].val)}  "
                  f"train {runs[-1].seconds[-1]:.1f} s")
        times = [r.time_to(target) for r in runs]
        ratio = statistics.median(times) / statistics.median(today_t)
        print(f"  {name}: time to {target:.2%}: {TODAY} {median_spread(today_t)}; {combo} {median_spread(times)}; "
              f"ratio {ratio:.3f}")
        found[combo] = (ratio, statistics.median(r.val[-1] for r in runs))
    return found


def choose(args, data, data_cfg) -> tuple[str, str]:
    """The (trick set, schedule) with the lowest median time to today's accuracy on CHOOSE_ARCH,
    on selection seeds."""
    seeds = [CHOOSE_SEED_BASE + i for i in range(args.choose_seeds)]
    combos = [(t, s) for s in (args.schedules or list(SCHEDULES)) for t in (args.candidates or list(TRICK_SETS))
              if (t, s) != (NO_TRICKS, TODAY)]
    print(f"choosing among {', '.join(combination_name(*c) for c in combos)} on {CHOOSE_ARCH}, seeds {seeds} "
          "(not reported below)")
    # selection runs are not part of the reported images/s; one set of today's runs: every
    # candidate is judged against the same target
    ratios = compare(CHOOSE_ARCH, combos, seeds, args, data, data_cfg, Totals(), {})
    by_name = {combination_name(*c): c for c in combos}
    best = min(by_name, key=lambda name: (ratios[name][0], -ratios[name][1]))  # the fastest; equal: the most accurate
    print(f"chosen: {best} "
          f"({', '.join(f'{c} ratio {r:.3f}, last val {a:.4f}' for c, (r, a) in ratios.items())})")
    return by_name[best]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), help="short names, e.g. R:L1+L3 base")
    parser.add_argument("--seeds", type=int, default=3, help="reported seeds 0..N-1 per recipe and architecture")
    parser.add_argument("--epochs", type=int, default=4, help="today's recipe (the cpu budget's 4)")
    parser.add_argument("--combo", choices=sorted(TRICK_SETS), default=DEFAULT_COMBO, help="the trick set")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default=DEFAULT_SCHEDULE)
    parser.add_argument("--choose", action="store_true", help="pick --combo and --schedule first")
    parser.add_argument("--candidates", nargs="+", choices=sorted(TRICK_SETS), default=None,
                        help="the trick sets --choose compares [default: all]")
    parser.add_argument("--schedules", nargs="+", choices=sorted(SCHEDULES), default=None,
                        help="the schedules --choose compares [default: all]")
    parser.add_argument("--choose-seeds", type=int, default=2, help="selection seeds 1000.. per candidate")
    parser.add_argument("--choose-only", action="store_true", help="stop after choosing (nothing reported)")
    parser.add_argument("--run-to-end", action="store_true", help="train every run past the target too")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--train-subset", type=int, default=5000)
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=512, help="today's recipe")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    if (args.combo, args.schedule) == (NO_TRICKS, TODAY):
        parser.error("--combo none --schedule today is today's recipe: name a trick set or a schedule")

    data_cfg = DataConfig(root=str(resolve_data_root(args.data_root)), train_subset=args.train_subset,
                          val_size=args.val_size)
    data = load_data(data_cfg)
    # the test split is not used: measured after the last epoch, it would only cost time
    data = type(data)(**{**data.__dict__, "test_x": data.test_x[:0], "test_y": data.test_y[:0]})
    print(f"{len(data.train_y)} train / {len(data.val_y)} val images, width {args.width}, today {args.epochs} epochs "
          f"of batch {args.batch_size}, {torch.get_num_threads()} threads")
    tricks, schedule = choose(args, data, data_cfg) if args.choose or args.choose_only else (args.combo, args.schedule)
    if args.choose_only:
        return
    combo = combination_name(tricks, schedule)
    recipe = SCHEDULES[schedule].recipe(args)
    print(f"combination {combo}: {parse_short_name('base').replace(tricks=TRICK_SETS[tricks]).short_name()}, "
          f"{recipe.epochs} epochs of batch {recipe.batch_size}, lr {recipe.lr}")
    # its halves alone, where the combination has two
    halves = ({"schedule": (NO_TRICKS, schedule), "tricks": (tricks, TODAY)}
              if tricks != NO_TRICKS and schedule != TODAY else {})
    print(f"targets fixed before the run: each architecture's from today's recipe on seeds 0..{args.seeds - 1}, "
          "printed before its other runs")
    totals = Totals()
    ratios = {name: compare(name, [(tricks, schedule), *halves.values()], range(args.seeds), args, data, data_cfg,
                            totals) for name in args.archs}
    recipes = [TODAY, combo, *(combination_name(*c) for c in halves.values())]
    for name in recipes:
        print(f"{name}: {totals.images[name] / totals.seconds[name]:.1f} training images/s, "
              f"{totals.eval_images[name] / totals.eval_seconds[name]:.1f} val images/s evaluated")
    for name, found in ratios.items():
        print(f"RESULT time_ratio_{slug(name)}={found[combo][0]:.3f} target<={TARGET_RATIO}")
    for half, c in halves.items():
        for name, found in ratios.items():
            print(f"RESULT time_ratio_{half}_only_{slug(name)}={found[combination_name(*c)][0]:.3f}")
    for name in recipes:
        print(f"RESULT images_per_s_{slug(name)}={totals.images[name] / totals.seconds[name]:.1f}")


if __name__ == "__main__":
    main()
