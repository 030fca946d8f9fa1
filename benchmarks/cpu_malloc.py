"""CPU training with glibc's default malloc vs freed memory kept (`nas.malloc`), and in a side thread.

The same training (R:L1+L3 w=0.25, one seed) runs in a fresh process per run, three ways,
alternating round by round so that machine noise hits all alike:
  default: glibc's defaults (NAS_KEEP_FREED_MEMORY=0), on the main thread;
  kept:    `nas.malloc.keep_freed_memory()` as `nas.training.loop` applies it, on the main thread
           (how `nas train` and, since the class trainable, every `nas launch` trial train);
  thread:  the defaults again, in a side thread (how a Ray Tune function trainable trained).
Reported per run: training seconds, minor page faults and kernel CPU seconds while training,
and the peak resident memory of the process.

    python benchmarks/cpu_malloc.py [--rounds 3] [--subset 5000] [--epochs 2]

Ends with `RESULT kept_vs_default_time_ratio=R target<=0.90` (freed memory kept must save at
least a tenth of the training time) and `RESULT thread_vs_main_time_ratio=R` (no target: why
trials moved to their worker's main thread).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

MODES = ("default", "kept", "thread")


def worker(args) -> None:
    """One run, in this process: prints one JSON line."""
    from nas.data.archive import resolve_data_root
    from nas.data.config import DataConfig
    from nas.data.tensors import load_data
    from nas.models import ArchConfig
    from nas.training.loop import train
    from nas.training.recipe import Recipe

    data_cfg = DataConfig(root=str(resolve_data_root(args.data_root)), train_subset=args.subset, val_size=1000)
    data = load_data(data_cfg)
    arch = ArchConfig.from_dict({"width": 0.25, "L1": {"residual": 1}, "L3": {"residual": 1}})
    recipe = Recipe(epochs=args.epochs)
    out: dict = {}

    def run() -> None:
        before = resource.getrusage(resource.RUSAGE_SELF)
        result = train(arch, recipe, data, data_cfg, seed=0, threads=args.threads)
        after = resource.getrusage(resource.RUSAGE_SELF)
        out.update(train_s=result.train_seconds, minor_faults=after.ru_minflt - before.ru_minflt,
                   sys_s=after.ru_stime - before.ru_stime, max_rss_mb=after.ru_maxrss / 1024)

    if args.worker == "thread":
        side = threading.Thread(target=run, name="trial")
        side.start()
        side.join()
    else:
        run()
    print(json.dumps(out))


def one_run(mode: str, args) -> dict:
    env = {**os.environ, "NAS_KEEP_FREED_MEMORY": "1" if mode == "kept" else "0"}
    cmd = [sys.executable, __file__, "--worker", mode, "--subset", str(args.subset), "--epochs", str(args.epochs),
           "--threads", str(args.threads)] + (["--data-root", args.data_root] if args.data_root else [])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    print(f"R:L1+L3 w=0.25, {args.epochs} epochs on {args.subset} images, {args.threads} threads, "
          f"{args.rounds} rounds of {', '.join(MODES)} (a fresh process each)")
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    start = time.perf_counter()
    for r in range(args.rounds):
        order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]  # rotate: no mode always first
        for mode in order:
            runs[mode].append(one_run(mode, args))
        print(f"round {r}: " + "   ".join(f"{m} {runs[m][-1]['train_s']:5.2f} s" for m in MODES))
    for mode in MODES:
        med = {k: statistics.median(run[k] for run in runs[mode]) for k in runs[mode][0]}
        print(f"{mode:8s} median: train {med['train_s']:6.2f} s, {med['minor_faults']:>9,.0f} minor faults, "
              f"kernel {med['sys_s']:5.2f} s, peak RSS {med['max_rss_mb']:6.0f} MB")
    print(f"({time.perf_counter() - start:.0f} s in all)")

    def ratio(a: str, b: str) -> float:  # median over rounds of the paired ratio
        return statistics.median(x["train_s"] / y["train_s"] for x, y in zip(runs[a], runs[b]))

    print(f"RESULT kept_vs_default_time_ratio={ratio('kept', 'default'):.3f} target<=0.90")
    print(f"RESULT thread_vs_main_time_ratio={ratio('thread', 'default'):.3f}")


if __name__ == "__main__":
    main()
