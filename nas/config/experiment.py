"""Experiment YAML -> validated, frozen spec (`load_experiment`).

One YAML file describes one experiment: the dataset split, the training recipe, the
search space over `ArchConfig` fields (`nas.config.space`), the search (sampler,
objectives, pruner), the confirm phase and the resources of one trial, plus named budgets
that override any of these (``nas launch x.yaml --budget cpu``). The sections come first
(each a config class checked by `nas.config.validate`), then the experiment, then how a
file is read, in the order `load_experiment` does it: YAML, budgets, dataset, recipe,
space, search (objectives, pruner), confirm, resources.

Every check happens in `load_experiment`, before anything runs (and nothing it reads
imports torch): an error names the file, the key path, the rule, the value found and the
fix, e.g. ``search_spaces/x.yaml: space.L1.residual.choice: must not be empty; list at
least one value, e.g. [0, 1].`` A value that came from the chosen budget is named by its
path in the budget (``budgets.cpu.recipe.epochs``). A stored experiment is rebuilt from
its `resolved()` form with `ExperimentSpec.from_resolved`, through the same checks.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import optuna

from nas.config.pruner import PRUNERS, PrunerSpec, parse_pruner  # noqa: F401 - PRUNERS: importers of this module
from nas.config.space import SearchSpace, check_space, grid_size, parse_space
from nas.config.validate import (
    FieldError,
    Rule,
    Source,
    at_least,
    at_most,
    between,
    build,
    check_fields,
    did_you_mean,
    mapping,
    non_negative,
    one_of,
    positive,
    render,
    require,
    setting,
    store_floats,
)
from nas.config.yaml_io import read_yaml
from nas.data.config import DataConfig, is_os_path
from nas.errors import ConfigError, clip, masked_url, shown
from nas.training.recipe import Recipe
from nas.stats import MIN_SEEDS

SAMPLERS = ("tpe", "random", "grid", "nsga2")
# mean_inference_flops: FLOPs per image with early exits at the arch's exit threshold
# (nas.models.exits); the full forward FLOPs for a net without exits.
METRICS = ("val_acc", "test_acc", "train_seconds", "params", "flops", "mean_inference_flops")
DIRECTIONS = ("maximize", "minimize")
DATASETS = ("cifar10",)
SECTIONS = ("name", "dataset", "recipe", "space", "search", "confirm", "resources", "tracking", "budgets")
BUDGET_SECTIONS = ("dataset", "recipe", "space", "search", "confirm", "resources")
_SEED_LIMIT = 2**32  # numpy (and so Optuna's samplers) take seeds below this
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # experiment names: store keys, folders
NAME_LENGTH = 200  # the store's experiments.name column (nas.db.schema: String(200))
# Upper bounds on counts, so a typo (1000000000000) is refused here and not by the store's
# integer columns, Optuna or Ray after the experiment is written.
MAX_TRIALS = 100_000  # architectures in one search (as many as a grid may have points)
MAX_SEEDS = 1_000  # seeds per architecture (search repeats, confirm repeats and max_repeats)
MAX_CPUS = 4_096  # CPU cores (torch threads) one trial may ask for: more than one machine has
MAX_GPUS = 256  # GPUs one trial may ask for

# ----------------------------------------------------------------------------- search, confirm, resources


@dataclass(frozen=True)
class Objective:
    """One thing the search optimises; the first one is what pruning watches."""

    EXAMPLE: ClassVar[str] = "{metric: val_acc, direction: maximize}"  # shown where a mapping is expected

    # val_acc | test_acc | train_seconds | params | flops | mean_inference_flops
    metric: str = setting(rule=one_of(METRICS))
    direction: str = setting(rule=one_of(DIRECTIONS))  # maximize | minimize

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class SearchSettings:
    """How architectures are chosen in the search phase."""

    EXAMPLE: ClassVar[str] = "{sampler: tpe, n_trials: 40}"

    sampler: str = setting("tpe", one_of(SAMPLERS))  # tpe | random | grid | nsga2
    n_trials: int = setting(40, at_least(1) & at_most(MAX_TRIALS))  # architectures tried (grid: the number of grid points)
    seed: int = setting(0, between(0, _SEED_LIMIT - 1))  # sampler seed; trial seeds are derived from it
    repeats: int = setting(1, at_least(1) & at_most(MAX_SEEDS))  # seeds per sampled architecture
    objectives: tuple[Objective, ...] = (Objective("val_acc", "maximize"),)  # what the search optimises, in order
    pruner: PrunerSpec = field(default_factory=PrunerSpec)  # stops poor trials early (nas.search.pruning)

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.objectives:
            raise FieldError("objectives", "objectives must list at least one {metric, direction}, but got none.")
        metrics = [o.metric for o in self.objectives]
        for metric in metrics:
            if metrics.count(metric) > 1:
                raise FieldError("objectives", f"objectives must name each metric once, but {shown(metric)} appears twice.")

    @property
    def directions(self) -> list[str]:
        """For `optuna.create_study(directions=...)`."""
        return [o.direction for o in self.objectives]

    def build_sampler(self) -> optuna.samplers.BaseSampler:
        """The seeded Optuna sampler.

        For grid, the driver enqueues every point of `SearchSpace.grid()` (x repeats) and
        Optuna serves enqueued params first; the random sampler behind them is never
        consulted. (Optuna's GridSampler cannot do conditional spaces, and its
        BruteForceSampler calls `study.stop()`, which only works inside `optimize`.)
        """
        if self.sampler == "tpe":
            # multivariate (group: conditional spaces), a third of the cost (nas.search.history); constant
            # liar: trials running in parallel count as bad, so parallel workers get other architectures
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.TPESampler(seed=self.seed, multivariate=True, group=True, constant_liar=True)
        if self.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=self.seed)
        return optuna.samplers.RandomSampler(seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "n_trials": self.n_trials,
            "seed": self.seed,
            "repeats": self.repeats,
            "objectives": [asdict(o) for o in self.objectives],
            "pruner": self.pruner.to_dict(),
        }


@dataclass(frozen=True)
class ConfirmSettings:
    """The confirm phase: the best architectures re-run on shared seeds, unpruned.

    Round 1 runs `repeats` seeds each. With `until_separated`, it is a race
    (`nas.search.race`): after each round from 3 seeds on, the architectures significantly
    worse than another one still racing are eliminated (every pair tested; the chance of
    any false `worse` over all rounds held at 0.05, `nas.sequential`) and the rest get one
    more seed, until only the leader is left, `max_repeats` seeds are reached or
    `max_seconds` are spent. The defaults are the phase before the race: one round.
    """

    EXAMPLE: ClassVar[str] = "{top_k: 3, repeats: 2, until_separated: true, max_repeats: 8}"

    # architectures re-run (non-dominated first); 0 skips the phase
    top_k: int = setting(3, non_negative("(0 skips the phase)") & at_most(MAX_TRIALS))
    repeats: int = setting(5, at_least(1) & at_most(MAX_SEEDS))  # seeds each in round 1
    until_separated: bool = False  # race: one more seed per round for those not separated from the leader
    # seeds per architecture at most (until_separated only; unused, so unchecked, without it:
    # stored configs from before the race rebuild whatever their repeats)
    max_repeats: int = setting(8, at_least(1) & at_most(MAX_SEEDS))
    # train seconds summed over the confirm trials after which no new round starts
    # (a round once started is finished, so its seeds stay paired); None: no limit
    max_seconds: float | None = setting(None, positive())

    def __post_init__(self) -> None:
        check_fields(self)
        if self.until_separated:
            # the race's first test needs MIN_SEEDS paired seeds; round 1 already runs `repeats`
            least = max(MIN_SEEDS, self.repeats)
            require(self.max_repeats >= least, "max_repeats", self.max_repeats,
                    f"at least {least} when until_separated is true (the race tests from {MIN_SEEDS} paired "
                    f"seeds on, round 1 runs repeats={self.repeats})")
        store_floats(self, "max_seconds")  # YAML `600` and `600.0` are the same budget


@dataclass(frozen=True)
class Resources:
    """What one trial gets, and how many run at once."""

    EXAMPLE: ClassVar[str] = "{gpus_per_trial: 1, max_concurrent: 4}"

    # CPU cores per trial (torch threads); None: every core of the driver's machine
    cpus_per_trial: float | None = setting(None, positive() & at_most(MAX_CPUS))
    gpus_per_trial: float = setting(0.0, non_negative() & at_most(MAX_GPUS))  # GPUs per trial; fractions share a GPU
    max_concurrent: int | None = setting(None, at_least(1) & at_most(MAX_TRIALS))  # trials at once; None: as many as resources allow
    max_failures: int = setting(0, non_negative() & at_most(MAX_SEEDS))  # retries of a crashed trial before it is recorded as failed

    def __post_init__(self) -> None:
        check_fields(self)
        store_floats(self, "cpus_per_trial", "gpus_per_trial")  # YAML `2` and `2.0` are the same request


@dataclass(frozen=True)
class Tracking:
    """Where `nas launch` also writes its results as it goes (besides the store)."""

    EXAMPLE: ClassVar[str] = "{mlflow: sqlite:///mlflow.db}"

    # an MLflow tracking URI (http://host:5000, sqlite:///mlflow.db): the experiment is exported
    # there while it runs (`nas export-mlflow`, in a thread of the driver); None: off
    mlflow: str | None = setting(None, Rule(lambda v: bool(v.strip()), "a tracking URI, not empty",
                                                      "that is not empty (a tracking URI)"))

    def __post_init__(self) -> None:
        check_fields(self)


# ----------------------------------------------------------------------------- the experiment


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment, validated, with the chosen budget applied."""

    name: str  # experiment name in the store
    path: str  # the YAML file (or where a stored spec came from)
    budget: str | None  # the budget applied, if any
    dataset_name: str  # one of DATASETS
    dataset: DataConfig
    recipe: Recipe
    space: SearchSpace
    search: SearchSettings
    confirm: ConfirmSettings
    resources: Resources
    source_text: str  # the YAML as written (stored with the experiment)
    tracking: Tracking = Tracking()

    def resolved(self) -> dict[str, Any]:
        """The whole spec after the budget, as plain JSON-able data for the store."""
        return {
            "name": self.name,
            "budget": self.budget,
            "dataset": {"name": self.dataset_name, **asdict(self.dataset)},
            "recipe": self.recipe.to_dict(),  # slimmable left out when off: older experiments resume
            "space": self.space.to_dict(),
            "search": self.search.to_dict(),
            "confirm": asdict(self.confirm),
            "resources": asdict(self.resources),
            # the URI without its password (the store is read by people the tracking server is not)
            **({"tracking": {"mlflow": masked_url(self.tracking.mlflow)}} if self.tracking.mlflow else {}),
        }

    @classmethod
    def from_resolved(cls, config: dict[str, Any], *, source: str, source_text: str = "") -> ExperimentSpec:
        """The spec that `resolved()` gave `config`, checked as `load_experiment` checks a file.

        Args:
            config: a `resolved()` dict (as stored, after a JSON round trip).
            source: where it came from, the `path` of the spec and the prefix of errors,
                e.g. ``"experiment 'cifar_fast' (stored)"``.
            source_text: the YAML it was first read from (kept as `source_text`).

        Raises:
            ConfigError: `config` is not a valid experiment (naming its key path).
        """
        data = dict(mapping(Source(source), (), config))
        budget = data.pop("budget", None)  # already merged into the sections
        _check_sections(source, data)
        return _from_data(data, Source(source), path=source, budget=budget, text=source_text, base=None)


