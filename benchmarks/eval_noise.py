"""Evaluation noise against evaluation cost: how many val images the cpu budget should score on.

A val accuracy p measured on n images has the binomial standard error sqrt(p (1 - p) / n):
at p = 45%, 1.57 points on 1,000 images, 0.70 on 5,000. More images cost evaluation time
every epoch. This script trains the cpu budget's net once (R:L3 w=0.25, the cpu budget's
recipe: 4 epochs, batch 512, on 5,000 training images) and measures its val accuracy at each
size; then, round after round, it times one training epoch (`nas.training.loop.train`, a
1-epoch run) and one val evaluation (`nas.training.evaluate.evaluate`) at each size back to
back, in rotating order, so that machine noise hits all alike. Reported per size: the
evaluation seconds, their share of an epoch (evaluation / (training epoch + evaluation),
paired within a round, median over rounds), the accuracy measured, and the binomial SE at
45% and at the measured accuracy.

    python benchmarks/eval_noise.py [--rounds 5] [--sizes 1000,2500,5000] [--subset 5000]

Ends with `RESULT eval_share_at_<n>=S` and `RESULT val_se_pp_at_<n>=SE` per size (SE in
percentage points at p = 0.45); no target: the rule in docs/statistics.md picks the size from them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nas.data.archive import resolve_data_root
from nas.data.config import DataConfig
from nas.data.tensors import load_data
from nas.models import ArchConfig
from nas.stats import binomial_se
from nas.training.evaluate import evaluate
from nas.training.loop import train
from nas.training.recipe import Recipe

ARCH = ArchConfig.from_dict({"width": 0.25, "L3": {"residual": 1}})  # R:L3 w=0.25, the cpu budget's width
REFERENCE_ACC = 0.45  # the cpu budget's confirmed accuracies are 43-47%


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="1000,2500,5000", help="val images, comma-separated")
    parser.add_argument("--subset", type=int, default=5000, help="training images (the cpu budget's)")
    parser.add_argument("--epochs", type=int, default=4, help="the cpu budget's")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    # The largest val split once; each size scores its first n images (the same model, the same images).
    data_cfg = DataConfig(root=str(resolve_data_root(args.data_root)), train_subset=args.subset,
                          val_size=max(sizes))
    full = load_data(data_cfg)
    # Training sees no val split and a tiny test split: the epochs are timed alone, the model is the same.
    trainable = type(full)(**{**full.__dict__, "val_x": full.val_x[:0], "val_y": full.val_y[:0],
                              "test_x": full.test_x[:256], "test_y": full.test_y[:256]})
    recipe = Recipe(epochs=args.epochs)
    print(f"{ARCH.short_name()}, {args.subset} training images, batch {recipe.batch_size}, {args.epochs} epochs, "
          f"eval batch {recipe.eval_batch_size}, {torch.get_num_threads()} threads, {args.rounds} rounds")

    # The cpu budget's training once: the model whose accuracy each size measures.
    start = time.perf_counter()
    trained = train(ARCH, recipe, trainable, data_cfg, seed=0)
    model = trained.model
    acc = {n: evaluate(model, full.val_x[:n], full.val_y[:n], recipe.eval_batch_size) for n in sizes}
    print(f"trained: epochs {', '.join(f'{e.epoch_seconds:.2f}' for e in trained.epochs)} s; "
          + ", ".join(f"val acc {acc[n]:.2%} on {n:,}" for n in sizes))

    # Then per round, back to back so that the same machine load hits them all: one training
    # epoch (a fresh 1-epoch run, its epoch_seconds) and one val evaluation at each size, in
    # rotating order.
    epoch_s: list[float] = []
    eval_s: dict[int, list[float]] = {n: [] for n in sizes}
    one_epoch = Recipe(epochs=1)
    items = ["epoch", *sizes]
    for r in range(args.rounds):
        for item in items[r % len(items):] + items[:r % len(items)]:
            if item == "epoch":
                epoch_s.append(train(ARCH, one_epoch, trainable, data_cfg, seed=r).epochs[0].epoch_seconds)
                continue
            t0 = time.perf_counter()
            evaluate(model, full.val_x[:item], full.val_y[:item], recipe.eval_batch_size)
            eval_s[item].append(time.perf_counter() - t0)
        print(f"round {r}: epoch {epoch_s[-1]:5.2f} s   "
              + "   ".join(f"val@{n} {eval_s[n][-1]:5.2f} s" for n in sizes))
    print(f"({time.perf_counter() - start:.0f} s in all)")

    print(f"{'val images':>10} {'eval s':>7} {'eval/epoch':>10} {'share':>6} {'acc':>7} "
          f"{'SE@45%':>7} {'SE@acc':>7} {'SE diff':>7}")
    shares = {}
    for n in sizes:
        # paired within a round: the evaluation against that round's epoch
        shares[n] = statistics.median(e / (t + e) for e, t in zip(eval_s[n], epoch_s))
        ratio = statistics.median(e / t for e, t in zip(eval_s[n], epoch_s))
        se = binomial_se(REFERENCE_ACC, n)
        print(f"{n:>10,} {statistics.median(eval_s[n]):7.2f} {ratio:10.3f} {shares[n]:6.1%} {acc[n]:7.2%} "
              f"{se * 100:6.2f}pp {binomial_se(acc[n], n) * 100:6.2f}pp {se * 2 ** 0.5 * 100:6.2f}pp")
    print("share: evaluation / (training epoch + evaluation); SE diff: of the difference of two "
          "independent accuracies at 45% (sqrt 2 x SE)")
    for n in sizes:
        print(f"RESULT eval_share_at_{n}={shares[n]:.3f}")
    for n in sizes:
        print(f"RESULT val_se_pp_at_{n}={binomial_se(REFERENCE_ACC, n) * 100:.2f}")


if __name__ == "__main__":
    main()
