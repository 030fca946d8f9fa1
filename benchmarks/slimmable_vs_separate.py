"""One universally slimmable training vs training each width separately, side by side.

US-Nets (Yu & Huang, ICCV 2019) train one network for every width between a minimum and a
maximum ratio (sandwich rule, inplace distillation, BN statistics recomputed per width after
training), claiming each width as accurate as the same width trained alone. Here, at CPU
scale, one US-Net of the architecture (its widths 0.25..1 of the arch's width, 4 per step)
is compared with the widths 0.25, 0.5 and 1 trained on their own with the same recipe, data
and seed: accuracy at each width (val and test), and the total training compute of each
side, as train wall seconds (evaluation excluded) and as training FLOPs, counted as 3x the
forward FLOPs per image (forward + backward) times the images of every step, for every
width the step trained (the sandwich trains `samples` widths per step, one of them the
widest). The US-Net's BN recalibration (2,000 images per evaluated width, forward only) is
reported apart: it is evaluation, not training.

    python benchmarks/slimmable_vs_separate.py [--arch "R:L1+L3 w=0.25"] [--epochs 4]
        [--train-subset 5000] [--val-size 1000] [--threads 2] [--data-root DIR]

Ends with one `RESULT usnet_minus_separate_test_pp_w<r>=D` per compared width (the paper's
claim: >= 0) and `RESULT usnet_vs_separate_train_seconds_ratio=R`,
`RESULT usnet_vs_separate_train_flops_ratio=R` (both runs together: < 1 means the US-Net
cost less than the three separate trainings).
"""

from __future__ import annotations

import argparse
import time

import torch

from nas.data.archive import resolve_data_root
from nas.data.config import DataConfig
from nas.data.tensors import load_data
from nas.models import build_model, count_flops, parse_short_name
from nas.models.width_slicing import width_member
from nas.training.usnets import CALIBRATION_IMAGES, accuracy_at_widths
from nas.training.loop import train
from nas.training.recipe import Recipe, SlimmableConfig

COMPARED = (0.25, 0.5, 1.0)  # width ratios trained separately too
CURVE = (0.25, 0.375, 0.5, 0.75, 1.0)  # width ratios the US-Net is measured at


def forward_flops(arch, ratio: float, cache: dict[float, int]) -> int:
    """Forward FLOPs per image of the member at `ratio`."""
    if ratio not in cache:
        cache[ratio] = count_flops(build_model(width_member(arch, ratio)))
    return cache[ratio]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="R:L1+L3 w=0.25", help="the widest network (CPU base width 0.25)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-subset", type=int, default=5000)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--min-width", type=float, default=0.25)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)  # evaluation too; train() sets it for training
    arch = parse_short_name(args.arch)
    data_cfg = DataConfig(root=str(resolve_data_root(args.data_root)), train_subset=args.train_subset,
                          val_size=args.val_size)
    data = load_data(data_cfg)
    plain = Recipe(epochs=args.epochs)
    slim = Recipe(epochs=args.epochs, slimmable=SlimmableConfig(min_width=args.min_width, samples=args.samples))
    steps = args.epochs * max(1, len(data.train_y) // plain.batch_size)
    images_per_step = min(plain.batch_size, len(data.train_y))  # a train set under one batch is one batch
    flops: dict[float, int] = {}
    print(f"{arch.short_name()}: {len(data.train_y)} train / {len(data.val_y)} val / {len(data.test_y)} test images, "
          f"{args.epochs} epochs x {steps // args.epochs} steps of {plain.batch_size}, seed {args.seed}, "
          f"{args.threads} threads")

    # -- one US-Net --
    started = time.perf_counter()
    us_net = train(arch, slim, data, data_cfg, seed=args.seed, threads=args.threads)
    assert us_net.status == "completed", us_net.status
    measured = time.perf_counter()
    curve = accuracy_at_widths(us_net.model, data, data_cfg, slim, sorted(set(CURVE) | set(COMPARED)), seed=args.seed)
    calibration_seconds = time.perf_counter() - measured
    us_seconds = us_net.train_seconds
    us_flops = 3 * images_per_step * sum(forward_flops(arch, r, flops) for step in us_net.step_widths for r in step)
    print(f"US-Net: {us_seconds:.1f} train s ({time.perf_counter() - started:.0f} s wall with evaluation); "
          f"{len(curve.points)} widths measured in {calibration_seconds:.1f} s (BN recalibrated on up to "
          f"{CALIBRATION_IMAGES} training images each)")

    # -- each compared width on its own --
    separate = {}
    for ratio in COMPARED:
        member = width_member(arch, ratio)
        result = train(member, plain, data, data_cfg, seed=args.seed, threads=args.threads)
        assert result.status == "completed", result.status
        separate[ratio] = result
        print(f"separate {member.short_name()}: {result.train_seconds:.1f} train s")
    sep_seconds = sum(r.train_seconds for r in separate.values())
    sep_flops = 3 * images_per_step * steps * sum(forward_flops(arch, r, flops) for r in COMPARED)

    # -- side by side --
    print()
    print("| width ratio | member | MFLOPs / image | US-Net val | US-Net test | separate val | separate test "
          "| Δ test (pp) |")
    print("|---|---|---|---|---|---|---|---|")
    gaps = {}
    for p in curve.points:
        member = width_member(arch, p.width)
        alone = separate.get(p.width)
        row = [f"{p.width:g}", member.short_name(), f"{p.flops / 1e6:.2f}", f"{p.val_acc:.2%}", f"{p.test_acc:.2%}"]
        if alone is None:
            row += ["-", "-", "-"]
        else:
            gaps[p.width] = (p.test_acc - alone.final.test_acc) * 100
            row += [f"{alone.final.val_acc:.2%}", f"{alone.final.test_acc:.2%}", f"{gaps[p.width]:+.2f}"]
        print("| " + " | ".join(row) + " |")
    print()
    print("| training | runs | widths per step | train wall s | training TFLOPs |")
    print("|---|---|---|---|---|")
    print(f"| US-Net (widths {args.min_width:g}-1, sandwich rule) | 1 | {args.samples} | {us_seconds:.1f} "
          f"| {us_flops / 1e12:.2f} |")
    print(f"| separate ({', '.join(f'{r:g}' for r in COMPARED)}) | {len(COMPARED)} | 1 | {sep_seconds:.1f} "
          f"| {sep_flops / 1e12:.2f} |")
    print(f"| US-Net / separate | | | {us_seconds / sep_seconds:.2f}x | {us_flops / sep_flops:.2f}x |")
    print()
    for ratio, gap in gaps.items():
        print(f"RESULT usnet_minus_separate_test_pp_w{ratio:g}={gap:+.2f} (US-Nets' claim: >= 0)")
    print(f"RESULT usnet_vs_separate_train_seconds_ratio={us_seconds / sep_seconds:.3f}")
    print(f"RESULT usnet_vs_separate_train_flops_ratio={us_flops / sep_flops:.3f}")


if __name__ == "__main__":
    main()