def load_experiment(path: str | Path, budget: str | None = None) -> ExperimentSpec:
    """Read, merge the budget into, and validate one experiment YAML.

    Args:
        path: the YAML file.
        budget: a name under `budgets:`; its sections are deep-merged over the file's
            (space entries and the pruner are replaced whole).

    Raises:
        ConfigError: the file is unreadable or any value is invalid; the message starts
            with the file and names the key path.
    """
    file = str(path)
    text, data = _read_experiment(file)
    budgets = _parse_budgets(Source(file), data.get("budgets"))
    src = Source(file)
    if budget is not None:
        if budget not in budgets:
            available = clip(", ".join(budgets), 200) or "none are defined"
            raise src.error(("budgets", budget), f"no such budget; available budgets: {available}."
                                                 f"{did_you_mean(budget, tuple(budgets))}")
        data = _merge(data, budgets[budget])
        src = Source(file, budget, budgets[budget])
    data.setdefault("name", Path(file).stem)
    # a relative data root is relative to the YAML file, not to where nas runs
    return _from_data(data, src, path=file, budget=budget, text=text, base=Path(file).resolve().parent)


def list_budgets(path: str | Path) -> list[str]:
    """The budget names of an experiment YAML, in the order written."""
    file = str(path)
    _, data = _read_experiment(file)
    return list(_parse_budgets(Source(file), data.get("budgets")))


