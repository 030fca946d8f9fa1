"""`nas launch`: Ray Tune runs the trials; Optuna, in the driver, samples and prunes them.

    YAML -> ExperimentSpec -> Optuna ask (driver) -> TrialPlan (architecture, seed)
         -> Ray Tune trial (worker, on its main thread): build, train, one result per epoch
         -> driver: store rows + Optuna report/should_prune -> STOP when pruned
         -> confirm: the top-K architectures again with fresh seeds, unpruned

Only the driver writes: the store rows and the Optuna study (same database). Ray's stock
OptunaSearch cannot be used: it hard-codes NopPruner, and a trial stopped by a scheduler
reaches it as COMPLETE with a truncated value.

Pruning rule: Optuna's pruners are single-objective, so they watch one curve, the first
objective that is an accuracy (val_acc or test_acc), reported at steps 0, 1, ... (epochs).
In a multi-objective search every trial has a twin in a companion study named
``<experiment>:pruning`` that holds that curve; its pruner decides, and the main study
records the trial as PRUNED while its sampler optimises all objectives.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.db import Store
from nas.errors import ConfigError
from nas.models import ArchConfig, build_model, count_flops, count_params
from nas.models.exits import ExitCurve
from nas.provenance import code_version
from nas.config.experiment import ExperimentSpec
from nas.stats import pareto_ranks

CURVE_METRICS = ("val_acc", "test_acc")  # metrics reported every epoch, so prunable
CONFIRM_SEED_BASE = 10_000  # confirm seeds differ from search seeds: the search seed helped select the winner
FINISHED = ("completed", "pruned", "diverged", "failed")  # a search trial that counts as done
WEIGHTS_KEY = "weights_b64"  # a trial's final state_dict in its last result (confirm phase)
EXIT_CURVE_KEY = "exit_curve_json"  # an early-exit net's ExitCurve in its last result
WIDTH_CURVE_KEY = "width_curve_json"  # a universally slimmable trial's WidthCurve in its last result
DEFINING_SECTIONS = ("dataset", "recipe", "space", "search")  # must match to resume an experiment


# ----------------------------------------------------------------------------- the trial, in its worker


class TrialRun:
    """One (architecture, seed) inside its Ray worker: trains it an epoch per `next_result`.

    Each call trains one epoch and returns it as a Ray Tune result; the last one (the last
    epoch, or a diverged one) has ``done`` set and carries what the driver keeps of a
    finished trial: the early-exit curve, the width curve, the weights (confirm phase).
    The class trainable of `_ray_classes` calls it from its actor's main thread.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        import ray
        import torch

        from nas.data.config import DataConfig
        from nas.data.tensors import load_data
        from nas.provenance import device_name
        from nas.training.loop import train_epochs
        from nas.training.recipe import Recipe

        self.config = config
        self.device = torch.device("cuda" if config["gpus"] > 0 and torch.cuda.is_available() else "cpu")
        self.data_cfg = DataConfig(**config["dataset"])
        self.data = load_data(self.data_cfg, device=self.device)  # cached per worker process
        threads = max(1, int(config["cpus"])) if self.device.type == "cpu" else None
        node = ray.get_runtime_context()
        # Which machine of the cluster: timings are only comparable on the same hardware.
        self.described = (f"{device_name(self.device, threads)} @ "
                          f"{ray.util.get_node_ip_address()}/{node.get_node_id()[:8]}")
        self.arch, self.recipe = ArchConfig.from_json(config["arch"]), Recipe(**config["recipe"])
        self.epochs = train_epochs(self.arch, self.recipe, self.data, self.data_cfg,
                                   seed=config["seed"], device=self.device, threads=threads)

    def next_result(self) -> dict[str, Any]:
        result = next(self.epochs)
        metrics = result.final
        diverged = result.status == "diverged"
        out = {**metrics.to_dict(), "diverged": diverged, "device": self.described}
        if diverged or metrics.epoch == self.recipe.epochs - 1:
            if not diverged:
                out.update(self._finished_extras(result))
            out["done"] = True
            self.close()
        return out

    def _finished_extras(self, result) -> dict[str, Any]:
        import torch

        from nas.training.evaluate import exit_curve

        arch, recipe, extra = self.arch, self.recipe, {}
        if arch.exits.stages:
            # BranchyNet's accuracy-vs-FLOPs curve across exit thresholds, and its operating point.
            curve = exit_curve(result.model, arch, self.data, recipe.eval_batch_size)
            extra = {EXIT_CURVE_KEY: curve.to_json(), "mean_inference_flops": curve.at(arch.exits.threshold).mean_flops}
        if recipe.slimmable is not None:
            from nas.training.usnets import accuracy_at_widths, curve_widths

            # US-Nets: accuracy, params and FLOPs per width ratio, BN statistics recomputed per width.
            curve = accuracy_at_widths(result.model, self.data, self.data_cfg, recipe,
                                       curve_widths(recipe.slimmable), seed=self.config["seed"])
            extra[WIDTH_CURVE_KEY] = curve.to_json()
        if self.config.get("save_weights"):
            # The weights travel in the last result (base64 keeps it JSON-safe for Ray's
            # bookkeeping): checkpoints would need storage shared by every node, and only
            # the driver writes the store.
            buffer = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, buffer)
            extra[WEIGHTS_KEY] = base64.b64encode(buffer.getvalue()).decode("ascii")
        return extra

    def close(self) -> None:
        """Stop training (a pruned or finished trial) and restore the thread count."""
        self.epochs.close()


