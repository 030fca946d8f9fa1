"""Does skipping depth save time? Train-step time under stochastic depth and depth dropout.

A residual-heavy net (two residual blocks at each of L1, L2 and L3) is trained on random
CIFAR-shaped batches (the content does not change the time) at drop rates 0, 0.25 and 0.5
for stochastic depth (`sd`) and depth dropout (`dd`). The six configs are timed side by
side in one run: each round times every config (in a rotated order), and the median over
rounds is reported, so machine noise hits them alike.

Measured saving = median over rounds of 1 - step time / step time at rate 0 of the same kind
in the same round (sd at rate 0 is the plain net; dd at rate 0 has the 1x1 shortcuts);
pairing within a round cancels the slow swings of a shared machine's load. Theoretical
saving = the expected share of the rate-0 net's forward FLOPs in the branches that are
dropped (per block: drop probability x branch FLOPs), taking the backward pass to cost the
same multiple of the forward everywhere. The headline is their ratio at p = 0.5: the share
of the theoretical saving achieved.

Evidence (a busy shared 2-core CPU, defaults, 3 runs): sd p=0.5 saved 13-19% of a
theoretical 19% (share 0.68-0.98), dd p=0.5 saved 20-26% of 32% (share 0.62-0.83). What is missing
is the gather/scatter traffic per block, which weighs most in stochastic depth's early
blocks, where few images are dropped.

    python benchmarks/depth_skip_speed.py [--rounds 15] [--steps 1] [--batch 256] [--width 0.25]
                                          [--threads 1] [--clock cpu|wall]

Ends with `RESULT sd_p0.5_saving_share=S target>=0.60` and the same for dd.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from nas.models import STAGES, ArchConfig, build_model, survival_probabilities

KINDS = {"sd": "stochastic_depth", "dd": "depth_dropout"}
RATES = (0.0, 0.25, 0.5)
BLOCKS_PER_STAGE = 2
TARGET_SHARE = 0.60  # of the theoretical saving, at p = 0.5


def arch_for(kind: str, rate: float, width: float) -> ArchConfig:
    stages = {name: {"residual": BLOCKS_PER_STAGE} for name in STAGES}
    return ArchConfig.from_dict({"width": width, **stages, "drop": {"kind": KINDS[kind], "rate": rate}})


def theoretical_saving(kind: str, rate: float, width: float) -> tuple[float, float]:
    """(expected share of forward FLOPs skipped, the branches' share of forward FLOPs)."""
    model = build_model(arch_for(kind, 0.0, width)).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, 32, 32))
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    total = counts["FastResNet"]
    branches = [
        counts[f"FastResNet.{stage.lower()}.residual.{i}.branch"]
        for stage in STAGES for i in range(BLOCKS_PER_STAGE)
    ]
    if kind == "sd":
        drops = [1.0 - p for p in survival_probabilities(len(branches), rate)]
    else:
        drops = [rate] * len(branches)
    skipped = sum(d * f for d, f in zip(drops, branches))
    return skipped / total, sum(branches) / total


def make_step(kind: str, rate: float, width: float, batch: int):
    """A closure running one SGD step (forward, backward, update) of a fresh model."""
    model = build_model(arch_for(kind, rate, width), seed=0).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=gen)

    def step() -> None:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timing rounds (median over them)")
    parser.add_argument("--steps", type=int, default=1, help="train steps per config per round")
    parser.add_argument("--batch", type=int, default=256, help="images per step")
    parser.add_argument("--width", type=float, default=0.25, help="channel multiplier of the net")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="what the headline times")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    configs = [(kind, rate) for kind in KINDS for rate in RATES]
    steps = {c: make_step(*c, args.width, args.batch) for c in configs}
    for step in steps.values():  # warm-up: allocator, kernels, first-call costs
        step()
    times: dict[str, dict[tuple[str, float], list[float]]] = {"cpu": {}, "wall": {}}
    for r in range(args.rounds):
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        for config in order:
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(args.steps):
                steps[config]()
            times["cpu"].setdefault(config, []).append((time.process_time() - cpu) / args.steps)
            times["wall"].setdefault(config, []).append((time.perf_counter() - wall) / args.steps)
    median = {clock: {c: statistics.median(t) for c, t in by.items()} for clock, by in times.items()}

    print(f"net: residual x{BLOCKS_PER_STAGE} at L1, L2, L3, width {args.width}, batch {args.batch}, "
          f"{torch.get_num_threads()} thread(s), {args.rounds} rounds x {args.steps} step(s), medians; "
          f"headline clock: {args.clock}")
    print(f"{'config':10s} {'cpu ms':>7s} {'wall ms':>8s} {'saved(cpu)':>10s} {'saved(wall)':>11s} "
          f"{'theory':>7s} {'share':>6s}")
    shares = {}
    for kind in KINDS:
        for rate in RATES:
            saved = {
                clock: statistics.median(1.0 - t / t0 for t, t0 in zip(by[(kind, rate)], by[(kind, 0.0)]))
                for clock, by in times.items()
            }
            theory, blocks = theoretical_saving(kind, rate, args.width)
            share = saved[args.clock] / theory if theory > 0 else float("nan")
            shares[(kind, rate)] = share
            print(f"{kind} p={rate:<5g} {median['cpu'][(kind, rate)] * 1e3:7.0f} "
                  f"{median['wall'][(kind, rate)] * 1e3:8.0f} {saved['cpu']:10.3f} {saved['wall']:11.3f} "
                  f"{theory:7.3f} {share:6.2f}"
                  + (f"  (branches: {blocks:.1%} of forward FLOPs)" if rate == 0 else ""))
    for kind in KINDS:
        print(f"RESULT {kind}_p0.5_saving_share={shares[(kind, 0.5)]:.2f} target>={TARGET_SHARE:.2f}")


if __name__ == "__main__":
    main()
