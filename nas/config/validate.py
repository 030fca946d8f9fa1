"""One validator for every config class: typed frozen dataclasses, checked field by field.

A config class is a frozen dataclass whose annotations are its types and whose rules are
given where its fields are declared::

    epochs: int = setting(24, at_least(1))  # passes over the training split

Its ``__post_init__`` calls `check_fields` first (every field against its type, then its
rule), then checks what involves several fields with `require`, then canonicalises. So
``Recipe(epochs=0)`` fails as Optuna's constructors do, naming the field, the rule and the
value: ``epochs must be at least 1, but got 0.``. No value is coerced: ``"3"`` is not 3 and
``true`` is not 1 (an int is accepted where a float is asked for, as YAML writes ``1`` for
``1.0``).

`build` turns a mapping read from YAML or JSON into such a class: it rejects unknown keys
(naming the allowed ones and the nearest), builds nested config classes from nested
mappings, and names the key path of whatever fails. A `Source` says where the mapping came
from and renders the path: in a file, ``FILE: recipe.epochs: epochs must be at least 1, but
got 0.`` (the path runs down to the key, so a value from a budget is named by its path in
the budget, ``budgets.cpu.recipe.epochs``); in code (``ArchConfig.from_dict``), the path
names the object and the message its field: ``arch.L1: residual must be between 0 and 8,
but got 9.``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from nas.errors import ConfigError, clip, shown

_LARGEST_FLOAT = sys.float_info.max  # integers above it have no float

# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """What a field's value must satisfy once its type is right (never given NaN or an
    infinity: `check_fields` refuses non-finite floats in every field before any rule).
    ``at_least(1) & at_most(100)`` is both rules; a value is told the one it fails."""

    ok: Callable[[Any], bool]
    words: str  # after "must be": "between 0 and 8", "at least 1", "one of a, b"
    typed: str | None = None  # after the type's words when they read better: "an integer >= 1"
    choices: tuple = ()  # one_of: the allowed values (their words name the type; near misses are suggested)
    parts: tuple[Rule, ...] = ()  # a rule made with `&`: its rules, checked in order

    def __and__(self, other: Rule) -> Rule:
        parts = (*(self.parts or (self,)), *(other.parts or (other,)))
        typed = " and ".join(p.typed or p.words for p in parts)
        return Rule(lambda v: all(p.ok(v) for p in parts), " and ".join(p.words for p in parts), typed,
                    parts=parts)

    def failed(self, value: Any) -> Rule:
        """The part of this rule that `value` fails (the rule itself when it is not made with `&`)."""
        return next((p for p in self.parts if not p.ok(value)), self)


def between(lo: int, hi: int, note: str = "") -> Rule:
    return Rule(lambda v: lo <= v <= hi, f"between {lo} and {hi}{_note(note)}")


def interval(lo: float, hi: float, *, open_low: bool = False, open_high: bool = False, note: str = "") -> Rule:
    """``in [lo, hi]``, either end open."""

    def ok(v: Any) -> bool:
        return (lo < v if open_low else lo <= v) and (v < hi if open_high else v <= hi)

    text = f"in {'(' if open_low else '['}{lo:g}, {hi:g}{')' if open_high else ']'}{_note(note)}"
    return Rule(ok, text)


def at_least(lo: int, note: str = "") -> Rule:
    return Rule(lambda v: v >= lo, f"at least {lo}{_note(note)}", f">= {lo}{_note(note)}")


def at_most(hi: int, note: str = "") -> Rule:
    """An upper bound on a count: what the store's columns, Optuna and the dataset can hold."""
    return Rule(lambda v: v <= hi, f"at most {hi}{_note(note)}", f"<= {hi}{_note(note)}")


def positive(note: str = "") -> Rule:
    return Rule(lambda v: v > 0, f"positive{_note(note)}", f"> 0{_note(note)}")


def non_negative(note: str = "") -> Rule:
    return Rule(lambda v: v >= 0, f"non-negative{_note(note)}", f">= 0{_note(note)}")


def one_of(choices: Sequence[str]) -> Rule:
    choices = tuple(choices)
    return Rule(lambda v: v in choices, f"one of {', '.join(choices)}", choices=choices)


def _note(note: str) -> str:
    return f" {note}" if note else ""


def setting(default: Any = dataclasses.MISSING, rule: Rule | None = None, *, types: str | None = None) -> Any:
    """A dataclass field with its default and its rule.

    Args:
        default: the default value (immutable: configs are frozen); none: the field is required.
        rule: what the value must satisfy besides its annotated type.
        types: the words for the type in messages when the annotation's words would not
            say enough, e.g. ``"an integer (columns; 0 = none)"``.
    """
    return dataclasses.field(default=default, metadata={"rule": rule, "types": types})