# ----------------------------------------------------------------------------- plans


@dataclass
class TrialPlan:
    """One (architecture, seed) run that the driver hands to Ray Tune."""

    arch: ArchConfig
    seed: int
    phase: str  # search | confirm | ablation
    optuna_trial: optuna.Trial | None = None  # main study trial (search phase)
    prune_trial: optuna.Trial | None = None  # the trial whose curve the pruner watches
    store_id: int | None = None
    pruned: bool = False
    last: dict[str, Any] = field(default_factory=dict)  # last reported metrics


class Driver:
    """Everything the driver knows about one experiment while it runs."""

    def __init__(self, spec: ExperimentSpec, store: Store, db_url: str, data_root: str,
                 log: Callable[[str], None] = print) -> None:
        self.spec = spec
        self.store = store
        # Absolute: Tune runs each trial in a working directory of its own, where a relative
        # root (NAS_DATA_DIR=../shared/data) would name another folder.
        self.data_root = os.path.abspath(os.path.expanduser(data_root))
        self.log = log
        self.plans: dict[str, TrialPlan] = {}
        # Params and FLOPs are counted in a driver thread as soon as a plan exists, so the
        # count (FlopCounterMode's first use takes ~2 s) overlaps the trial's start instead
        # of holding up the trial's first result.
        self._counter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nas-costs")
        self._costs: dict[str, Future[tuple[int, int]]] = {}
        self.experiment_id = self._open_experiment()
        self.study, self.prune_study = self._open_studies(db_url)
        self.used_seeds: dict[str, set[int]] = defaultdict(set)
        for trial in store.trials(experiment_id=self.experiment_id, phase="search"):
            if trial.status != "interrupted":
                self.used_seeds[trial.arch_hash].add(trial.seed)
        self._recover_interrupted()

    # -- opening / resuming --

    def _open_experiment(self) -> int:
        import json

        resolved = self.spec.resolved()
        existing = self.store.get_experiment(self.spec.name)
        if existing is not None and existing.config_json:
            # What defines the results must match to resume; resources and confirm may change.
            stored = json.loads(existing.config_json)
            changed = [k for k in DEFINING_SECTIONS if stored.get(k) != json.loads(json.dumps(resolved[k]))]
            if changed:
                raise ConfigError(
                    f"{self.spec.path}: experiment {self.spec.name!r} already exists in the store with a different "
                    f"{', '.join(changed)} section. Run the original YAML (and --budget) to resume it, or set "
                    "another `name:` to start a new experiment."
                )
        resolved = json.dumps(resolved, sort_keys=True)
        return self.store.ensure_experiment(
            self.spec.name, config_json=resolved, space_yaml=self.spec.source_text, code_version=code_version()
        )

    def _open_studies(self, db_url: str) -> tuple[optuna.Study, optuna.Study | None]:
        search = self.spec.search
        storage = _optuna_storage(db_url)
        directions = [o.direction for o in search.objectives]
        study = optuna.create_study(
            study_name=self.spec.name, storage=storage, directions=directions,
            sampler=search.build_sampler(), pruner=search.pruner.build(), load_if_exists=True,
        )
        self.prune_metric = next((o for o in search.objectives if o.metric in CURVE_METRICS), None)
        prune_study = None
        if len(directions) > 1 and self.prune_metric is not None and search.pruner.kind != "none":
            prune_study = optuna.create_study(
                study_name=f"{self.spec.name}:pruning", storage=storage,
                direction=self.prune_metric.direction, pruner=search.pruner.build(), load_if_exists=True,
            )
        return study, prune_study

    def _recover_interrupted(self) -> None:
        """After a driver death: rows and Optuna trials still 'running' are re-run."""
        stale = self.store.trials(experiment_id=self.experiment_id, status="running")
        for trial in stale:
            self.store.finish_trial(trial.id, "interrupted", error="the driver stopped while this trial ran; re-run")
        for study in (self.study, self.prune_study):
            if study is None:
                continue
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                study.tell(trial.number, state=TrialState.FAIL)
                if study is self.study and trial.params:
                    study.enqueue_trial(trial.params, user_attrs={"seed": trial.user_attrs.get("seed")})
        if stale:
            self.log(f"resuming {self.spec.name!r}: {len(stale)} interrupted trial(s) will run again")

    # -- the search phase --

    def search_trials_left(self) -> int:
        done = [t for t in self.store.trials(experiment_id=self.experiment_id, phase="search") if t.status in FINISHED]
        return max(0, self.search_target() - len(done))

    def search_target(self) -> int:
        search = self.spec.search
        if search.sampler == "grid":
            return len(self.spec.space.grid()) * search.repeats
        return search.n_trials * search.repeats

    def enqueue_grid(self) -> None:
        """Put every grid point (x repeats) in the study once; on resume they are there already."""
        if self.spec.search.sampler != "grid" or self.study.trials:
            return
        for point in self.spec.space.grid():
            for _ in range(self.spec.search.repeats):
                self.study.enqueue_trial(point)

    def ask_search(self) -> TrialPlan:
        trial = self.study.ask()
        arch = self.spec.space.suggest(trial)
        seed = trial.user_attrs.get("seed")
        if seed is None:
            seed = self._next_seed(arch)
        self.used_seeds[arch.hash].add(seed)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("arch_hash", arch.hash)
        prune_trial = trial if len(self.spec.search.objectives) == 1 else None
        if self.prune_study is not None:
            prune_trial = self.prune_study.ask()
            prune_trial.set_user_attr("main_trial", trial.number)
        return TrialPlan(arch=arch, seed=seed, phase="search", optuna_trial=trial, prune_trial=prune_trial)

    def _next_seed(self, arch: ArchConfig) -> int:
        # A re-sampled architecture gets a fresh seed: every trial is a distinct (arch, seed).
        seed = self.spec.search.seed
        while seed in self.used_seeds[arch.hash]:
            seed += 1
        return seed

    def should_prune(self, plan: TrialPlan, result: dict[str, Any]) -> bool:
        if plan.phase != "search" or plan.prune_trial is None or self.prune_metric is None:
            return False
        if int(result["epoch"]) >= self.spec.recipe.epochs - 1:
            return False  # the last epoch is done: stopping now would save nothing
        value = result.get(self.prune_metric.metric)
        if value is None or not math.isfinite(value):
            return False
        plan.prune_trial.report(value, step=int(result["epoch"]))
        return plan.prune_trial.should_prune()

    def tell(self, plan: TrialPlan, status: str) -> None:
        """Close the plan's Optuna trial(s) with the state the store row got."""
        if plan.optuna_trial is None:
            return
        if status == "completed":
            values = self.objective_values(plan)
            self.study.tell(plan.optuna_trial, values if len(values) > 1 else values[0])
            if self.prune_study is not None:
                self.prune_study.tell(plan.prune_trial, plan.last.get(self.prune_metric.metric))
        else:
            state = TrialState.PRUNED if status == "pruned" else TrialState.FAIL
            self.study.tell(plan.optuna_trial, state=state)
            if self.prune_study is not None:
                self.prune_study.tell(plan.prune_trial, state=state)

    def objective_values(self, plan: TrialPlan) -> list[float]:
        params, flops = self.costs(plan.arch)
        last = plan.last
        accuracy = last.get("val_acc") if last.get("val_acc") is not None else last.get("test_acc")
        source = {
            "val_acc": accuracy, "test_acc": last.get("test_acc"),
            "train_seconds": last.get("cumulative_seconds"), "params": params, "flops": flops,
            # at the arch's exit threshold; a net without early exits always runs in full
            "mean_inference_flops": last.get("mean_inference_flops", flops),
        }
        return [float(source[o.metric]) for o in self.spec.search.objectives]

    # -- the confirm phase --

    def confirm_plans(self) -> list[TrialPlan]:
        """Top-K architectures (non-dominated first) x repeats fresh seeds, minus those done."""
        top = self.top_architectures(self.spec.confirm.top_k)
        done = {
            (t.arch_hash, t.seed) for t in self.store.trials(experiment_id=self.experiment_id, phase="confirm")
            if t.status in ("completed", "diverged")
        }
        plans = []
        for arch in top:
            for i in range(self.spec.confirm.repeats):
                seed = CONFIRM_SEED_BASE + i
                if (arch.hash, seed) not in done:
                    plans.append(TrialPlan(arch=arch, seed=seed, phase="confirm"))
        return plans

    def top_architectures(self, k: int) -> list[ArchConfig]:
        by_arch: dict[str, list[list[float]]] = defaultdict(list)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            by_arch[trial.user_attrs["arch_hash"]].append(list(trial.values))
        if not by_arch:
            return []
        hashes = sorted(by_arch)
        means = [[sum(col) / len(col) for col in zip(*by_arch[h])] for h in hashes]
        directions = [o.direction for o in self.spec.search.objectives]
        ranks = pareto_ranks(means, directions)
        sign = -1.0 if directions[0] == "maximize" else 1.0
        order = sorted(range(len(hashes)), key=lambda i: (ranks[i], sign * means[i][0], hashes[i]))
        return [ArchConfig.from_json(self.store.get_architecture(hashes[i]).config_json) for i in order[:k]]

    def keep_best_weights(self) -> None:
        """Of each confirmed architecture, keep the weights of its most accurate seed only."""
        kept = set(self.store.trials_with_weights(self.experiment_id))
        best: dict[str, tuple[float, int]] = {}
        for trial in self.store.trials(experiment_id=self.experiment_id, phase="confirm", status="completed"):
            if trial.id not in kept:
                continue
            acc = trial.final_val_acc if trial.final_val_acc is not None else trial.final_test_acc
            if trial.arch_hash not in best or (acc or 0.0) > best[trial.arch_hash][0]:
                best[trial.arch_hash] = (acc or 0.0, trial.id)
        self.store.delete_weights(sorted(kept - {trial_id for _, trial_id in best.values()}))

    # -- shared --

    def count_costs_soon(self, arch: ArchConfig) -> None:
        """Start counting `arch`'s params and FLOPs in the background (once per architecture)."""
        if arch.hash not in self._costs:
            self._costs[arch.hash] = self._counter.submit(_count_costs, arch)

    def costs(self, arch: ArchConfig) -> tuple[int, int]:
        self.count_costs_soon(arch)
        return self._costs[arch.hash].result()

    def trial_config(self, plan: TrialPlan) -> dict[str, Any]:
        dataset = asdict(self.spec.dataset)
        cpus, gpus = self.trial_resources()
        return {
            "arch": plan.arch.to_json(), "seed": plan.seed, "phase": plan.phase,
            "recipe": self.spec.recipe.to_dict(), "dataset": {**dataset, "root": self.data_root},
            "cpus": cpus, "gpus": gpus, "save_weights": plan.phase == "confirm",
        }

    def trial_resources(self) -> tuple[float, float]:
        res = self.spec.resources
        return res.cpus_per_trial or float(os.cpu_count() or 1), res.gpus_per_trial

    def start_row(self, plan: TrialPlan, device: str) -> None:
        import json

        params, flops = self.costs(plan.arch)
        self.store.upsert_architecture(plan.arch.hash, plan.arch.to_json(), plan.arch.short_name(), params, flops)
        config = self.trial_config(plan)
        plan.store_id = self.store.start_trial(
            self.experiment_id, plan.arch.hash, plan.seed, plan.phase,
            epochs_planned=self.spec.recipe.epochs,
            recipe_json=json.dumps({"recipe": config["recipe"], "dataset": config["dataset"]}, sort_keys=True),
            device=device, code_version=code_version(),
        )


