"""The search space: which `ArchConfig` fields an experiment varies, and over which values.

The `space` section of an experiment maps dotted architecture keys (`ARCH_KEYS`, e.g.
``L1.residual``) to entries: ``{choice: [0, 1]}``, ``{int: [0, 2], step: 1}``,
``{float: [0.25, 1.0], log: true}`` or ``{fixed: 0.5}``, each optionally active only
``when`` other entries take given values (conditions are data, never code). A `Param` is
one entry, a `SearchSpace` all of them in dependency order; it samples architectures
through Optuna (`suggest`), enumerates them (`grid`) and maps Optuna's params back
(`arch_from_params`). Then how a section is read and checked: entries, ranges, conditions,
dependency order, and that every value gives a valid architecture.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import optuna

from nas.config.validate import Source, did_you_mean, is_finite, type_ok, type_words
from nas.errors import ConfigError, shown
from nas.models.arch import ArchConfig, parse_short_name
from nas.training.recipe import SLIMMABLE_SUPPORTED, slimmable_conflicts

KINDS = ("choice", "int", "float", "fixed")  # the kinds of a space entry
MAX_GRID_POINTS = 100_000  # a grid larger than this is a mistake, not a plan
_LARGEST = 2**31 - 1  # range ends and steps: what Optuna's float params and the store's integers hold exactly
_ENTRY_OPTIONS = {  # what an entry may hold besides its kind
    "choice": {"when"},
    "int": {"step", "log", "when"},
    "float": {"step", "log", "when"},
    "fixed": {"when"},
}

# ----------------------------------------------------------------------------- the space


# `arch` names whole architectures by their short names (``{choice: [base, "R:L1+L3", "X:L2"]}``):
# a list of explicit architectures, as in Page's study, rather than a product of fields. The
# other entries apply on top of the named one; none may set a field a name already sets.
SHORT_NAME_KEY = "arch"
ARCH_KEYS: tuple[str, ...] = (SHORT_NAME_KEY, *ArchConfig().to_flat())  # what a space entry may name
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

    def count(self) -> int:
        """How many values `values` gives, without making them (a range may hold billions)."""
        if self.kind == "choice":
            return len(self.choices)
        if self.kind == "fixed":
            return 1
        if self.kind == "int":
            return (self.high - self.low) // self.step + 1
        if self.step is None:
            raise ConfigError(
                f"space.{self.key}.float: a continuous range cannot be enumerated; "
                "give a step or use a choice."
            )
        return round((self.high - self.low) / self.step) + 1

    def values(self) -> tuple:
        """Every value, in order (choice as written, ranges ascending)."""
        if self.kind == "choice":
            return self.choices
        if self.kind == "fixed":
            return (self.value,)
        if self.kind == "int":
            return tuple(range(self.low, self.high + 1, self.step))
        # rounded: 0.1 * 3 is 0.30000000000000004
        return tuple(round(self.low + i * self.step, 12) for i in range(self.count()))

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
        return parse_space(Source(source), data)

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
                    f"params.{param.key}: {shown(value)} is not a value of this space entry ({shown(param.to_dict())})."
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
        check_space(self, Source(source), every_point=every_point)

    def to_dict(self) -> dict[str, Any]:
        return {p.key: p.to_dict() for p in self.params}

    def _assignments(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Every point with fixed values included; ConfigError past `limit` points."""
        too_many = ConfigError(f"space: the grid has more than {limit} points; narrow the space or use "
                               "the tpe or random sampler.")
        points: list[dict[str, Any]] = [{}]
        for param in self.params:
            if limit is not None and param.count() > limit:
                raise too_many  # before its values are made: a range may hold billions
            grown: list[dict[str, Any]] = []
            for point in points:
                if not param.is_active(point):
                    grown.append(point)
                    continue
                grown.extend({**point, param.key: value} for value in param.values())
                if limit is not None and len(grown) > limit:
                    raise too_many
            points = grown
        return points


def _to_arch(assignment: dict[str, Any]) -> ArchConfig:
    """{"width": 0.5, "L1.residual": 1} -> ArchConfig(width=0.5, L1=StageConfig(residual=1))."""
    return ArchConfig.from_flat(_expand(assignment), source="arch")


def _expand(assignment: dict[str, Any]) -> dict[str, Any]:
    """The flat fields of an assignment: an `arch` short name as the fields it sets, the other
    entries on top."""
    if SHORT_NAME_KEY not in assignment:
        return assignment
    rest = {k: v for k, v in assignment.items() if k != SHORT_NAME_KEY}
    return {**_named_fields(assignment[SHORT_NAME_KEY]), **rest}


