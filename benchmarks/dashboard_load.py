"""Does the dashboard stay fast on a big search? Page render times, 100,000 trials vs 100.

Two SQLite stores are generated with bulk inserts (SQLAlchemy Core executemany, one
transaction each): one experiment of N trials, 10 epochs planned each — search trials
over a space of widths x stage insertions (completed, pruned after 2-9 epochs, a few
failed; every recorded epoch stored) plus a confirm phase of 5 architectures x 5 seeds.
N = 100,000 gives ~800,000 epoch rows and 3,904 distinct architectures; writing it takes
~30 s (not measured), so `--db DIR` keeps the stores there and reuses them on the next run.

Each page is then rendered with Streamlit's AppTest exactly as a browser visit runs it
(every query, every figure serialised), with the query caches cleared first (st.cache_data
and the parsed-config cache): the cost of the first visit, which is the slow one. Pages:
the Pareto front, the trials table, the experiments list and the search insight (which reads
every completed search curve for its rank correlations). Rounds alternate between the two
stores and the median per store is reported, so machine noise hits both alike. The warm
(cached, within the TTL) render time is printed for information.

    python benchmarks/dashboard_load.py [--trials 100000] [--small 100] [--epochs 10] [--rounds 3]
                                        [--pages pareto,trials,experiments,insight] [--db DIR]

Ends with `RESULT pareto_render_100k_s=S target<=2`, `RESULT trials_table_render_100k_s=S
target<=2`, their ratios to the small store, and the other pages' times (no target).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert

from nas.dashboard import queries, trial_queries, ui
from nas.dashboard.seed import DIMENSIONS, arch_of, costs, curve, experiment_config
from nas.db import Store
from nas.db.schema import Architecture, EpochResult, Trial

TARGET_S = 2.0  # first-visit render time of the Pareto page and of the trials table, at 100,000 trials
PAGES = {  # page: its RESULT name, and whether it has the target
    "pareto": ("pareto", True), "trials": ("trials_table", True),
    "experiments": ("experiments", False), "insight": ("insight", False),
}
EXPERIMENT = "bench"
WIDTHS = [k / 32 for k in range(4, 65)]  # 0.125 .. 2.0: with 64 stage combos, 3,904 architectures
CONFIRM_ARCHS, CONFIRM_SEEDS = 5, 5
APP = Path(queries.__file__).resolve().parent / "app.py"


# ---- a store of N trials, written in bulk -----------------------------------------------


def build_store(path: Path, n_trials: int, epochs: int) -> str:
    url = f"sqlite:///{path}"
    rng = random.Random(n_trials)
    with Store.open(url) as store:
        config = experiment_config(EXPERIMENT, width=1.0, epochs=epochs, n_trials=n_trials)
        config["space"]["width"] = {"choice": WIDTHS}
        experiment_id = store.ensure_experiment(EXPERIMENT, config_json=json.dumps(config))
        archs, trials, epoch_rows = {}, [], []
        start = datetime.now(timezone.utc) - timedelta(days=2)
        n_search = n_trials - CONFIRM_ARCHS * CONFIRM_SEEDS
        for i in range(n_trials):
            if i < n_search:
                point = {key: rng.randint(0, 1) for key in DIMENSIONS}
                arch, phase, seed = arch_of(point, rng.choice(WIDTHS)), "search", i
            else:  # confirm: the first few architectures again, 5 seeds each
                k = i - n_search
                arch = list(archs.values())[k // CONFIRM_SEEDS][0]
                phase, seed = "confirm", 10_000 + k % CONFIRM_SEEDS
            if arch.hash not in archs:
                archs[arch.hash] = (arch, *costs(arch))
            rows = curve(arch, seed, epochs)
            roll = rng.random()
            status = "completed" if phase == "confirm" or roll < 0.6 else "pruned" if roll < 0.97 else "failed"
            if status == "pruned":
                rows = rows[: rng.randint(2, epochs - 1)]
            elif status == "failed":
                rows = rows[:1]
            trial_id = i + 1
            for epoch, metrics in enumerate(rows):
                epoch_rows.append(dict(trial_id=trial_id, epoch=epoch, **metrics))
            last = rows[-1]
            started = start + timedelta(seconds=10 * i)
            trials.append(dict(
                id=trial_id, experiment_id=experiment_id, arch_hash=arch.hash, seed=seed, phase=phase,
                status=status, epochs_planned=epochs, epochs_done=len(rows),
                final_train_loss=last["train_loss"], final_train_acc=last["train_acc"],
                final_val_acc=last["val_acc"], final_test_acc=last["test_acc"],
                best_val_acc=max(r["val_acc"] for r in rows), train_seconds=last["cumulative_seconds"],
                device="NVIDIA H100 80GB HBM3 (synthetic)", recipe_json="{}", code_version="bench",
                error="synthetic failure" if status == "failed" else None,
                started_at=started, finished_at=started + timedelta(seconds=last["cumulative_seconds"]),
            ))
        with store.engine.begin() as connection:
            connection.execute(insert(Architecture), [
                dict(hash=h, config_json=a.to_json(), short_name=a.short_name(), params=p, flops=f)
                for h, (a, p, f) in archs.items()
            ])
            connection.execute(insert(Trial), trials)
            connection.execute(insert(EpochResult), epoch_rows)
        store.finish_experiment(experiment_id, "finished")
    return url


# ---- timing -----------------------------------------------------------------------------


def render(url: str, page: str, n_trials: int) -> tuple[float, float, str]:
    """(first-visit render s, cached rerun s, what was shown) of one page on `url`."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["NAS_DB"] = url
    at = AppTest.from_file(str(APP), default_timeout=600)
    at.query_params["exp"] = EXPERIMENT
    at.run()  # the landing page; switch_page needs one run first
    assert not at.exception, [e.message for e in at.exception]
    st.cache_data.clear()
    trial_queries._dimensions.cache_clear()
    started = time.perf_counter()
    at.switch_page(ui.PAGES[page]).run()
    cold = time.perf_counter() - started
    assert not at.exception, [e.message for e in at.exception]
    started = time.perf_counter()
    at.run()
    warm = time.perf_counter() - started
    return cold, warm, _shown(at, page, n_trials)


