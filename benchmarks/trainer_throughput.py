"""Training throughput of nas's trainer vs a minimal hand-written PyTorch loop.

Both train the same network (same builder, same seed) on the same in-memory tensors with
the same batch size, SGD-Nesterov, crop+flip augmentation and channels_last; the rounds
alternate (nas, bare, nas, bare, ...) so that machine noise hits both alike. Reported:
training images per second, evaluation excluded on both sides.

    python benchmarks/trainer_throughput.py [--rounds 3] [--epochs 2] [--subset 5000]

Ends with `RESULT trainer_vs_bare_ratio=R target>=0.95`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from nas.data.archive import resolve_data_root
from nas.data.config import DataConfig
from nas.data.tensors import load_data
from nas.malloc import keep_freed_memory
from nas.models import ArchConfig, build_model
from nas.training.loop import train
from nas.training.recipe import Recipe, lr_at

ARCH = ArchConfig.from_dict({"width": 0.25, "L1": {"residual": 1}, "L3": {"residual": 1}})


def bare_loop(data, recipe: Recipe, seed: int) -> float:
    """The loop a person would write by hand; returns training images per second."""
    model = build_model(ARCH, seed=seed).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=recipe.momentum, nesterov=True,
                          weight_decay=recipe.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all = data.train_x, data.train_y
    n, bs = len(y_all), recipe.batch_size
    steps = n // bs
    total, step, seconds = recipe.epochs * steps, 0, 0.0
    ar = torch.arange(32)
    for _ in range(recipe.epochs):
        model.train()
        start = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        for i in range(steps):
            idx = perm[i * bs:(i + 1) * bs]
            x, y = x_all[idx], y_all[idx]
            # random crop with 4-px reflect padding, then a random flip
            x = F.pad(x, (4, 4, 4, 4), mode="reflect")
            dy, dx = torch.randint(0, 9, (2, len(x), 1), generator=gen)
            rows = (dy + ar)[:, None, :, None]  # per-image offsets, gathered in one indexing op
            cols = (dx + ar)[:, None, None, :]
            x = x[torch.arange(len(x))[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
            flip = torch.rand(len(x), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, recipe)
            loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y,
                                   label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        seconds += time.perf_counter() - start
    return total * bs / seconds


def nas_trainer(data, data_cfg: DataConfig, recipe: Recipe, seed: int) -> float:
    result = train(ARCH, recipe, data, data_cfg, seed=seed)
    steps = len(data.train_y) // recipe.batch_size
    return recipe.epochs * steps * recipe.batch_size / result.train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()

    # A tiny test split keeps evaluation (not measured) from dominating the wall time.
    data_cfg = DataConfig(root=str(resolve_data_root(args.data_root)), train_subset=args.subset, val_size=0)
    data = load_data(data_cfg)
    data = type(data)(**{**data.__dict__, "test_x": data.test_x[:512], "test_y": data.test_y[:512]})
    recipe = Recipe(epochs=args.epochs)
    print(f"{ARCH.short_name()}, {args.subset} images, batch {recipe.batch_size}, "
          f"{args.epochs} epochs x {args.rounds} rounds, {torch.get_num_threads()} threads")

    nas_rates, bare_rates = [], []
    keep_freed_memory()  # as nas's trainer does on the CPU: both loops under the same malloc settings
    bare_loop(data, Recipe(epochs=1), seed=0)  # warm-up: first-call allocations and kernels
    for r in range(args.rounds):
        nas_rates.append(nas_trainer(data, data_cfg, recipe, seed=r))
        bare_rates.append(bare_loop(data, recipe, seed=r))
        print(f"round {r}: nas {nas_rates[-1]:8.1f} img/s   bare {bare_rates[-1]:8.1f} img/s")
    ratio = statistics.median(n / b for n, b in zip(nas_rates, bare_rates))
    print(f"median nas {statistics.median(nas_rates):.1f} img/s, bare {statistics.median(bare_rates):.1f} img/s")
    print(f"RESULT trainer_vs_bare_ratio={ratio:.3f} target>=0.95")


if __name__ == "__main__":
    main()