def _count_costs(arch: ArchConfig) -> tuple[int, int]:
    model = build_model(arch)
    return count_params(model), count_flops(model)


def stored_spec(store: Store, name: str) -> ExperimentSpec:
    """The spec a launched experiment ran with, rebuilt from its stored resolved config.

    For commands that add runs to an existing experiment (`nas ablate`): a `Driver` opened
    with it resumes that experiment, since its defining sections are the stored ones.

    Raises:
        ConfigError: no such experiment, or it was not made by `nas launch`.
    """
    import json
    from dataclasses import replace

    import yaml

    from nas.config.experiment import load_experiment

    from nas.results import require_experiment

    experiment = require_experiment(store, name)
    if not experiment.config_json:
        raise ConfigError(
            f"experiment {name!r} has no stored search space (it was made by `nas train`, not "
            "`nas launch`); name an experiment that `nas launch` ran."
        )
    config = json.loads(experiment.config_json)
    budget = config.pop("budget", None)
    with tempfile.TemporaryDirectory(prefix="nas-spec-") as folder:
        path = os.path.join(folder, f"{name}.yaml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        spec = load_experiment(path)
    return replace(spec, path=f"experiment {name!r} (stored)", budget=budget,
                   source_text=experiment.space_yaml or "")


def _optuna_storage(db_url: str) -> optuna.storages.RDBStorage:
    from nas.db import resolve_db_url

    url = resolve_db_url(db_url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 30}}
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