def _shown(at, page: str, n_trials: int) -> str:
    """What the page drew, checked against the store's size: the render did the whole job."""
    if page == "pareto":
        spec = json.loads(at.get("plotly_chart")[0].proto.spec)
        drawn = sum(len(t.get("customdata") or []) for t in spec["data"] if t["name"] != "confirmed (mean ± 95% CI)")
        return f"{drawn} architectures drawn"
    if page == "trials":
        rows = len(at.dataframe[0].value)
        assert rows == min(n_trials, trial_queries.MAX_TABLE_ROWS), rows
        assert at.caption[0].value.startswith(f"{n_trials:,} of {n_trials:,} trials match"), at.caption[0].value
        return f"{rows} of {n_trials} rows shown"
    if page == "experiments":
        assert at.dataframe[0].value["trials"].tolist() == [n_trials]
        return "1 experiment"
    correlation = next(df.value for df in at.dataframe if "rho" in df.value.columns)
    return f"rank correlation over {int(correlation['trials'].iloc[-1])} completed trials"


def _label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pages", default=",".join(PAGES), help="comma-separated, of " + ", ".join(PAGES))
    parser.add_argument("--db", type=Path, help="folder to keep the stores in and reuse them from")
    args = parser.parse_args()
    sys.argv[1:] = []  # the app reads --db from the command line too (ui.db_url); it gets NAS_DB
    pages = args.pages.split(",")
    unknown = sorted(set(pages) - set(PAGES))
    if unknown:
        parser.error(f"unknown page(s) {unknown}; choose from {list(PAGES)}")

    with tempfile.TemporaryDirectory(prefix="nas-dashboard-bench-") as temporary:
        folder = args.db or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        urls = {}
        for n in (args.small, args.trials):
            path = folder / f"dashboard-load-{n}-trials-{args.epochs}-epochs.db"
            if path.exists():
                urls[n] = f"sqlite:///{path}"
                print(f"store of {n} trials x {args.epochs} epochs reused from {path}")
                continue
            started = time.perf_counter()
            partial = path.with_suffix(".partial")  # renamed once complete: an interrupted write is not reused
            partial.unlink(missing_ok=True)
            build_store(partial, n, args.epochs)
            partial.rename(path)
            urls[n] = f"sqlite:///{path}"
            print(f"store of {n} trials x {args.epochs} epochs written in {time.perf_counter() - started:.1f} s")
        for page in pages:  # warm-up: imports (streamlit, plotly, torch via nas.models, scipy, optuna)
            render(urls[args.small], page, args.small)
        cold = {(p, n): [] for p in pages for n in urls}
        warm = {(p, n): [] for p in pages for n in urls}
        shown = {}
        for _ in range(args.rounds):
            for page in pages:
                for n, url in urls.items():
                    c, w, shown[page, n] = render(url, page, n)
                    cold[page, n].append(c)
                    warm[page, n].append(w)
        for page in pages:
            for n in urls:
                print(f"{page:>11} {n:>7} trials ({shown[page, n]}): first visit "
                      f"{statistics.median(cold[page, n]):.3f} s, cached rerun "
                      f"{statistics.median(warm[page, n]):.3f} s (median of {args.rounds})")
    for page in pages:
        name, targeted = PAGES[page]
        big, small = statistics.median(cold[page, args.trials]), statistics.median(cold[page, args.small])
        print(f"RESULT {name}_render_{_label(args.trials)}_s={big:.3f}" + (f" target<={TARGET_S:g}" if targeted else ""))
        print(f"RESULT {name}_{_label(args.trials)}_vs_{_label(args.small)}_ratio={big / small:.2f}")


if __name__ == "__main__":
    main()
