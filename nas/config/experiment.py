"""Experiment YAML -> validated, frozen spec -> architectures sampled by Optuna.

One YAML file describes one experiment: the dataset split, the training recipe, the
search space over `ArchConfig` fields, the search (sampler, objectives, pruner), the
confirm phase and the resources of one trial, plus named budgets that override any of
these (``nas launch x.yaml --budget cpu``). The public types come first (the space and
how it samples and enumerates, the other sections, the experiment and `load_experiment`),
then how a file is read and checked, in the order `load_experiment` does it: YAML, budgets,
dataset, space (entries, conditions, dependency order), search (objectives, pruner).

Every check happens in `load_experiment`, before anything runs: an error names the file,
the key path, the rule, the value found and the fix, e.g.
``search_spaces/x.yaml: space.L1.residual.choice: must not be empty; list at least one
value, e.g. [0, 1].`` A value that came from the chosen budget is named by its path in
the budget (``budgets.cpu.recipe.epochs``). Conditions (``when``) are data, never code.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
import types
import typing
import warnings
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import optuna
import yaml

from nas.errors import ConfigError
from nas.models.arch import ArchConfig
from nas.training.recipe import Recipe

KINDS = ("choice", "int", "float", "fixed")  # the kinds of a space entry
SAMPLERS = ("tpe", "random", "grid", "nsga2")
# mean_inference_flops: FLOPs per image with early exits at the arch's exit threshold
# (nas.models.exits); the full forward FLOPs for a net without exits.
METRICS = ("val_acc", "test_acc", "train_seconds", "params", "flops", "mean_inference_flops")
DIRECTIONS = ("maximize", "minimize")
DATASETS = ("cifar10",)
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "patient": optuna.pruners.PatientPruner,  # wraps another pruner, given as `wrapped`
}
SECTIONS = ("name", "dataset", "recipe", "space", "search", "confirm", "resources", "budgets")
BUDGET_SECTIONS = ("dataset", "recipe", "space", "search", "confirm", "resources")
MAX_GRID_POINTS = 100_000  # a grid larger than this is a mistake, not a plan
_SEED_LIMIT = 2**32  # numpy (and so Optuna's samplers) take seeds below this
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # experiment names: store keys, folders
_ENTRY_OPTIONS = {  # what an entry may hold besides its kind
    "choice": {"when"},
    "int": {"step", "log", "when"},
    "float": {"step", "log", "when"},
    "fixed": {"when"},
}
_PRUNER_EXAMPLES = {"percentile": "percentile: 25", "patience": "patience: 2"}  # required options

# ----------------------------------------------------------------------------- the space


ARCH_KEYS: tuple[str, ...] = tuple(ArchConfig().to_flat())  # what a space entry may name
_TUPLE_KEYS = frozenset(k for k, v in ArchConfig().to_flat().items() if isinstance(v, tuple))  # exits.stages, ...


@dataclass(frozen=True)
class Param:
    """One space entry: a dotted `ArchConfig` key and the values it may take."""

    key: str  # dotted ArchConfig key, e.g. "L1.residual"; also the Optuna parameter name
    kind: str  # choice | int | float | fixed
    choices: tuple = ()  # choice: the values, in the order written
    low: float | int | None = None  # int, float: smallest value (inclusive)
    high: float | int | None = None  # int, float: largest value (inclusive)
    step: float | int | None = None  # int: spacing (1 by default); float: spacing or None (continuous)
    log: bool = False  # int, float: sample on a log scale
    value: Any = None  # fixed: the value
    when: tuple[tuple[str, tuple], ...] = ()  # active only if every named key has one of its values

    def is_active(self, assignment: dict[str, Any]) -> bool:
        """Whether every condition holds; a key absent from `assignment` (inactive) fails it."""
        return all(target in assignment and assignment[target] in values for target, values in self.when)

    def is_enumerable(self) -> bool:
        return self.kind != "float" or self.step is not None

    def values(self) -> tuple:
        """Every value, in order (choice as written, ranges ascending)."""
        if self.kind == "choice":
            return self.choices
        if self.kind == "fixed":
            return (self.value,)
        if self.kind == "int":
            return tuple(range(self.low, self.high + 1, self.step))
        if self.step is None:
            raise ConfigError(
                f"space.{self.key}.float: a continuous range cannot be enumerated; "
                "give a step or use a choice."
            )
        count = round((self.high - self.low) / self.step) + 1
        # rounded: 0.1 * 3 is 0.30000000000000004
        return tuple(round(self.low + i * self.step, 12) for i in range(count))

    def contains(self, value: Any) -> bool:
        """Whether `value` is one this entry can give."""
        if self.kind == "choice":
            return value in self.choices
        if self.kind == "fixed":
            return value == self.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int":
            on_step = isinstance(value, int) and (value - self.low) % self.step == 0
            return on_step and self.low <= value <= self.high
        if not self.low <= value <= self.high:
            return False
        return self.step is None or _is_whole((value - self.low) / self.step)

    def suggest(self, trial: optuna.trial.BaseTrial) -> Any:
        """Ask `trial` for this entry's value (fixed entries are not Optuna parameters)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step, log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        return self.value

    def to_dict(self) -> dict[str, Any]:
        """The entry as it would be written in YAML (defaults left out)."""
        if self.kind == "choice":
            out: dict[str, Any] = {"choice": list(self.choices)}
        elif self.kind == "fixed":
            out = {"fixed": self.value}
        else:
            out = {self.kind: [self.low, self.high]}
            if self.step is not None and not (self.kind == "int" and self.step == 1):
                out["step"] = self.step
            if self.log:
                out["log"] = True
        if self.when:
            out["when"] = {target: list(values) for target, values in self.when}
        return out