# ----------------------------------------------------------------------------- Ray Tune glue


def _ray_classes():
    """Ray Tune subclasses, defined lazily so importing nas does not import Ray."""
    from ray import tune
    from ray.tune import PlacementGroupFactory
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler
    from ray.tune.search import Searcher

    class TrialTrainable(tune.Trainable):
        """Trains a TrialRun, one epoch per step, on the actor's main thread.

        Not a function trainable: Tune runs those in a side thread, where glibc's malloc maps
        and faults in every large block again whatever its settings (`nas.malloc` has the
        measurements, from `benchmarks/cpu_malloc.py`). A stopped (pruned)
        trial simply gets no further step; `reset_config` starts the next trial in the
        same worker (reuse_actors). Its resources come from the trial's config, so its
        processes are named for it (``ray::TrialTrainable``).
        """

        @classmethod
        def default_resource_request(cls, config: dict[str, Any]):
            return PlacementGroupFactory([{"CPU": config["cpus"], "GPU": config["gpus"]}])

        def setup(self, config: dict[str, Any]) -> None:
            self.run = TrialRun(config)

        def step(self) -> dict[str, Any]:
            return self.run.next_result()

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            self.run.close()
            self.run = TrialRun(new_config)
            return True

        def cleanup(self) -> None:
            self.run.close()

    class _InProcess:
        """Ray pickles the Tuner's parts for its own restore; ours hold the live driver
        (store, Optuna study) and only ever run in this process, so they pickle empty."""

        def __getstate__(self):
            return {}

    class PlanSearcher(_InProcess, Searcher):
        """Hands Ray Tune the driver's plans, one per suggested trial."""

        def __init__(self, driver: Driver, next_plan: Callable[[], TrialPlan | None]) -> None:
            super().__init__()
            self.driver = driver
            self.next_plan = next_plan

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            return True

        def suggest(self, trial_id: str):
            plan = self.next_plan()
            if plan is None:
                return Searcher.FINISHED
            self.driver.plans[trial_id] = plan
            self.driver.count_costs_soon(plan.arch)
            return self.driver.trial_config(plan)

        def on_trial_complete(self, trial_id, result=None, error=False) -> None:
            pass  # the StoreCallback closes trials: it sees pruning, divergence and errors

        def save(self, checkpoint_path: str) -> None:
            pass  # the store and the Optuna study are the checkpoint; resume reads them

        def restore(self, checkpoint_path: str) -> None:
            pass

    class OptunaPruningScheduler(_InProcess, FIFOScheduler):
        """Reports each epoch to Optuna and stops the trial when Optuna's pruner says so."""

        def __init__(self, driver: Driver) -> None:
            super().__init__()
            self.driver = driver

        def on_trial_result(self, tune_controller, trial, result):
            plan = self.driver.plans.get(trial.trial_id)
            if plan is not None and self.driver.should_prune(plan, result):
                plan.pruned = True
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE

    class StoreCallback(_InProcess, tune.Callback):
        """Writes every trial and epoch to the store as it happens, and tells Optuna."""

        def __init__(self, driver: Driver, progress: Callable[[TrialPlan, str], None]) -> None:
            self.driver = driver
            self.progress = progress

        def on_trial_result(self, iteration, trials, trial, result, **info):
            plan = self.driver.plans[trial.trial_id]
            if plan.store_id is None:
                self.driver.start_row(plan, device=result.get("device", ""))
            weights = result.pop(WEIGHTS_KEY, None)  # pop: Ray keeps the last result in memory
            if weights is not None:
                self.driver.store.save_weights(plan.store_id, base64.b64decode(weights))
            curve = result.pop(EXIT_CURVE_KEY, None)
            if curve is not None:
                curve = ExitCurve.from_json(curve)
                self.driver.store.save_exit_curve(plan.store_id, curve.split, [asdict(p) for p in curve.points])
            widths = result.pop(WIDTH_CURVE_KEY, None)
            if widths is not None:
                from nas.training.usnets import WidthCurve

                widths = WidthCurve.from_json(widths)
                self.driver.store.save_width_curve(plan.store_id, [asdict(p) for p in widths.points])
            plan.last = result
            self.driver.store.record_epoch(
                plan.store_id, int(result["epoch"]), train_loss=result["train_loss"], train_acc=result["train_acc"],
                val_acc=result.get("val_acc"), test_acc=result.get("test_acc"),
                epoch_seconds=result["epoch_seconds"], cumulative_seconds=result["cumulative_seconds"],
            )

        def on_trial_complete(self, iteration, trials, trial, **info):
            plan = self.driver.plans[trial.trial_id]
            if plan.store_id is None:  # finished without reporting an epoch
                self.driver.start_row(plan, device="")
            status = "pruned" if plan.pruned else "diverged" if plan.last.get("diverged") else "completed"
            self.driver.store.finish_trial(plan.store_id, status, train_seconds=plan.last.get("cumulative_seconds"))
            self.driver.tell(plan, status)
            self.progress(plan, status)

        def on_trial_error(self, iteration, trials, trial, **info):
            plan = self.driver.plans[trial.trial_id]
            if plan.store_id is None:
                self.driver.start_row(plan, device="")
            error = _read_error(trial)
            self.driver.store.finish_trial(plan.store_id, "failed", error=error)
            self.driver.tell(plan, "failed")
            self.progress(plan, "failed")

    return TrialTrainable, PlanSearcher, OptunaPruningScheduler, StoreCallback