# ----------------------------------------------------------------------------- checking a constructed object


class FieldError(ConfigError):
    """A rule of one field failed; the message names the field (Optuna style)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def require(ok: bool, name: str, value: Any, words: str) -> None:
    """FieldError ``{name} must be {words}, but got {shown(value)}.`` unless `ok`."""
    if not ok:
        raise FieldError(name, f"{name} must be {words}, but got {shown(value)}.")


def check_fields(obj: Any) -> None:
    """Check every field of dataclass `obj` against its annotated type, then its rule."""
    for name, hint, rule, words in _field_checks(type(obj)):
        value = getattr(obj, name)
        if not type_ok(value, hint):
            raise FieldError(name, f"{name} must be {words}, but got {shown(value)}.")
        if not is_finite(value):
            raise FieldError(name, f"{name} must be a finite number, but got {shown(value)}.")
        if rule is not None and value is not None and not rule.ok(value):
            suggestion = did_you_mean(value, rule.choices) if rule.choices else ""
            raise FieldError(name, f"{name} must be {rule.failed(value).words}, but got {shown(value)}.{suggestion}")


def is_finite(value: Any) -> bool:
    """Whether no number in `value` (a scalar, or tuples of them) is NaN or infinite: YAML reads
    ``.inf`` and ``.nan`` as floats, and either passes a one-sided rule or poisons training later.
    An integer too large for a float (YAML reads 400 digits as an int, where ``1e400`` is inf)
    counts as infinite too: it passes a one-sided rule, then float() of it raises OverflowError."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= _LARGEST_FLOAT
    if isinstance(value, tuple):
        return all(is_finite(v) for v in value)
    return True


def store_floats(obj: Any, *names: str) -> None:
    """Set the named fields of frozen `obj` to floats (None kept): YAML's ``2`` and ``2.0``
    are one request, and equal configs must hash the same."""
    for name in names:
        value = getattr(obj, name)
        if value is not None:
            object.__setattr__(obj, name, float(value))


_CHECKS: dict[type, list[tuple[str, Any, Rule | None, str]]] = {}  # per class: (name, hint, rule, type words)


def _field_checks(cls: type) -> list[tuple[str, Any, Rule | None, str]]:
    """(name, type, rule, words of the type) per field; computed once per class (configs are
    built per grid point, and get_type_hints is slow)."""
    if cls not in _CHECKS:
        hints = typing.get_type_hints(cls)
        checks = []
        for f in fields(cls):
            rule, words = f.metadata.get("rule"), f.metadata.get("types")
            checks.append((f.name, hints[f.name], rule, words or _expected(hints[f.name], rule)))
        _CHECKS[cls] = checks
    return _CHECKS[cls]


def _expected(hint: Any, rule: Rule | None) -> str:
    """What a value of this type and rule is, in words: "an integer between 0 and 8"."""
    if rule is not None and rule.choices:
        return rule.words
    base, optional = _without_none(hint)
    text = type_words(base)
    if rule is not None:
        text += f" {rule.typed or rule.words}"
    return f"{text}, or null" if optional else text


