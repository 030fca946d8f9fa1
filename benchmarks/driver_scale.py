"""The driver's cost per trial as a search grows to 10,000 trials on many (simulated) GPU nodes.

On a GPU cluster fast-CIFAR trials are short, and the driver (one process: Optuna sampling and
pruning, every store write) can become the bottleneck. This stands up a simulated cluster on
this machine (`ray.cluster_utils.Cluster`: fake nodes of 8 GPUs each) and runs a real
`nas.search.launch` on it: the real Ray Tune trials, driver, Optuna studies (multi-objective
TPE over cifar_fast's 8 architecture dimensions, the noise-aware median pruner), store and
confirm race; only the training is replaced, by `nas.trials.simulated` (a synthetic learning
curve, 8 epochs, a short sleep per epoch).

Measured: the wall time the driver spends in its trial callbacks (suggest, every epoch's
result and pruning decision, the end of a trial: everything `nas` does per trial; Ray Tune's
own loop is not counted; the asks run ahead in a thread of their own), per finished search
trial, in windows of 100 trials as the study grows, and per reported epoch; the CPU time of
those callbacks, and of the whole driver process (every thread: Ray Tune's loop and the
sampler's asks included), over the same windows; for each store backend (SQLite, and
PostgreSQL given a URL) and concurrency (8 and 64 trials at once). The headline figures are
the worst over those runs. On a small machine the fake nodes' workers run beside the driver;
on a cluster they run on machines of their own. So the fake nodes' raylets, and the workers
they start, run at a lower CPU priority (`--worker-nice`, default 10): the driver (and the
head node's Ray processes it talks to) gets a core when it needs one, as on a cluster. With
`--worker-nice 0` they compete equally, and the callbacks' wall times include waiting for a
core behind 64 workers (the CPU figures do not).

    python benchmarks/driver_scale.py [--trials 10000] [--concurrency 8,64] [--backends sqlite,postgres]
                                      [--postgres URL] [--worker-nice 10] [--writes behind,inline]

The launch's store writes run behind the callbacks, from a thread of their own
(`nas.db.write_behind`): its wall and CPU per trial are reported beside the callbacks', and
so are the SQL statements and commits per trial on every engine of the driver process (each
statement is a round trip to a PostgreSQL server; SQLite's BEGIN is not counted).
`--writes inline` writes in the callbacks instead; `--writes behind,inline` runs both, side by
side, and prints the ratios.

`--postgres` (default: $NAS_TEST_POSTGRES_URL) adds PostgreSQL runs, each in a fresh schema.
Ends with `RESULT driver_ms_per_trial_at_10k=... target<=50` (the last window) and
`RESULT driver_cost_growth_100_to_10k=... target<=2` (last window / first window), and
`RESULT driver_worst_window_ms_per_trial=...`: the worst of every 100 trials of the run (the
table's five windows are a sample), with the longest single callback in the table.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import yaml

WINDOW = 100  # trials per measurement window
GPUS_PER_NODE = 8


class DriverClock:
    """Wall time spent inside the driver's trial callbacks, and when each search trial ended."""

    CALLBACKS = ("suggest", "result", "stop", "complete", "error")

    def __init__(self, profile: Path | None = None, trials: int = 0) -> None:
        # --profile: cProfile (the callbacks' thread CPU time) of search trials 100-1,000 and of
        # the last 900, written to early.prof and late.prof: what grows between them
        self.profile = profile
        self.profiles = {"early": (WINDOW, 1000), "late": (max(1000, trials - 900), trials)}
        self.profilers: dict[str, object] = {}
        self.busy = 0.0  # wall seconds inside the callbacks
        self.cpu = 0.0  # CPU seconds of the driver thread inside them (a loaded machine inflates wall only)
        self.epochs = 0
        # (wall time, busy, cpu, process CPU, writer wall, writer CPU, SQL statements, commits) at
        # each search trial's end; process CPU: every thread of the driver process (Ray Tune's
        # loop, the ask-ahead sampler, the lease heartbeat, the writer); writer: the write-behind
        # thread (nas.db.write_behind); statements and commits: every engine's in the process
        self.ends: list[tuple[float, ...]] = []
        self.queued: list[int] = []  # the writer's queue at each search trial's end
        self.statements = 0
        self.commits = 0
        self.by_callback: dict[str, float] = {}
        self.longest = (0.0, "", 0)  # the longest single callback: (wall s, its name, search trials ended before it)
        self.writes = None  # the launch's WriteBehind, when it has one

    def install(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        from nas.db.schema import Phase
        from nas.trials.batch import TrialBatch

        def statement(connection, cursor, statement: str, *_: object) -> None:
            self.statements += not statement.startswith("BEGIN")  # SQLite's BEGIN IMMEDIATE (db/engine.py)

        def commit(*_: object) -> None:
            self.commits += 1

        # every engine's (the store's, Optuna's, the lease's): a round trip each on PostgreSQL
        event.listen(Engine, "before_cursor_execute", statement)
        event.listen(Engine, "commit", commit)
        self.uninstall = lambda: (event.remove(Engine, "before_cursor_execute", statement),
                                  event.remove(Engine, "commit", commit))

        for name in self.CALLBACKS:
            original = getattr(TrialBatch, name)

            def timed(batch, *args, _original=original, _name=name, **kwargs):
                # looked up before the call: a trial's end drops its plan (nas.trials.batch, D9)
                plan = batch.plans.get(args[0]) if _name in ("complete", "error") else None
                profiler = self.profiler()
                start, start_cpu = time.perf_counter(), time.thread_time()
                try:
                    if profiler is not None:
                        return profiler.runcall(_original, batch, *args, **kwargs)
                    return _original(batch, *args, **kwargs)
                finally:
                    spent = time.perf_counter() - start
                    self.busy += spent
                    self.cpu += time.thread_time() - start_cpu
                    self.by_callback[_name] = self.by_callback.get(_name, 0.0) + spent
                    self.longest = max(self.longest, (spent, _name, len(self.ends)))
                    if _name == "result":
                        self.epochs += 1
                    if plan is not None and plan.phase == Phase.SEARCH:
                        self.writes = batch.writes
                        writer = (batch.writes.busy, batch.writes.cpu) if batch.writes is not None else (0.0, 0.0)
                        self.ends.append((time.perf_counter(), self.busy, self.cpu, _process_cpu(), *writer,
                                          self.statements / 1000, self.commits / 1000))
                        self.queued.append(batch.writes.pending if batch.writes is not None else 0)

            setattr(TrialBatch, name, timed)

    def profiler(self):
        """The profiler of the current window of --profile, or None outside them."""
        if self.profile is None:
            return None
        import cProfile

        for name, (low, high) in self.profiles.items():
            if low <= len(self.ends) < high:
                return self.profilers.setdefault(name, cProfile.Profile(time.thread_time))
        return None

    def dump_profiles(self) -> None:
        import pstats

        for name, profiler in self.profilers.items():
            path = self.profile / f"{name}.prof"
            profiler.dump_stats(path)
            low, high = self.profiles[name]
            print(f"\n--- {path}: search trials {low}-{high}, the callbacks' CPU, by own time")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)

    def window_ms(self, end: int, field: int = 1) -> float:
        """Driver ms per trial (field 1: wall in the callbacks, 2: their CPU, 3: the whole
        process's CPU, 4: the writer thread's wall, 5: its CPU; 6, 7: SQL statements and
        commits per trial, not ms) over the WINDOW search trials
        ending with the `end`-th (the first window
        from its first trial's end: the process CPU before it is Ray's and the study's start)."""
        first = self.ends[end - WINDOW - 1] if end > WINDOW else self.ends[0]
        trials = WINDOW if end > WINDOW else WINDOW - 1
        return 1000 * (self.ends[end - 1][field] - first[field]) / trials


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def experiment(folder: Path, name: str, trials: int, concurrency: int) -> Path:
    """cifar_fast's space and objectives, the default (noise-aware median) pruner, a race."""
    spec = yaml.safe_load((Path(__file__).parent.parent / "search_spaces" / "cifar_fast.yaml").read_text())
    spec.pop("budgets")
    spec.update(
        name=name, dataset={"val_size": 5000}, recipe={"epochs": 8},
        confirm={"top_k": 3, "repeats": 2, "until_separated": True, "max_repeats": 4},
        resources={"cpus_per_trial": 1, "gpus_per_trial": 1, "max_concurrent": concurrency, "max_failures": 0},
    )
    spec["search"].update(n_trials=trials, pruner={"kind": "median", "n_startup_trials": 5})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def fresh_postgres(base: str):
    """A URL whose search_path is a new schema, and the function that drops it."""
    from sqlalchemy import create_engine

    schema = f"nas_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()

    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options={quote(f'-csearch_path={schema}')}", drop


