"""Does the dashboard stay fast on a big search? Pareto-page render time, 10,000 trials vs 100.

Two SQLite stores are generated with bulk inserts (SQLAlchemy Core executemany, one
transaction each): one experiment of N trials, 10 epochs planned each — search trials
over a space of widths x stage insertions (completed, pruned after 2-9 epochs, a few
failed; every recorded epoch stored) plus a confirm phase of 5 architectures x 5 seeds.
N = 10,000 gives ~80,000 epoch rows and a few thousand distinct architectures.

The Pareto page is then rendered with Streamlit's AppTest exactly as a browser visit
runs it (every query, the front, the figure serialised), with the query caches cleared
first: the cost of the first visit, which is the slow one. Rounds alternate between the
two stores and the median per store is reported, so machine noise hits both alike. The
warm (cached, within the TTL) render time is printed for information.

    python benchmarks/dashboard_load.py [--trials 10000] [--small 100] [--epochs 10] [--rounds 3]

Ends with `RESULT pareto_render_10k_s=S target<=2` and `RESULT pareto_10k_vs_100_ratio=R`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert

from nas.dashboard import queries
from nas.dashboard.seed import DIMENSIONS, arch_of, costs, curve, experiment_config
from nas.db import Store
from nas.db.schema import Architecture, EpochResult, Trial

TARGET_S = 2.0  # render time of the Pareto page at 10,000 trials
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


def render_pareto(url: str) -> tuple[float, float, int]:
    """(cold render s, warm render s, architectures drawn) of the Pareto page on `url`."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["NAS_DB"] = url
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params["exp"] = EXPERIMENT
    at.run()  # the landing page; switch_page needs one run first
    assert not at.exception, [e.message for e in at.exception]
    st.cache_data.clear()
    started = time.perf_counter()
    at.switch_page("views/pareto.py").run()
    cold = time.perf_counter() - started
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == "Pareto front"
    started = time.perf_counter()
    at.run()
    warm = time.perf_counter() - started
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    drawn = sum(len(t.get("customdata") or []) for t in spec["data"] if t["name"] != "confirmed (mean ± 95% CI)")
    return cold, warm, drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nas-dashboard-bench-") as folder:
        urls = {}
        for n in (args.small, args.trials):
            started = time.perf_counter()
            urls[n] = build_store(Path(folder) / f"{n}.db", n, args.epochs)
            print(f"store of {n} trials x {args.epochs} epochs written in {time.perf_counter() - started:.1f} s")
        render_pareto(urls[args.small])  # warm-up: imports (streamlit, plotly, torch via nas.models)
        cold: dict[int, list[float]] = {n: [] for n in urls}
        warm: dict[int, list[float]] = {n: [] for n in urls}
        drawn = {}
        for _ in range(args.rounds):
            for n, url in urls.items():
                c, w, drawn[n] = render_pareto(url)
                cold[n].append(c)
                warm[n].append(w)
        for n in urls:
            print(f"{n:>6} trials ({drawn[n]:>5} architectures drawn): first visit "
                  f"{statistics.median(cold[n]):.3f} s, cached rerun {statistics.median(warm[n]):.3f} s "
                  f"(median of {args.rounds})")
    big, small = statistics.median(cold[args.trials]), statistics.median(cold[args.small])
    print(f"RESULT pareto_render_10k_s={big:.3f} target<={TARGET_S:g}")
    print(f"RESULT pareto_10k_vs_100_ratio={big / small:.2f}")


if __name__ == "__main__":
    main()