def _without_none(hint: Any) -> tuple[Any, bool]:
    """(`X`, True) for ``X | None``; (hint, False) otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [h for h in typing.get_args(hint) if h is not type(None)]
        if len(args) < len(typing.get_args(hint)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True
    return hint, False


def type_ok(value: Any, hint: Any) -> bool:
    """Whether `value` is of type `hint`, strictly: a bool is not an int, a string not a number;
    an int is a float. Tuples are checked item by item; Any and unknown generics pass."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, h) for h in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(type_ok(v, args[0]) for v in value)
        return len(args) == len(value) and all(type_ok(v, h) for v, h in zip(value, args))
    if hint is Any or origin is not None:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def type_words(hint: Any) -> str:
    """"an integer", "a number", "true or false", "an integer or null", "a DropConfig ..."."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(type_words(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return "a list"
    words = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in words:
        return words[hint]
    if dataclasses.is_dataclass(hint):
        return f"a {hint.__name__} (from_dict reads mappings)"
    return getattr(hint, "__name__", str(hint))


# ----------------------------------------------------------------------------- where values came from


@dataclass(frozen=True)
class Source:
    """Where values came from, so an error names the file and the key path.

    With a `file`, paths start at the top of the file; without one (values given in code),
    the first element of a path is the caller's name for the object (``"arch"``,
    ``"config.yaml: recipe"``).
    """

    file: str | None = None
    budget: str | None = None  # the budget applied, if any
    override: Any = None  # the budget's mapping: values found in it are named by their path there

    def error(self, path: Sequence[str | int], message: str) -> ConfigError:
        where = render(path)
        if self.file is None:
            return ConfigError(f"{where}: {message}")
        if self.budget is not None and _reaches(self.override, path):
            where = render(("budgets", self.budget, *path))
        return ConfigError(f"{clip(self.file)}: {where}: {message}")  # a file name is echoed, at most a line of it

    def rejected(self, path: Sequence[str | int], err: ConfigError) -> ConfigError:
        """A constructor's error for the object at `path`. In a file, a field's rule is named
        at the field's key (so the user finds the line and a budget's value is attributed)."""
        field = getattr(err, "field", None)
        if self.file is not None and field is not None:
            return self.error((*path, field), str(err))
        return self.error(path, str(err))


def render(path: Sequence[str | int]) -> str:
    """("search", "objectives", 0, "metric") -> "search.objectives[0].metric"."""
    out = ""
    for part in path:
        part = part if isinstance(part, int) else clip(part)  # a key is echoed, at most a line of it
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
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


def did_you_mean(value: Any, allowed: Sequence[Any]) -> str:
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    return f" Did you mean {shown(close[0])}?" if close else ""


def mapping(src: Source, path: Sequence[str | int], value: Any, example: str | None = None) -> dict[str, Any]:
    """A section's mapping; null or absent is an empty one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        such = f"such as {example}" if example else "of keys to values"
        raise src.error(path, f"expected a mapping {such}, but got {shown(value)}.")
    return value


# ----------------------------------------------------------------------------- building from a mapping


def build(cls: type, value: Any, src: Source, path: tuple = (), **parsed: Any) -> Any:
    """A mapping -> config class `cls`, its keys checked and nested configs built.

    Args:
        cls: a config class (a dataclass whose constructor checks its fields).
        value: the mapping as read (null: every field at its default).
        src: where it came from.
        path: its key path there.
        parsed: fields already turned into objects by the caller (they are not read from `value`).

    Raises:
        ConfigError: an unknown key, a missing required one, or a value the class rejects,
            naming the key path.
    """
    data = mapping(src, path, value, getattr(cls, "EXAMPLE", None))
    names = [f.name for f in fields(cls) if f.init]
    for key in data:
        if key not in names:
            allowed = sorted(names)
            raise src.error(
                (*path, str(key)),
                f"unknown key; allowed keys are {', '.join(allowed)}.{did_you_mean(key, allowed)}",
            )
    kwargs: dict[str, Any] = {}
    for name, hint, rule, _ in _field_checks(cls):
        if name in parsed or name not in data:
            continue
        kwargs[name] = _nested(data[name], hint, src, (*path, name))
    for f in fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in data and f.name not in parsed:
            rule = f.metadata.get("rule")
            hint = f"give one of {', '.join(rule.choices)}" if rule and rule.choices else "give a value"
            raise src.error((*path, f.name), f"missing; {hint}.")
    try:
        return cls(**kwargs, **parsed)
    except ConfigError as err:
        raise src.rejected(path, err) from None


def _nested(value: Any, hint: Any, src: Source, path: tuple) -> Any:
    """A value for a field of type `hint`: mappings for config classes are built, lists for
    tuples of config classes too; anything else is left for the constructor to check."""
    base, optional = _without_none(hint)
    if value is None and optional:
        return None
    if dataclasses.is_dataclass(base):
        if optional and not isinstance(value, dict):  # say that null is allowed too
            example = getattr(base, "EXAMPLE", "{...}")
            raise src.error(path, f"expected a mapping such as {example} or null, but got {shown(value)}.")
        return build(base, value, src, path)
    args = typing.get_args(base)
    if typing.get_origin(base) is tuple and len(args) == 2 and dataclasses.is_dataclass(args[0]):
        if not isinstance(value, list):
            example = getattr(args[0], "EXAMPLE", "{...}")
            raise src.error(path, f"expected a list of mappings such as [{example}], but got {shown(value)}.")
        return tuple(build(args[0], item, src, (*path, i)) for i, item in enumerate(value))
    return value


def from_dict(cls: type, data: Any, source: str) -> Any:
    """`build` for values given in code or read by the caller: errors start with `source`."""
    return build(cls, data, Source(), (source,))