def name_problem(name: Any) -> str | None:
    """What is wrong with an experiment name (a store key and a folder name), or None."""
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        return f"must be letters, digits, '_', '.' or '-', starting with a letter or digit, but got {shown(name)}"
    if len(name) > NAME_LENGTH:
        return f"must be at most {NAME_LENGTH} characters (the store's column), but has {len(name)}"
    return None


def _from_data(
    data: dict[str, Any], src: Source, *, path: str, budget: str | None, text: str, base: Path | None
) -> ExperimentSpec:
    """Check every section of `data` (the budget already merged) and build the spec."""
    name = data.get("name")
    if (problem := name_problem(name)) is not None:
        raise src.error(("name",), f"{problem}; set `name:` to such a string.")
    if "space" not in data:
        raise src.error(
            ("space",), "missing; list the architecture keys to search, e.g. `L1.residual: {choice: [0, 1]}`."
        )
    dataset_name, dataset = _parse_dataset(src, data.get("dataset"), base)
    recipe = build(Recipe, data.get("recipe"), src, ("recipe",))
    space = parse_space(src, data["space"])
    search = _parse_search(src, data.get("search"), space)
    check_space(space, src, every_point=search.sampler == "grid", slimmable=recipe.slimmable is not None)
    _check_ghost_batch(src, space, recipe.batch_size)
    confirm = build(ConfirmSettings, data.get("confirm"), src, ("confirm",))
    resources = build(Resources, data.get("resources"), src, ("resources",))
    tracking = build(Tracking, data.get("tracking"), src, ("tracking",))
    return ExperimentSpec(
        name=name, path=path, budget=budget, dataset_name=dataset_name, dataset=dataset, recipe=recipe,
        space=space, search=search, confirm=confirm, resources=resources, source_text=text, tracking=tracking,
    )