@dataclass(frozen=True)
class SearchSpace:
    """The entries of one experiment, in dependency order (a condition's target first)."""

    params: tuple[Param, ...]

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<space>") -> SearchSpace:
        """Validate the `space` section of an experiment (a mapping of dotted keys to entries)."""
        return _parse_space(_Source(source), data)

    def suggest(self, trial: optuna.trial.BaseTrial) -> ArchConfig:
        """Sample an architecture: `trial.suggest_*` for each active, non-fixed entry."""
        assignment: dict[str, Any] = {}
        for param in self.params:
            if param.is_active(assignment):
                assignment[param.key] = param.suggest(trial)
        return _to_arch(assignment)

    def grid(self) -> list[dict[str, Any]]:
        """Every point of the space as the flat params dict Optuna would hold (no fixed keys).

        Points are in a fixed order: entries in dependency order, the last varying fastest,
        values as `Param.values` gives them. Inactive entries are absent from a point.
        """
        suggested = {p.key for p in self.params if p.kind != "fixed"}
        return [{k: v for k, v in point.items() if k in suggested} for point in self._assignments()]

    def arch_from_params(self, params: dict[str, Any]) -> ArchConfig:
        """Flat Optuna params (fixed keys optional) -> the architecture they describe.

        Values of entries that are inactive under `params` are ignored, as Optuna would
        not have suggested them.
        """
        by_key = {p.key: p for p in self.params}
        unknown = sorted(set(params) - set(by_key))
        if unknown:
            raise ConfigError(
                f"params.{unknown[0]}: not a key of this space; keys are {', '.join(by_key)}."
            )
        assignment: dict[str, Any] = {}
        for param in self.params:
            if not param.is_active(assignment):
                continue
            if param.kind != "fixed" and param.key not in params:
                raise ConfigError(f"params.{param.key}: missing; the space needs a value for it here.")
            value = params.get(param.key, param.value)
            if not param.contains(value):
                raise ConfigError(
                    f"params.{param.key}: {value!r} is not a value of this space entry ({param.to_dict()})."
                )
            assignment[param.key] = value
        return _to_arch(assignment)

    def check_buildable(self, source: str, *, every_point: bool = False) -> None:
        """Raise ConfigError unless every single value gives a valid `ArchConfig`.

        Each value (each choice, the ends of a range, the fixed value) is tried alone, with
        every other field at its default. With `every_point`, every point of the grid is
        built too (for grid searches, where each point will run).

        Args:
            source: the file the space came from, the prefix of error messages.
            every_point: also build every point of `grid()`.
        """
        _check_buildable(self, _Source(source), every_point=every_point)

    def to_dict(self) -> dict[str, Any]:
        return {p.key: p.to_dict() for p in self.params}

    def _assignments(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Every point with fixed values included; ConfigError past `limit` points."""
        points: list[dict[str, Any]] = [{}]
        for param in self.params:
            grown: list[dict[str, Any]] = []
            for point in points:
                if not param.is_active(point):
                    grown.append(point)
                    continue
                grown.extend({**point, param.key: value} for value in param.values())
                if limit is not None and len(grown) > limit:
                    raise ConfigError(
                        f"space: the grid has more than {limit} points; narrow the space or use "
                        "the tpe or random sampler."
                    )
            points = grown
        return points


def _to_arch(assignment: dict[str, Any]) -> ArchConfig:
    """{"width": 0.5, "L1.residual": 1} -> ArchConfig(width=0.5, L1=StageConfig(residual=1))."""
    return ArchConfig.from_flat(assignment, source="arch")


def _is_whole(x: float) -> bool:
    return abs(x - round(x)) < 1e-9 * max(1.0, abs(x))


# ----------------------------------------------------------------------------- search, confirm, resources


def _check_among(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{name} must be one of {', '.join(allowed)}, but got {value!r}.{_did_you_mean(value, allowed)}"
        )


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ConfigError(f"{name} must be an integer {bounds}, but got {value!r}.")


@dataclass(frozen=True)
class Objective:
    """One thing the search optimises; the first one is what pruning watches."""

    metric: str  # val_acc | test_acc | train_seconds | params | flops | mean_inference_flops
    direction: str  # maximize | minimize

    def __post_init__(self) -> None:
        _check_among("metric", self.metric, METRICS)
        _check_among("direction", self.direction, DIRECTIONS)


@dataclass(frozen=True)
class PrunerSpec:
    """An Optuna pruner by name, with keyword arguments of its constructor."""

    kind: str = "median"  # none | median | percentile | successive_halving | hyperband | patient
    options: tuple[tuple[str, Any], ...] = ()  # constructor keyword arguments, sorted by name
    wrapped: PrunerSpec | None = None  # patient only: the pruner it wraps (None: patience alone)

    def __post_init__(self) -> None:
        _check_among("kind", self.kind, tuple(PRUNERS))
        if self.wrapped is not None and self.kind != "patient":
            raise ConfigError(f"wrapped is only for kind patient, but kind is {self.kind!r}.")
        try:
            self.build()  # Optuna's own constructor checks (ranges, required arguments)
        except (TypeError, ValueError) as err:
            name = PRUNERS[self.kind].__name__
            raise ConfigError(f"options: {name} rejects {dict(self.options)}: {err}") from None

    def build(self) -> optuna.pruners.BasePruner:
        cls = PRUNERS[self.kind]
        with warnings.catch_warnings():  # PatientPruner is experimental; its options are checked here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.kind == "patient":
                wrapped = self.wrapped.build() if self.wrapped is not None else None
                return cls(wrapped, **dict(self.options))
            return cls(**dict(self.options))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, **dict(self.options)}
        if self.wrapped is not None:
            out["wrapped"] = self.wrapped.to_dict()
        return out


@dataclass(frozen=True)
class SearchSettings:
    """How architectures are chosen in the search phase."""

    sampler: str = "tpe"  # tpe | random | grid | nsga2
    n_trials: int = 40  # architectures tried (grid: the number of grid points)
    seed: int = 0  # sampler seed; trial seeds are derived from it
    repeats: int = 1  # seeds per sampled architecture
    objectives: tuple[Objective, ...] = (Objective("val_acc", "maximize"),)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)

    def __post_init__(self) -> None:
        _check_among("sampler", self.sampler, SAMPLERS)
        _check_int("n_trials", self.n_trials, 1)
        _check_int("seed", self.seed, 0, _SEED_LIMIT - 1)
        _check_int("repeats", self.repeats, 1)
        if not self.objectives:
            raise ConfigError("objectives must list at least one {metric, direction}, but got none.")
        metrics = [o.metric for o in self.objectives]
        for metric in metrics:
            if metrics.count(metric) > 1:
                raise ConfigError(f"objectives must name each metric once, but {metric!r} appears twice.")

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
            return optuna.samplers.TPESampler(seed=self.seed)
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
    """The confirm phase: the best architectures re-run with several seeds, unpruned."""

    top_k: int = 3  # architectures re-run (non-dominated first); 0 skips the phase
    repeats: int = 5  # seeds each

    def __post_init__(self) -> None:
        _check_int("top_k", self.top_k, 0)
        _check_int("repeats", self.repeats, 1)


@dataclass(frozen=True)
class Resources:
    """What one trial gets, and how many run at once."""

    cpus_per_trial: float | None = None  # CPU cores per trial (torch threads); None: every core of the driver's machine
    gpus_per_trial: float = 0.0  # GPUs per trial; fractions share a GPU
    max_concurrent: int | None = None  # trials at once; None: as many as resources allow
    max_failures: int = 0  # retries of a crashed trial before it is recorded as failed

    def __post_init__(self) -> None:
        if self.cpus_per_trial is not None and not self.cpus_per_trial > 0:
            raise ConfigError(f"cpus_per_trial must be positive, but got {self.cpus_per_trial!r}.")
        if not self.gpus_per_trial >= 0:
            raise ConfigError(f"gpus_per_trial must be >= 0, but got {self.gpus_per_trial!r}.")
        if self.max_concurrent is not None:
            _check_int("max_concurrent", self.max_concurrent, 1)
        _check_int("max_failures", self.max_failures, 0)
        # YAML `2` and `2.0` are the same request: store floats
        if self.cpus_per_trial is not None:
            object.__setattr__(self, "cpus_per_trial", float(self.cpus_per_trial))
        object.__setattr__(self, "gpus_per_trial", float(self.gpus_per_trial))


# ----------------------------------------------------------------------------- the experiment


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment, validated, with the chosen budget applied."""

    name: str  # experiment name in the store
    path: str  # the YAML file
    budget: str | None  # the budget applied, if any
    dataset: dict[str, Any]  # "name" plus every nas.data.config.DataConfig field
    recipe: Recipe
    space: SearchSpace
    search: SearchSettings
    confirm: ConfirmSettings
    resources: Resources
    source_text: str  # the YAML as written (stored with the experiment)

    def data_config(self):
        """The dataset section as a `nas.data.config.DataConfig`."""
        from nas.data.config import DataConfig

        return DataConfig(**{k: v for k, v in self.dataset.items() if k != "name"})

    def resolved(self) -> dict[str, Any]:
        """The whole spec after the budget, as plain JSON-able data for the store."""
        return {
            "name": self.name,
            "budget": self.budget,
            "dataset": dict(self.dataset),
            "recipe": self.recipe.to_dict(),  # slimmable left out when off: older experiments resume
            "space": self.space.to_dict(),
            "search": self.search.to_dict(),
            "confirm": asdict(self.confirm),
            "resources": asdict(self.resources),
        }


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
    text, data = _read_yaml(file)
    budgets = _parse_budgets(_Source(file), data.get("budgets"))
    src = _Source(file)
    if budget is not None:
        if budget not in budgets:
            available = ", ".join(budgets) or "none are defined"
            raise ConfigError(
                f"{file}: budgets.{budget}: no such budget; available budgets: {available}."
                f"{_did_you_mean(budget, tuple(budgets))}"
            )
        data = _merge(data, budgets[budget])
        src = _Source(file, budget, budgets[budget])

    name = data.get("name", Path(file).stem)
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise src.error(
            ("name",),
            f"must be letters, digits, '_', '.' or '-', starting with a letter or digit, but got {name!r};"
            " set `name:` to such a string.",
        )
    if "space" not in data:
        raise src.error(
            ("space",), "missing; list the architecture keys to search, e.g. `L1.residual: {choice: [0, 1]}`."
        )

    dataset = _parse_dataset(src, data.get("dataset"))
    recipe = _build_section(src, ("recipe",), Recipe, data.get("recipe"))
    space = _parse_space(src, data["space"])
    search = _parse_search(src, data.get("search"), space)
    _check_buildable(space, src, every_point=search.sampler == "grid")
    if recipe.slimmable is not None:
        _check_slimmable(space, src)
    confirm = _build_section(src, ("confirm",), ConfirmSettings, data.get("confirm"))
    resources = _build_section(src, ("resources",), Resources, data.get("resources"))
    return ExperimentSpec(
        name=name, path=file, budget=budget, dataset=dataset, recipe=recipe, space=space,
        search=search, confirm=confirm, resources=resources, source_text=text,
    )


def list_budgets(path: str | Path) -> list[str]:
    """The budget names of an experiment YAML, in the order written."""
    file = str(path)
    _, data = _read_yaml(file)
    return list(_parse_budgets(_Source(file), data.get("budgets")))


# ----------------------------------------------------------------------------- reading YAML


class _Loader(yaml.SafeLoader):
    """Safe YAML that rejects duplicate keys and reads 1e-3 as a float (YAML 1.2 does)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            continue  # construct_mapping reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}, also on line {seen[key]}", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_implicit_resolver(  # PyYAML alone reads 1e-3 and 1.0e3 as strings
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_yaml(file: str) -> tuple[str, dict[str, Any]]:
    """The text and the top-level mapping of an experiment file, its sections checked by name."""
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{file}: cannot read the experiment file ({err}).") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and context_mark is not None:
            problem += f" ({context} that starts on line {context_mark.line + 1})"
        raise ConfigError(f"{file}: {where}invalid YAML: {problem}. Fix the YAML there.") from None
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(
            f"{file}: the top level must be a mapping with keys such as space, search, recipe,"
            f" but got {found}."
        )
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(
                f"{file}: {key}: unknown top-level key; allowed keys are {', '.join(SECTIONS)}."
                f"{_did_you_mean(key, SECTIONS)}"
            )
    return text, data


# ----------------------------------------------------------------------------- errors with key paths


@dataclass(frozen=True)
class _Source:
    """Where values came from, so an error names the file and the key path."""

    file: str
    budget: str | None = None
    override: Any = None  # the budget's mapping: values found in it are named by their path there

    def error(self, path: Sequence[str | int], message: str) -> ConfigError:
        where = _render(path)
        if self.budget is not None and _reaches(self.override, path):
            where = f"budgets.{self.budget}.{where}"
        return ConfigError(f"{self.file}: {where}: {message}")


def _render(path: Sequence[str | int]) -> str:
    """("search", "objectives", 0, "metric") -> "search.objectives[0].metric"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _reaches(override: Any, path: Sequence[str | int]) -> bool:
    """Whether the value at `path` came from `override` (set there, or inside a value set there)."""
    node = override
    for part in path:
        if not isinstance(node, dict):
            return True  # `override` replaced this whole value
        if part not in node:
            return False
        node = node[part]
    return True


def _did_you_mean(value: Any, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(value), list(allowed), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _mapping(src: _Source, path: tuple, value: Any) -> dict[str, Any]:
    """A section's mapping; null or absent is an empty one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise src.error(path, f"expected a mapping of keys to values, but got {value!r}.")
    return value


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a field type; types other than int/float/bool/str/None pass."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _type_words(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_words(h) for h in typing.get_args(hint))
    words = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return words.get(hint, getattr(hint, "__name__", str(hint)))


def _build_section(src: _Source, path: tuple, cls: type, value: Any, **parsed: Any) -> Any:
    """Check a section's keys and value types against dataclass `cls`, then build it.

    `parsed` holds fields already turned into objects (nested sections); the dataclass
    checks ranges, and its messages start with the field name, which becomes the key path.
    """
    data = _mapping(src, path, value)
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in fields(cls) if f.init]
    for key, item in data.items():
        if key not in allowed:
            raise src.error(
                path + (key,),
                f"unknown key; allowed keys are {', '.join(allowed)}.{_did_you_mean(key, allowed)}",
            )
        if key not in parsed and not _type_ok(item, hints[key]):
            raise src.error(path + (key,), f"must be {_type_words(hints[key])}, but got {item!r}.")
    try:
        return cls(**{**data, **parsed})
    except ConfigError as err:
        message = str(err)
        culprit = next((name for name in allowed if message.startswith(f"{name} ")), None)
        raise src.error(path + ((culprit,) if culprit else ()), message) from None


# ----------------------------------------------------------------------------- budgets, dataset


def _parse_budgets(src: _Source, value: Any) -> dict[str, dict[str, Any]]:
    budgets = _mapping(src, ("budgets",), value)
    for name, override in budgets.items():
        if not isinstance(name, str):
            raise src.error(("budgets", str(name)), "budget names must be strings; quote it.")
        if not isinstance(override, dict):
            raise src.error(
                ("budgets", name), f"expected a mapping of sections to override, but got {override!r}."
            )
        for section, part in override.items():
            if section not in BUDGET_SECTIONS:
                raise src.error(
                    ("budgets", name, section),
                    f"a budget cannot override this; it may override {', '.join(BUDGET_SECTIONS)}."
                    f"{_did_you_mean(section, BUDGET_SECTIONS)}",
                )
            if not isinstance(part, dict):
                raise src.error(("budgets", name, section), f"expected a mapping, but got {part!r}.")
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


def _parse_dataset(src: _Source, value: Any) -> dict[str, Any]:
    path = ("dataset",)
    data = dict(_mapping(src, path, value))
    name = data.pop("name", "cifar10")
    if name not in DATASETS:
        raise src.error(
            path + ("name",), f"only {', '.join(DATASETS)} is supported, but got {name!r}; write name: cifar10."
        )
    root = data.get("root")
    if isinstance(root, str) and root:  # relative to the YAML file, not to where nas runs
        data["root"] = str(Path(src.file).resolve().parent / Path(root).expanduser())
    try:
        from nas.data.config import DataConfig
    except ImportError:  # nas.data absent: check the keys only
        allowed = ("root", "train_subset", "val_size", "split_seed", "crop_padding", "flip", "cutout")
        for key in data:
            if key not in allowed:
                raise src.error(path + (key,), f"unknown key; allowed keys are name, {', '.join(allowed)}.")
        return {"name": name, **data}
    config = _build_section(src, path, DataConfig, data)
    return {"name": name, **asdict(config)}


# ----------------------------------------------------------------------------- the space section


def _parse_space(src: _Source, value: Any) -> SearchSpace:
    path = ("space",)
    if not isinstance(value, dict) or not value:
        raise src.error(path, f"expected a non-empty mapping of architecture keys to entries, but got {value!r}.")
    entries = {}
    for key, entry in value.items():
        if key not in ARCH_KEYS:
            raise src.error(
                path + (str(key),),
                f"not an architecture field; fields are {', '.join(ARCH_KEYS)}.{_did_you_mean(key, ARCH_KEYS)}",
            )
        entries[key] = _parse_entry(src, path + (key,), entry)
    params = {
        key: _with_conditions(src, path + (key,), param, value[key], entries)
        for key, param in entries.items()
    }
    return SearchSpace(tuple(_dependency_order(src, params)))


def _parse_entry(src: _Source, path: tuple, entry: Any) -> Param:
    """One entry without its conditions (they need the whole space)."""
    key = path[-1]
    if not isinstance(entry, dict):
        raise src.error(
            path, f"expected an entry such as {{choice: [0, 1]}} or {{fixed: {entry!r}}}, but got {entry!r}."
        )
    kinds = [k for k in KINDS if k in entry]
    if len(kinds) != 1:
        found = f"{len(kinds)} ({', '.join(kinds)})" if kinds else "none"
        raise src.error(path, f"give exactly one of {', '.join(KINDS)}, but found {found}; keep one.")
    kind = kinds[0]
    allowed = sorted({kind} | _ENTRY_OPTIONS[kind])
    for option in entry:
        if option not in allowed:
            raise src.error(
                path + (str(option),),
                f"not an option of a {kind} entry; allowed: {', '.join(allowed)}.{_did_you_mean(option, allowed)}",
            )
    here = path + (kind,)
    if kind == "fixed":
        return Param(key, kind, value=_scalar(src, here, _as_scalar(key, entry["fixed"])))
    if kind == "choice":
        choices = entry["choice"]
        if not isinstance(choices, list):
            raise src.error(here, f"expected a list of values such as [0, 1], but got {choices!r}.")
        choices = [_as_scalar(key, choice) for choice in choices]
        if not choices:
            raise src.error(here, "must not be empty; list at least one value, e.g. [0, 1].")
        for i, choice in enumerate(choices):
            _scalar(src, here + (i,), choice)
            if choice in choices[:i]:
                raise src.error(here, f"lists {choice!r} more than once in {choices}; each value may appear once.")
        return Param(key, kind, choices=tuple(choices))
    return _parse_range(src, path, kind, entry)


def _parse_range(src: _Source, path: tuple, kind: str, entry: dict[str, Any]) -> Param:
    """An int or float entry: [low, high], step, log, checked as Optuna would."""
    key, here = path[-1], path + (kind,)
    number = int if kind == "int" else float
    bounds = entry[kind]
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(_type_ok(b, number) for b in bounds)):
        raise src.error(here, f"expected [low, high] with {_type_words(number)} values, but got {bounds!r}.")
    low, high = bounds if kind == "int" else (float(bounds[0]), float(bounds[1]))
    if low > high:
        raise src.error(here, f"low must be <= high, but got [{low}, {high}]; write [{high}, {low}].")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise src.error(path + ("log",), f"must be true or false, but got {log!r}.")
    step = entry.get("step", 1 if kind == "int" else None)
    if step is not None and (not _type_ok(step, number) or step <= 0):
        words = "integer" if kind == "int" else "number"
        raise src.error(path + ("step",), f"must be a positive {words}, but got {step!r}.")
    if log and low <= 0:
        raise src.error(here, f"a log scale needs low > 0, but got low={low}; raise low or set log: false.")
    if log and "step" in entry and not (kind == "int" and step == 1):
        raise src.error(
            path + ("step",), f"a log scale cannot have a step (Optuna forbids it), but got step={step}; remove one."
        )
    if step is not None and not _is_whole((high - low) / step):
        raise src.error(
            path + ("step",),
            f"high - low must be a multiple of step, but got [{low}, {high}] with step {step}; adjust high.",
        )
    if kind == "float" and step is not None:
        step = float(step)
    return Param(key, kind, low=low, high=high, step=step, log=log)


def _as_scalar(key: str, value: Any) -> Any:
    """A YAML list given for a tuple-valued field (``exits.stages: [L1, L2]``) as the
    "+"-joined string that field also reads (``"L1+L2"``; ``[]`` is ``""``): Optuna's
    categorical choices must be scalars. Anything else unchanged."""
    if key in _TUPLE_KEYS and isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return "+".join(str(v) for v in value)
    return value


def _scalar(src: _Source, path: tuple, value: Any) -> Any:
    """A value Optuna can store as a categorical choice: number, string, bool or null."""
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise src.error(path, f"must be a single value (number, string, true/false or null), but got {value!r}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise src.error(path, f"must be finite, but got {value!r}.")
    return value


def _with_conditions(
    src: _Source, path: tuple, param: Param, entry: dict[str, Any], entries: dict[str, Param]
) -> Param:
    """`param` with its `when` conditions, each checked against the entry it names."""
    if "when" not in entry:
        return param
    here = path + ("when",)
    when = entry["when"]
    if not isinstance(when, dict) or not when:
        raise src.error(here, f"expected a mapping such as {{L1.residual: [1]}}, but got {when!r}.")
    conditions = []
    for target, values in when.items():
        where = here + (str(target),)
        if target == param.key:
            raise src.error(where, "an entry cannot depend on itself; remove this condition.")
        if target not in entries:
            raise src.error(
                where,
                f"not a key of the space; a condition may only name keys listed under space "
                f"({', '.join(entries)}).{_did_you_mean(target, tuple(entries))}",
            )
        if not isinstance(values, list) or not values:
            raise src.error(where, f"expected a non-empty list of values such as [1], but got {values!r}.")
        values = [_as_scalar(target, value) for value in values]
        for value in values:
            if not entries[target].contains(value):
                raise src.error(
                    where,
                    f"{value!r} is not a possible value of {target} ({entries[target].to_dict()}); "
                    "list values the entry can take.",
                )
        conditions.append((target, tuple(values)))
    return replace(param, when=tuple(conditions))


def _dependency_order(src: _Source, params: dict[str, Param]) -> Iterator[Param]:
    """The entries with each condition's targets first, else in the order written; no cycles."""
    done: set[str] = set()
    visiting: list[str] = []

    def visit(key: str) -> Iterator[Param]:
        if key in done:
            return
        if key in visiting:
            cycle = " -> ".join([*visiting[visiting.index(key):], key])
            raise src.error(
                ("space", visiting[-1], "when", key),
                f"conditions form a cycle ({cycle}); an entry cannot depend, even indirectly, on itself.",
            )
        visiting.append(key)
        for target, _ in params[key].when:
            yield from visit(target)
        visiting.pop()
        done.add(key)
        yield params[key]

    for key in params:
        yield from visit(key)


def _check_buildable(space: SearchSpace, src: _Source, *, every_point: bool) -> None:
    """Each value alone (others at their default) and, with `every_point`, each grid point
    must give a valid ArchConfig."""
    for param in space.params:
        ends = (param.low, param.high) if param.kind in ("int", "float") else param.values()
        for value in ends:
            try:
                _to_arch({param.key: value})
            except ConfigError as err:
                raise src.error(
                    ("space", param.key, param.kind),
                    f"{value!r} does not give a valid architecture ({err}); use values the architecture accepts.",
                ) from None
    if every_point:
        for point in space._assignments():
            try:
                _to_arch(point)
            except ConfigError as err:
                raise src.error(
                    ("space",),
                    f"the grid point {point} is not a valid architecture ({err}); narrow the space "
                    "or add a `when` condition that excludes it.",
                ) from None


def _check_slimmable(space: SearchSpace, src: _Source) -> None:
    """With `recipe.slimmable`, no value of the space may turn on a primitive that slimmable
    training does not support (each value is checked alone, as `_check_buildable` does)."""
    from nas.models.width_slicing import SUPPORTED, slimmable_conflicts

    for param in space.params:
        ends = (param.low, param.high) if param.kind in ("int", "float") else param.values()
        for value in ends:
            if slimmable_conflicts({param.key: value}):
                raise src.error(
                    ("space", param.key, param.kind),
                    f"{value!r} is not supported by slimmable training (recipe.slimmable), which supports "
                    f"{SUPPORTED}; remove {param.key} from the space (or fix it off), or remove recipe.slimmable.",
                )


# ----------------------------------------------------------------------------- the search section


def _parse_search(src: _Source, value: Any, space: SearchSpace) -> SearchSettings:
    path = ("search",)
    data = _mapping(src, path, value)
    parsed: dict[str, Any] = {}
    if "objectives" in data:
        parsed["objectives"] = _parse_objectives(src, path + ("objectives",), data["objectives"])
    if "pruner" in data:
        parsed["pruner"] = _parse_pruner(src, path + ("pruner",), data["pruner"])
    if data.get("sampler") == "grid":
        parsed["n_trials"] = _grid_size(src, space)  # n_trials is ignored: every point runs
    settings = _build_section(src, path, SearchSettings, data, **parsed)
    for i, objective in enumerate(settings.objectives):
        if objective.metric == "test_acc":
            warnings.warn(
                f"{src.file}: {_render(path + ('objectives', i, 'metric'))}: selecting on test_acc "
                "leaks the test set into the search; select on val_acc and report test_acc.",
                UserWarning,
                stacklevel=3,
            )
    return settings


def _grid_size(src: _Source, space: SearchSpace) -> int:
    for param in space.params:
        if not param.is_enumerable():
            raise src.error(
                ("space", param.key, "float"),
                "the grid sampler needs every entry enumerable, but this float range has no step; "
                "give a step, use a choice, or use another sampler.",
            )
    try:
        return len(space._assignments(limit=MAX_GRID_POINTS))
    except ConfigError as err:
        raise src.error(("search", "sampler"), f"grid: {err}") from None


def _parse_objectives(src: _Source, path: tuple, value: Any) -> tuple[Objective, ...]:
    if not isinstance(value, list) or not value:
        raise src.error(
            path, f"expected a non-empty list such as [{{metric: val_acc, direction: maximize}}], but got {value!r}."
        )
    out = []
    for i, item in enumerate(value):
        item_path = path + (i,)
        if not isinstance(item, dict):
            raise src.error(item_path, f"expected {{metric: ..., direction: ...}}, but got {item!r}.")
        for key, allowed in (("metric", METRICS), ("direction", DIRECTIONS)):
            if key not in item:
                raise src.error(item_path + (key,), f"missing; give one of {', '.join(allowed)}.")
        out.append(_build_section(src, item_path, Objective, item))
    return tuple(out)


def _parse_pruner(src: _Source, path: tuple, value: Any) -> PrunerSpec:
    """A pruner mapping: `kind`, the Optuna constructor's keyword arguments, `wrapped` (patient)."""
    data = dict(_mapping(src, path, value))
    kind = data.pop("kind", None)
    if kind not in PRUNERS:
        raise src.error(
            path + ("kind",),
            f"must be one of {', '.join(PRUNERS)}, but got {kind!r}.{_did_you_mean(kind, tuple(PRUNERS))}",
        )
    wrapped = None
    if "wrapped" in data:
        if kind != "patient":
            raise src.error(path + ("wrapped",), "only a patient pruner wraps another; remove it or set kind: patient.")
        wrapped = _parse_pruner(src, path + ("wrapped",), data.pop("wrapped"))
    cls = PRUNERS[kind]
    params = {
        name: p
        for name, p in inspect.signature(cls).parameters.items()
        if name != "wrapped_pruner" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    for key, option in data.items():
        if key not in params:
            raise src.error(
                path + (key,),
                f"not an option of the {kind} pruner ({cls.__name__}); its options are "
                f"{', '.join(params) or 'none'}.{_did_you_mean(key, tuple(params))}",
            )
        hint = _annotation(params[key].annotation)
        if hint is not None and not _type_ok(option, hint):
            raise src.error(path + (key,), f"must be {_type_words(hint)}, but got {option!r}.")
    for name, p in params.items():
        if p.default is p.empty and name not in data:
            example = _PRUNER_EXAMPLES.get(name, f"{name}: ...")
            raise src.error(path + (name,), f"missing; the {kind} pruner needs it, e.g. {example}.")
    if kind == "percentile" and not 0 <= data["percentile"] <= 100:
        raise src.error(
            path + ("percentile",), f"must be between 0 and 100 inclusive, but got {data['percentile']!r}."
        )
    try:
        return PrunerSpec(kind=kind, options=tuple(sorted(data.items())), wrapped=wrapped)
    except ConfigError as err:
        raise src.error(path, str(err)) from None


def _annotation(annotation: Any) -> Any:
    """A constructor annotation (often a string) as a type `_type_ok` reads, or None."""
    if annotation is inspect.Parameter.empty:
        return None
    if not isinstance(annotation, str):
        return annotation
    names = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None)}
    parts = [part.strip() for part in annotation.split("|")]
    if not all(part in names for part in parts):
        return None  # something richer (a callable, a class): Optuna checks it
    hint: Any = names[parts[0]]
    for part in parts[1:]:
        hint = hint | names[part]
    return hint
