"""Two small experiments with known results for `nas compare` (written through `nas.db.Store`
as the driver writes them, no training): page_post4's two budgets in miniature.

``cheap`` (width 0.25) searches five architectures on seeds 0-2; ``full`` (width 1) searches
five on seeds 0-1 and confirms R:L1 and R:L3 on three confirm seeds, so those two are read
from confirm (more seeds). Four architectures are shared by name without width; each
experiment has one the other lacks. The shared ones' mean accuracies, by hand:

    architecture  cheap  full   rank cheap  rank full
    R:L1          0.60   0.85   1           2
    R:L3          0.55   0.88   2           1
    base          0.50   0.80   3           3
    X:L2          0.45   0.70   4           4

Spearman: d^2 = 1 + 1 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8. Kendall: of 6 pairs 5 agree
and 1 (R:L1, R:L3) disagrees, tau = (5 - 1) / 6 = 2/3. Each architecture's seeds lie within
0.01 of its mean and the means lie >= 0.03 apart, so no seed resample changes an order: the
seed-level CI is the point itself.
"""

from __future__ import annotations

import json

from nas.db import Store
from nas.models.arch import ArchConfig, parse_short_name
from nas.search.race import CONFIRM_SEED_BASE

CONFIRM_SEEDS = tuple(CONFIRM_SEED_BASE + k for k in range(3))
# short name (without width) -> per-seed val accuracy, by phase
CHEAP = {"search": {"R:L1": (0.59, 0.60, 0.61), "R:L3": (0.54, 0.55, 0.56), "base": (0.49, 0.50, 0.51),
                    "X:L2": (0.44, 0.45, 0.46), "X:L3": (0.40, 0.42, 0.44)}}
FULL = {"search": {"R:L1": (0.70, 0.72), "R:L3": (0.60, 0.62), "base": (0.79, 0.81), "X:L2": (0.69, 0.71),
                   "R:L2": (0.75, 0.77)},
        "confirm": {"R:L1": (0.84, 0.85, 0.86), "R:L3": (0.87, 0.88, 0.89)}}
SHARED = ["R:L1", "R:L3", "base", "X:L2"]  # most accurate in cheap first
MEANS = {"cheap": (0.60, 0.55, 0.50, 0.45), "full": (0.85, 0.88, 0.80, 0.70)}
SPEARMAN, KENDALL = 0.8, 2 / 3


def arch(name: str, width: float) -> ArchConfig:
    from dataclasses import replace

    return replace(parse_short_name(name), width=width)


def write_experiment(url: str, name: str, results: dict, width: float, *, confirm_top_k: int = 0) -> None:
    """Experiment `name` in the store at `url`: each phase's architectures with their seeds' val
    accuracy (search seeds from 0, confirm seeds as the race numbers them), plus one pruned
    search trial that must not count."""
    repeats = max(len(v) for v in results["search"].values())
    config = {"name": name, "space": {"width": {"fixed": width}, "arch": {"choice": list(results["search"])}},
              "search": {"seed": 0, "repeats": repeats, "objectives": [{"metric": "val_acc", "direction": "maximize"}]},
              "confirm": {"top_k": confirm_top_k, "repeats": 3}}
    with Store.open(url) as store:
        exp = store.ensure_experiment(name, config_json=json.dumps(config), code_version="0.1.0+test")
        for phase, by_name in results.items():
            for short, accuracies in by_name.items():
                a = arch(short, width)
                store.upsert_architecture(a.hash, a.to_json(), a.short_name(), 1000, 2000)
                seeds = range(len(accuracies)) if phase == "search" else CONFIRM_SEEDS
                for seed, val in zip(seeds, accuracies):
                    _trial(store, exp, a, seed, phase, val, "completed")
        first = arch(next(iter(results["search"])), width)
        _trial(store, exp, first, 99, "search", 0.99, "pruned")  # stopped early: no result to compare
        store.finish_experiment(exp, "finished")


def _trial(store, exp, a, seed, phase, val, status) -> int:
    trial = store.start_trial(exp, a.hash, seed, phase, epochs_planned=2, recipe_json="{}", device="cpu (test)",
                              code_version="0.1.0+test")
    store.record_epoch(trial, 0, train_loss=1.0, train_acc=0.5, val_acc=val, test_acc=val - 0.01, epoch_seconds=1.0,
                       cumulative_seconds=1.0, val_images=5000, test_images=10000)
    store.finish_trial(trial, status)
    return trial


def one_store(path) -> str:
    """``cheap`` and ``full`` in one new store; its URL."""
    url = f"sqlite:///{path}"
    write_experiment(url, "cheap", CHEAP, 0.25)
    write_experiment(url, "full", FULL, 1.0, confirm_top_k=2)
    return url


def two_stores(folder) -> tuple[str, str]:
    """Both budgets under one name, ``page_post4``, each in its own store (a.db: cheap, b.db:
    full), as two machines would write them; their URLs."""
    a, b = f"sqlite:///{folder / 'a.db'}", f"sqlite:///{folder / 'b.db'}"
    write_experiment(a, "page_post4", CHEAP, 0.25)
    write_experiment(b, "page_post4", FULL, 1.0, confirm_top_k=2)
    return a, b