def _read_error(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        if path and os.path.exists(path):
            with open(path) as f:
                return f.read()[-4000:]
    except OSError:
        pass
    return "the trial raised an error (see the Ray logs)"


def run_phase(driver: Driver, next_plan: Callable[[], TrialPlan | None], num_samples: int, *,
              prune: bool, progress: Callable[[TrialPlan, str], None]) -> None:
    """Run up to `num_samples` plans through one Ray Tune Tuner."""
    from ray import tune

    if num_samples <= 0:
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files per trial
    # ...so Ray's end-of-run metrics fetch finds no files: its warning per trial is noise.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    TrialTrainable, PlanSearcher, OptunaPruningScheduler, StoreCallback = _ray_classes()
    res = driver.spec.resources
    storage = tempfile.mkdtemp(prefix="nas-ray-")  # Ray's own bookkeeping; the store is the record
    try:
        tuner = tune.Tuner(
            TrialTrainable,  # its resources: the trial config's cpus and gpus
            tune_config=tune.TuneConfig(
                search_alg=PlanSearcher(driver, next_plan),
                scheduler=OptunaPruningScheduler(driver) if prune else None,
                num_samples=num_samples,
                max_concurrent_trials=res.max_concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                storage_path=storage, name=driver.spec.name.replace(":", "_"),
                failure_config=tune.FailureConfig(max_failures=res.max_failures),
                # no Tune checkpoints: a retried trial starts again; the store keeps results
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                callbacks=[StoreCallback(driver, progress)], verbose=0,
            ),
        )
        tuner.fit()
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def launch(spec: ExperimentSpec, *, store: Store, db_url: str, data_root: str,
           log: Callable[[str], None] = print) -> Driver:
    """Search, then confirm. Safe to call again on the same experiment: it resumes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    driver = Driver(spec, store, db_url, data_root, log=log)
    driver.enqueue_grid()
    target = driver.search_target()
    left = driver.search_trials_left()
    counter = {"n": target - left}
    started = time.perf_counter()

    def progress(plan: TrialPlan, status: str) -> None:
        if plan.phase == "search":
            counter["n"] += 1
            where = f"search {counter['n']:>3}/{target}"
        else:
            where = "confirm"
        last = plan.last
        acc = last.get("val_acc") if last.get("val_acc") is not None else last.get("test_acc")
        acc_text = "   -   " if acc is None else f"{acc:6.2%}"
        epochs = int(last.get("epoch", -1)) + 1
        log(f"[{where}] {plan.arch.short_name():<30} seed {plan.seed:<5} epoch {epochs:>2}/{spec.recipe.epochs}"
            f"  acc {acc_text}  {status:<9} {last.get('cumulative_seconds', 0.0):6.1f} s")

    if left:
        log(f"search: {left} of {target} trials to run ({spec.search.sampler} sampler, "
            f"{spec.search.pruner.kind} pruner)")
        prune = spec.search.pruner.kind != "none"
        run_phase(driver, driver.ask_search, left, prune=prune, progress=progress)
    confirm = driver.confirm_plans()
    if confirm:
        log(f"confirm: {len(confirm)} runs ({spec.confirm.top_k} architectures x {spec.confirm.repeats} seeds)")
        queue = list(confirm)
        run_phase(driver, lambda: queue.pop(0) if queue else None, len(confirm), prune=False, progress=progress)
    driver.keep_best_weights()
    store.finish_experiment(driver.experiment_id, "finished")
    log(f"done in {time.perf_counter() - started:.0f} s")
    return driver