def _named_fields(name: str) -> dict[str, Any]:
    """The flat fields a short name sets (those that differ from the defaults)."""
    defaults = ArchConfig().to_flat()
    return {k: v for k, v in parse_short_name(name).to_flat().items() if v != defaults[k]}


def _is_whole(x: float) -> bool:
    return abs(x - round(x)) < 1e-9 * max(1.0, abs(x))


# ----------------------------------------------------------------------------- the space section


def parse_space(src: Source, value: Any) -> SearchSpace:
    path = ("space",)
    if not isinstance(value, dict) or not value:
        raise src.error(path, f"expected a non-empty mapping of architecture keys to entries, but got {shown(value)}.")
    entries = {}
    for key, entry in value.items():
        if key not in ARCH_KEYS:
            raise src.error(
                path + (str(key),),
                f"not an architecture field; fields are {', '.join(ARCH_KEYS)}.{did_you_mean(key, ARCH_KEYS)}",
            )
        entries[key] = _parse_entry(src, path + (key,), entry)
    if SHORT_NAME_KEY in entries:
        _check_named(src, entries)
    params = {
        key: _with_conditions(src, path + (key,), param, value[key], entries)
        for key, param in entries.items()
    }
    return SearchSpace(tuple(_dependency_order(src, params)))


def _check_named(src: Source, entries: dict[str, Param]) -> None:
    """The `arch` entry: short names that read, name distinct architectures, and set no field
    another entry sets."""
    param = entries[SHORT_NAME_KEY]
    here = ("space", SHORT_NAME_KEY, param.kind)
    if param.kind not in ("choice", "fixed"):
        raise src.error(here, "architectures by name are a choice or fixed, e.g. {choice: [base, 'R:L1+L3']}.")
    seen: dict[str, str] = {}
    for name in param.values():
        if not isinstance(name, str):
            raise src.error(here, f"expected short names such as 'R:L1+L3', but got {shown(name)}.")
        try:
            fields = _named_fields(name)
            arch_hash = parse_short_name(name).hash
        except ConfigError as err:
            raise src.error(here, f"{shown(name)} is not an architecture's short name ({str(err).rstrip('.')}); write names such as "
                                  "'base', 'R:L1+L3' or 'X:L2 R:L3'.") from None
        if arch_hash in seen:
            raise src.error(here, f"{shown(name)} and {shown(seen[arch_hash])} are the same architecture; list it once.")
        seen[arch_hash] = name
        for key in entries:
            if key in fields:
                raise src.error(("space", key), f"also set by the arch entry's {shown(name)}; remove {key} from "
                                                "the space, or write it into every name.")


def _parse_entry(src: Source, path: tuple, entry: Any) -> Param:
    """One entry without its conditions (they need the whole space)."""
    key = path[-1]
    if not isinstance(entry, dict):
        raise src.error(
            path, f"expected an entry such as {{choice: [0, 1]}} or {{fixed: {shown(entry)}}}, but got {shown(entry)}."
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
                f"not an option of a {kind} entry; allowed: {', '.join(allowed)}.{did_you_mean(option, allowed)}",
            )
    here = path + (kind,)
    if kind == "fixed":
        return Param(key, kind, value=_scalar(src, here, _as_scalar(key, entry["fixed"])))
    if kind == "choice":
        choices = entry["choice"]
        if not isinstance(choices, list):
            raise src.error(here, f"expected a list of values such as [0, 1], but got {shown(choices)}.")
        choices = [_as_scalar(key, choice) for choice in choices]
        if not choices:
            raise src.error(here, "must not be empty; list at least one value, e.g. [0, 1].")
        for i, choice in enumerate(choices):
            _scalar(src, here + (i,), choice)
            if choice in choices[:i]:
                raise src.error(here, f"lists {shown(choice)} more than once in {shown(choices)}; each value may appear once.")
        return Param(key, kind, choices=tuple(choices))
    return _parse_range(src, path, kind, entry)