def run(backend: str, url: str, concurrency: int, trials: int, folder: Path, worker_nice: int,
        write_behind: bool) -> None:
    """One launch on a fresh simulated cluster of `concurrency` fake GPUs."""
    import ray
    from ray.cluster_utils import Cluster

    from nas.config.experiment import load_experiment
    from nas.db import Store
    from nas.search.launch import launch
    from nas.trials.simulated import SimulatedTrainable

    nodes = max(1, concurrency // GPUS_PER_NODE)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    for _ in range(nodes):
        node = cluster.add_node(num_cpus=GPUS_PER_NODE, num_gpus=GPUS_PER_NODE)
        for info in [info for infos in node.all_processes.values() for info in infos]:
            os.setpriority(os.PRIO_PROCESS, info.process.pid, worker_nice)  # its workers inherit it
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        name = f"scale_{backend}_{concurrency}_{'behind' if write_behind else 'inline'}"
        spec = load_experiment(experiment(folder, name, trials, concurrency))
        with Store.open(url) as store:
            launch(spec, store=store, db_url=url, data_root=str(folder), log=lambda line: None,
                   trainable=SimulatedTrainable, write_behind=write_behind)
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--concurrency", default="8,64", help="trials at once, comma-separated")
    parser.add_argument("--postgres", default=os.environ.get("NAS_TEST_POSTGRES_URL"),
                        help="a PostgreSQL server URL; a fresh schema per run (default: $NAS_TEST_POSTGRES_URL)")
    parser.add_argument("--backends", default="sqlite,postgres",
                        help="comma-separated; postgres only with a server URL")
    parser.add_argument("--writes", default="behind",
                        help="comma-separated: behind (the store's writes from a thread of their own, "
                             "nas.db.write_behind), inline (in the callbacks); both: side by side")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="write cProfile stats of the callbacks (early.prof: search trials 100-1,000; "
                             "late.prof: the last 900) into DIR and print their top lines")
    parser.add_argument("--worker-nice", type=int, default=10, choices=range(0, 20), metavar="0-19",
                        help="the fake nodes' CPU niceness (0: the driver's own)")
    args = parser.parse_args()
    if args.trials < 2 * WINDOW:
        parser.error(f"--trials must be at least {2 * WINDOW} (two windows of {WINDOW}).")
    backends = [b for b in args.backends.split(",") if b == "sqlite" or (b == "postgres" and args.postgres)]
    from nas.trials.batch import TrialBatch

    pristine = {name: getattr(TrialBatch, name) for name in DriverClock.CALLBACKS}
    folder = Path(tempfile.mkdtemp(prefix="nas-driver-scale-"))
    rows: list[str] = []
    fields = (1, 2, 3, 4, 5, 6, 7)
    # by run, then field: the last window's ms per trial, and last window / first window
    last: dict[tuple[str, int, str], dict[int, float]] = {}
    growth: dict[tuple[str, int, str], dict[int, float]] = {}
    worst_of: dict[tuple[str, int, str], float] = {}  # the worst window's callbacks' wall, ms per trial
    runs = [(backend, int(concurrency), writes) for backend in backends for concurrency in args.concurrency.split(",")
            for writes in args.writes.split(",")]
    if any(writes not in ("behind", "inline") for _, _, writes in runs):
        parser.error("--writes takes behind, inline or both.")
    for backend, concurrency, writes in runs:
        for name, original in pristine.items():
            setattr(TrialBatch, name, original)
        drop = None
        if backend == "sqlite":
            url = f"sqlite:///{folder}/{backend}_{concurrency}_{writes}.db"
        else:
            url, drop = fresh_postgres(args.postgres)
        clock = DriverClock(args.profile, args.trials)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        clock.install()
        started = time.perf_counter()
        run(backend, url, concurrency, args.trials, folder, args.worker_nice, writes == "behind")
        wall = time.perf_counter() - started
        clock.uninstall()
        if args.profile is not None:
            clock.dump_profiles()
        if drop is not None:
            drop()
        n = len(clock.ends)
        if n < 2 * WINDOW:  # the clock's hooks missed the trials' ends: say so, not a KeyError below
            raise SystemExit(f"driver_scale: the clock saw {n} search trial ends of {args.trials}; "
                             "nas.trials.batch.TrialBatch's callbacks changed under DriverClock.install.")
        marks = list(dict.fromkeys(m for m in (WINDOW, 1000, 2500, 5000, n) if WINDOW <= m <= n))
        cells = []
        key = (backend, concurrency, writes)
        last[key], growth[key] = {}, {}
        for field in fields:
            windows = {m: clock.window_ms(m, field) for m in marks}
            cells.append(", ".join(f"{m}: {v:.1f}" for m, v in windows.items()))
            last[key][field] = windows[n]
            growth[key][field] = windows[n] / windows[WINDOW] if windows[WINDOW] else float("nan")
        # the writer's queue: the most writes queued at a search trial's end, same windows
        cells.append(", ".join(f"{m}: {max(clock.queued[max(0, m - WINDOW):m])}" for m in marks))
        # every window of the run, not only the marks: the worst, and where it ended
        worst = max((clock.window_ms(m), m) for m in range(WINDOW, n + 1, WINDOW))
        worst_of[key] = worst[0]
        cells.append(f"{worst[0]:.1f} at {worst[1]}; longest {1000 * clock.longest[0]:.0f} ms ({clock.longest[1]}, "
                     f"after {clock.longest[2]})")
        per_epoch = 1000 * clock.busy / max(1, clock.epochs)
        split = ", ".join(f"{k} {1000 * v / max(1, n):.1f}" for k, v in clock.by_callback.items())
        queued = (f"{clock.writes.writes / max(1, clock.writes.transactions):.1f} / {clock.writes.most_pending}"
                  if clock.writes is not None else "-")
        rows.append(f"| {backend} | {writes} | {concurrency} | {args.worker_nice} | {n} | " + " | ".join(cells)
                    + f" | {per_epoch:.2f} | {wall:.0f} | {split} | {queued} |")
        print(rows[-1], flush=True)
    print("\n| backend | store writes | concurrent | workers' niceness | search trials | driver wall ms per trial in "
          "nas's callbacks, window of 100 ending at trial | their CPU ms per trial, same windows | the driver process's "
          "CPU ms per trial (all threads: Ray Tune's loop, the ask-ahead sampler, the writer), same windows | the "
          "writer thread's wall ms per trial, same windows | its CPU ms per trial | SQL statements per trial (every "
          "engine in the driver process: a round trip each on PostgreSQL) | commits per trial | writes queued, most at a "
          "trial's end, same windows | callbacks' wall ms per trial, the worst window of 100 of the run (every "
          "100th trial), and the longest single callback | callbacks' wall ms "
          "per epoch | run "
          "wall s | callbacks' wall ms per trial, by callback | writes per transaction / most queued |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    for key in last:  # side by side: what writing in the callbacks costs against writing behind
        twin = (key[0], key[1], "inline")
        if key[2] == "behind" and twin in last:
            print(f"RESULT {key[0]}_{key[1]}_inline_over_behind callbacks_wall={last[twin][1] / last[key][1]:.2f} "
                  f"callbacks_cpu={last[twin][2] / last[key][2]:.2f} process_cpu={last[twin][3] / last[key][3]:.2f}")
    # the headline: the worst run as nas launches (writes behind), unless only inline ran
    headline = [key for key in last if key[2] == "behind"] or list(last)
    print(f"RESULT driver_ms_per_trial_at_10k={max(last[k][1] for k in headline):.1f} target<=50")
    print(f"RESULT driver_cost_growth_100_to_10k={max(growth[k][1] for k in headline):.2f} target<=2")
    print(f"RESULT driver_worst_window_ms_per_trial={max(worst_of[k] for k in headline):.1f}")
    print(f"RESULT driver_cpu_ms_per_trial_at_10k={max(last[k][2] for k in headline):.1f}")
    print(f"RESULT driver_cpu_growth_100_to_10k={max(growth[k][2] for k in headline):.2f}")
    print(f"RESULT driver_process_cpu_ms_per_trial_at_10k={max(last[k][3] for k in headline):.1f}")
    print(f"RESULT driver_process_cpu_growth_100_to_10k={max(growth[k][3] for k in headline):.2f}")
    print(f"RESULT writer_ms_per_trial_at_10k={max(last[k][4] for k in headline):.1f}")
    print(f"RESULT statements_per_trial_at_10k={max(last[k][6] for k in headline):.1f}")


if __name__ == "__main__":
    main()