# ----------------------------------------------------------------------------- the file, budgets, dataset


def _read_experiment(file: str) -> tuple[str, dict[str, Any]]:
    """The text and the top-level mapping of an experiment file, its sections checked by name."""
    text, data = read_yaml(file, what="experiment file")
    _check_sections(file, data)
    return text, data


def _check_sections(file: str, data: Any) -> None:
    file = clip(file)  # a file name is echoed, at most a line of it
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(
            f"{file}: the top level must be a mapping with keys such as space, search, recipe,"
            f" but got {found}."
        )
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(
                f"{file}: {clip(key)}: unknown top-level key; allowed keys are {', '.join(SECTIONS)}."
                f"{did_you_mean(key, SECTIONS)}"
            )


def _parse_budgets(src: Source, value: Any) -> dict[str, dict[str, Any]]:
    budgets = mapping(src, ("budgets",), value)
    for name, override in budgets.items():
        if not isinstance(name, str):
            raise src.error(("budgets", str(name)), "budget names must be strings; quote it.")
        if not isinstance(override, dict):
            raise src.error(
                ("budgets", name), f"expected a mapping of sections to override, but got {shown(override)}."
            )
        for section, part in override.items():
            if section not in BUDGET_SECTIONS:
                raise src.error(
                    ("budgets", name, section),
                    f"a budget cannot override this; it may override {', '.join(BUDGET_SECTIONS)}."
                    f"{did_you_mean(section, BUDGET_SECTIONS)}",
                )
            if not isinstance(part, dict):
                raise src.error(("budgets", name, section), f"expected a mapping, but got {shown(part)}.")
    return budgets