def _parse_range(src: Source, path: tuple, kind: str, entry: dict[str, Any]) -> Param:
    """An int or float entry: [low, high], step, log, checked as Optuna would."""
    key, here = path[-1], path + (kind,)
    number = int if kind == "int" else float
    bounds = entry[kind]
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(type_ok(b, number) for b in bounds)):
        raise src.error(here, f"expected [low, high] with {type_words(number)} values, but got {shown(bounds)}.")
    if not (is_finite(tuple(bounds)) and all(abs(b) <= _LARGEST for b in bounds)):
        raise src.error(here, f"low and high must be finite and within ±{_LARGEST}, but got {shown(bounds)}; narrow the range.")
    low, high = bounds if kind == "int" else (float(bounds[0]), float(bounds[1]))
    if low > high:
        raise src.error(here, f"low must be <= high, but got [{low}, {high}]; write [{high}, {low}].")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise src.error(path + ("log",), f"must be true or false, but got {shown(log)}.")
    step = entry.get("step", 1 if kind == "int" else None)
    if step is not None and (not type_ok(step, number) or not 0 < step <= _LARGEST):
        words = "integer" if kind == "int" else "number"
        raise src.error(path + ("step",), f"must be a positive {words} up to {_LARGEST}, but got {shown(step)}.")
    if log and low <= 0:
        raise src.error(here, f"a log scale needs low > 0, but got low={low}; raise low or set log: false.")
    if log and "step" in entry and not (kind == "int" and step == 1):
        raise src.error(
            path + ("step",), f"a log scale cannot have a step (Optuna forbids it), but got step={step}; remove one."
        )
    if step is not None and not (high - low) / step <= _LARGEST:  # a step of 5e-324: inf values
        raise src.error(
            path + ("step",),
            f"step {step} makes more than {_LARGEST} values of [{low}, {high}]; raise it, or remove it for a "
            "continuous range.",
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


def _scalar(src: Source, path: tuple, value: Any) -> Any:
    """A value Optuna can store as a categorical choice: number, string, bool or null."""
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise src.error(path, f"must be a single value (number, string, true/false or null), but got {shown(value)}.")
    if not is_finite(value):  # NaN, an infinity, or an integer too large for a float
        raise src.error(path, f"must be finite, but got {shown(value)}.")
    return value


def _with_conditions(
    src: Source, path: tuple, param: Param, entry: dict[str, Any], entries: dict[str, Param]
) -> Param:
    """`param` with its `when` conditions, each checked against the entry it names."""
    if "when" not in entry:
        return param
    here = path + ("when",)
    when = entry["when"]
    if not isinstance(when, dict) or not when:
        raise src.error(here, f"expected a mapping such as {{L1.residual: [1]}}, but got {shown(when)}.")
    conditions = []
    for target, values in when.items():
        where = here + (str(target),)
        if target == param.key:
            raise src.error(where, "an entry cannot depend on itself; remove this condition.")
        if target not in entries:
            raise src.error(
                where,
                f"not a key of the space; a condition may only name keys listed under space "
                f"({', '.join(entries)}).{did_you_mean(target, tuple(entries))}",
            )
        if not isinstance(values, list) or not values:
            raise src.error(where, f"expected a non-empty list of values such as [1], but got {shown(values)}.")
        values = [_as_scalar(target, value) for value in values]
        for value in values:
            if not entries[target].contains(value):
                raise src.error(
                    where,
                    f"{shown(value)} is not a possible value of {target} ({shown(entries[target].to_dict())}); "
                    "list values the entry can take.",
                )
        conditions.append((target, tuple(values)))
    return replace(param, when=tuple(conditions))


def _dependency_order(src: Source, params: dict[str, Param]) -> Iterator[Param]:
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


def check_space(space: SearchSpace, src: Source, *, every_point: bool = False, slimmable: bool = False) -> None:
    """Each value alone (others at their default) and, with `every_point`, each grid point
    must give a valid ArchConfig; with `slimmable`, no value may turn on a primitive that
    slimmable training does not support."""
    for param in space.params:
        for value in _probes(param):
            try:
                _to_arch({param.key: value})
            except ConfigError as err:
                raise src.error(
                    ("space", param.key, param.kind),
                    f"{shown(value)} does not give a valid architecture ({err}); use values the architecture accepts.",
                ) from None
            if slimmable and slimmable_conflicts(_expand({param.key: value})):
                raise src.error(
                    ("space", param.key, param.kind),
                    f"{shown(value)} is not supported by slimmable training (recipe.slimmable), which supports "
                    f"{SLIMMABLE_SUPPORTED}; remove {param.key} from the space (or fix it off), or remove "
                    "recipe.slimmable.",
                )
    if every_point:
        for point in space._assignments():
            try:
                _to_arch(point)
            except ConfigError as err:
                raise src.error(
                    ("space",),
                    f"the grid point {shown(point)} is not a valid architecture ({err}); narrow the space "
                    "or add a `when` condition that excludes it.",
                ) from None


def _probes(param: Param) -> tuple:
    """The values of `param` tried alone: both ends of a range, every other value."""
    return (param.low, param.high) if param.kind in ("int", "float") else param.values()


def grid_size(src: Source, space: SearchSpace) -> int:
    """The number of grid points (the trials of a grid search); ConfigError if not enumerable or too many."""
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