def _merge(base: dict[str, Any], override: dict[str, Any], path: tuple = ()) -> dict[str, Any]:
    """Deep merge; space entries and the pruner are replaced whole (two kinds never mix)."""
    out = dict(base)
    for key, value in override.items():
        here = path + (key,)
        whole = here == ("search", "pruner") or (len(here) == 2 and here[0] == "space")
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not whole:
            out[key] = _merge(out[key], value, here)
        else:
            out[key] = value
    return out


def _check_ghost_batch(src: Source, space: SearchSpace, batch_size: int) -> None:
    """Every ghost batch norm size the space can give divides the recipe's batch (Page post 6)."""
    for param in space.params:
        if param.key == "tricks.ghost_batch" and param.is_enumerable() and param.count() <= 100_000:
            bad = [v for v in param.values() if isinstance(v, int) and v and batch_size % v]
            if bad:
                raise src.error(("space", param.key), f"ghost batch {bad[0]} does not divide recipe.batch_size="
                                f"{batch_size}; give virtual batch sizes that divide it (or 0, off).")


def _parse_dataset(src: Source, value: Any, base: Path | None) -> tuple[str, DataConfig]:
    """The dataset's name and its DataConfig; a relative root is taken relative to `base`."""
    path = ("dataset",)
    data = dict(mapping(src, path, value, DataConfig.EXAMPLE))
    name = data.pop("name", "cifar10")
    if name not in DATASETS:
        raise src.error(
            path + ("name",), f"only {', '.join(DATASETS)} is supported, but got {shown(name)}; write name: cifar10."
        )
    root = data.get("root")
    if base is not None and isinstance(root, str) and is_os_path(root):  # else DataConfig names it
        data["root"] = str(base / Path(root).expanduser())
    return name, build(DataConfig, data, src, path)


# ----------------------------------------------------------------------------- the search section


def _parse_search(src: Source, value: Any, space: SearchSpace) -> SearchSettings:
    path = ("search",)
    data = mapping(src, path, value, SearchSettings.EXAMPLE)
    parsed: dict[str, Any] = {}
    if "pruner" in data:
        parsed["pruner"] = parse_pruner(src, path + ("pruner",), data["pruner"])
    if data.get("sampler") == "grid":
        parsed["n_trials"] = grid_size(src, space)  # n_trials is ignored: every point runs
    settings = build(SearchSettings, data, src, path, **parsed)
    for i, objective in enumerate(settings.objectives):
        if objective.metric == "test_acc":
            warnings.warn(
                f"{src.file}: {render(path + ('objectives', i, 'metric'))}: selecting on test_acc "
                "leaks the test set into the search; select on val_acc and report test_acc.",
                UserWarning,
                stacklevel=4,  # the caller of load_experiment
            )
    return settings
