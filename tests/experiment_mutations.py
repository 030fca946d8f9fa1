"""Hypothesis strategies for hostile experiment files: the real ones in search_spaces/, mutated.

`experiment_files()` draws one of those files and changes it in up to three ways per layer:
- the data it holds (`_mutate_tree`): a value of another type or out of range (huge ints,
  NaN, infinities, negatives, long strings), a key deleted, added, renamed or moved, a value
  nested deeper or flattened, two sections swapped, one value shared by two keys (an anchor
  and its alias), a value nested near the depth bound; and, most often, a known field of a
  section or budget, a space entry or the pruner set to such values, which reaches the checks
  inside a section;
- the YAML text (`_mutate_text`): a line duplicated (duplicate keys), deleted, re-indented or
  tab-indented; merge keys, tags (``!!python/object``, ``!!binary``, ``!!set``, dates, unknown
  ones), aliases that expand (a "billion laughs"), a second document, directives, truncation;
- the bytes (`_mutate_bytes`): invalid UTF-8, UTF-16, a BOM, a NUL.
It also draws the budget to apply (one of the file's, none, or a name it lacks).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from nas.config.experiment import (
    DATASETS,
    DIRECTIONS,
    METRICS,
    PRUNERS,
    SAMPLERS,
    SECTIONS,
    ConfirmSettings,
    Objective,
    Resources,
    SearchSettings,
)
from nas.config.space import ARCH_KEYS, KINDS
from nas.config.yaml_io import MAX_DEPTH
from nas.data.config import DataConfig
from nas.training.recipe import Recipe, SlimmableConfig

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


@dataclass(frozen=True)
class Base:
    """One real experiment file: its name, text and the data it holds."""

    name: str
    text: str
    data: Any = field(compare=False)

    @property
    def budgets(self) -> list[str]:
        return list(self.data.get("budgets") or {})


BASES = tuple(Base(p.name, p.read_text(), yaml.safe_load(p.read_text())) for p in sorted(SPACES.glob("*.yaml")))


@dataclass(frozen=True)
class MutatedFile:
    """A drawn experiment file: its bytes, the budget to apply, and how it was made (for the
    report of a failing example)."""

    base: str
    content: bytes = field(repr=False)
    budget: str | None
    steps: tuple[str, ...]

    @property
    def text(self) -> str:  # shown when an example fails
        return self.content.decode("utf-8", "backslashreplace")


# ----------------------------------------------------------------------------- what values and keys to draw


def _walk(node: Any, keys: set, values: set) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            keys.add(key)
            _walk(value, keys, values)
    elif isinstance(node, list):
        for value in node:
            _walk(value, keys, values)
    elif isinstance(node, (str, int, float, bool)) or node is None:
        values.add(node)


def _corpus() -> tuple[list, list]:
    """Keys and scalars that real files and the config classes use: mutations that stay near
    valid files reach the checks deep inside, where random values are refused at the door."""
    keys: set = set(SECTIONS) | set(ARCH_KEYS) | set(KINDS) | {"step", "log", "when", "kind", "wrapped", "margin"}
    values: set = set(SAMPLERS) | set(METRICS) | set(DIRECTIONS) | set(DATASETS) | set(PRUNERS)
    for cls in (DataConfig, Recipe, SlimmableConfig, SearchSettings, Objective, ConfirmSettings, Resources):
        keys |= {f.name for f in dataclasses.fields(cls)}
    for pruner in PRUNERS.values():  # every option of every pruner
        keys |= set(inspect.signature(pruner).parameters) - {"wrapped_pruner", "args", "kwargs"}
    for base in BASES:
        _walk(base.data, keys, values)
    hashable = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return sorted(keys, key=repr), sorted(hashable, key=repr)


KEYS, VALUES = _corpus()
ARCH_TOKENS = ["base", "pyr", "R:L1", "R:L1+L3", "X:L2", "R:L1x3", "R:L1x99999999999999999999", "F3:L2", "F9:L1",
               "C4:L2", "C1:L3", "D:L2", "Dm:L1", "E:L1+L2", "E:", "E:L3", "ew=0.5+0.3", "ew=1e400", "ew=-1",
               "et=0.4", "et=nan", "sd=0.2", "dd=0.5", "dp=0.1", "dpg=0.5", "wd=0.1", "sd=", "w=0.25", "w=inf",
               "w=1e-320", "R:", "R:L4", "X:L1+", ":", "=", "R:L1xx2"]
HUGE_INTS = [2**31, 2**31 - 1, 2**53 + 1, 2**63, 2**64, -(2**63), 10**30, 10**308, 10**309, 10**400, 10**4200]
ODD_FLOATS = [0.0, -0.0, 5e-324, 1e-300, 1e308, -1.0, 0.5, 1.0, 2.0, 1e-9, 0.1 + 0.2]
ODD_STRINGS = ["", " ", "\t", "null", "~", "true", "no", "1", "1e3", "0x10", "1_000", ".inf", "-.nan", "none", "grid",
               "~/data", "~nosuchuser_nas/data", "/", ".", "a\nb", "a\rb", "\x00", "\x85", "\u2028", "[x]", "{x}",
               "é" * 3, "🙂", ":smile:", "[bold]x[/]", "x" * 5000, "L1+L2", "L1+L1", "L3", "0.5+abc", "1+2+3"]
DEEP = 70  # a nesting drawn up to this deep: within MAX_DEPTH, and just past it

scalars = st.one_of(
    st.sampled_from(VALUES),
    st.none(),
    st.booleans(),
    st.integers(-3, 10),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.sampled_from(HUGE_INTS).map(lambda n: -n),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(ODD_FLOATS),
    st.text(max_size=12),
    st.sampled_from(ODD_STRINGS),
    st.lists(st.sampled_from(ARCH_TOKENS), min_size=1, max_size=3).map(" ".join),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(-2, 3), st.none(), st.booleans(),
                 st.floats(allow_nan=False), st.sampled_from(["x" * 300, "<<", "=", "? a", "a: b", "-", "#c"]))
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=3), max_leaves=8
)

# ----------------------------------------------------------------------------- the data


def _paths(node: Any, prefix: tuple = (), seen: set | None = None) -> list[tuple]:
    """Every path into `node` (the root is ()), each shared or recursive value walked once."""
    seen = set() if seen is None else seen
    out = [prefix]
    if isinstance(node, (dict, list)):
        if id(node) in seen:
            return out
        seen.add(id(node))
        for key, value in (node.items() if isinstance(node, dict) else enumerate(node)):
            out += _paths(value, (*prefix, key), seen)
    return out


def _get(node: Any, path: tuple) -> Any:
    for part in path:
        node = node[part]
    return node


def _set(root: Any, path: tuple, value: Any) -> Any:
    """`root` with the value at `path` replaced (the new root when `path` is ())."""
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _delete(root: Any, path: tuple) -> Any:
    if path:
        del _get(root, path[:-1])[path[-1]]
    return root


def _rename(root: Any, path: tuple, new_key: Any) -> Any:
    """The key at `path` renamed in place, keeping its position (or moved last on a clash)."""
    parent = _get(root, path[:-1])
    if not isinstance(parent, dict):
        return root
    items = [(new_key if k == path[-1] else k, v) for k, v in parent.items()]
    parent.clear()
    parent.update(items)
    return root


def _nest(value: Any, depth: int, as_list: bool) -> Any:
    for _ in range(depth):
        value = [value] if as_list else {"x": value}
    return value


def _tweak(value: Any, how: str) -> Any:
    """A near miss of a value: the same number negated, scaled, off by one, as a string..."""
    fixed = {"huge": 10**400, "nan": math.nan, "inf": math.inf, "-inf": -math.inf, "none": None, "true": True,
             "zero": 0, "str": str(value), "list": [value], "dict": {"value": value}}
    if how in fixed:
        return fixed[how]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return {"neg": lambda: -value, "plus1": lambda: value + 1, "minus1": lambda: value - 1,
                "scale": lambda: value * 10**6, "tiny": lambda: value * 1e-9, "float": lambda: float(value),
                "big": lambda: value + 2**63}[how]()
    except OverflowError:  # a huge int already
        return value


TWEAKS = ("neg", "plus1", "minus1", "zero", "scale", "tiny", "str", "float", "list", "dict", "big", "huge", "nan",
          "inf", "-inf", "none", "true")
# "field", "entry" and "pruner" set a known field, a space entry or the pruner: they reach the
# checks inside a section, where a random change is mostly refused at the section's door
TREE_MUTATIONS = ("replace", "root", "tweak", "tweak", "corpus", "delete", "add", "rename", "nest", "flatten", "swap",
                  "share", "copy", "deep", *("field",) * 6, *("entry",) * 3, *("pruner",) * 2)
PLAUSIBLE = [0, 1, 2, 3, 4, 8, 0.1, 0.25, 0.5, 1.0, 2.0]
numbers = st.one_of(st.sampled_from(PLAUSIBLE), st.integers(-2, 10), st.sampled_from(ODD_FLOATS + HUGE_INTS),
                    st.sampled_from(HUGE_INTS).map(lambda n: -n), st.sampled_from([math.nan, math.inf, -math.inf]),
                    st.floats())
SECTION_CLASSES = {("dataset",): DataConfig, ("recipe",): Recipe, ("recipe", "slimmable"): SlimmableConfig,
                   ("search",): SearchSettings, ("search", "objectives", 0): Objective,
                   ("confirm",): ConfirmSettings, ("resources",): Resources}


@st.composite
def pruners(draw: Any) -> dict:
    """A pruner section: a kind and some of its constructor's options (or nas's margin)."""
    kind = draw(st.sampled_from(sorted(PRUNERS)))
    options = sorted(set(inspect.signature(PRUNERS[kind]).parameters) - {"wrapped_pruner"} | {"margin"})
    chosen = draw(st.lists(st.sampled_from(options), max_size=3, unique=True))
    out: dict = {"kind": kind, **{name: draw(numbers | scalars) for name in chosen}}
    if kind == "patient" and draw(st.booleans()):
        out["wrapped"] = draw(pruners())
    return out


@st.composite
def space_entries(draw: Any) -> tuple[str, dict]:
    """An architecture key and a space entry for it: a choice, range or fixed value, maybe a step,
    a log scale, a condition."""
    key = draw(st.sampled_from(["width", "L1.extra", "L2.residual", "exits.weights", "drop.rate"]) |
               st.sampled_from(ARCH_KEYS))
    kind = draw(st.sampled_from(KINDS))
    if kind == "choice":
        entry: dict = {kind: draw(st.lists(numbers | scalars, max_size=4))}
    elif kind == "fixed":
        entry = {kind: draw(numbers | scalars)}
    else:
        entry = {kind: draw(st.lists(numbers, min_size=2, max_size=2) | values)}
        if draw(st.booleans()):
            entry["step"] = draw(numbers | st.sampled_from([5e-324, 1e-300, 1e-9, 2**31]))
        if draw(st.booleans()):
            entry["log"] = draw(st.booleans() | scalars)
    if draw(st.booleans()):
        entry["when"] = {draw(st.sampled_from(ARCH_KEYS)): draw(st.lists(numbers | scalars, max_size=3))}
    return key, entry


def _set_field(draw: Any, tree: Any) -> tuple[Any, str]:
    """A field of a config class, in the file or in one of its budgets, set to a hostile value."""
    section, cls = draw(st.sampled_from(list(SECTION_CLASSES.items())))
    budgets = list(tree.get("budgets") or {}) if isinstance(tree.get("budgets"), dict) else []
    if budgets and draw(st.booleans()):
        section = ("budgets", draw(st.sampled_from(budgets)), *section)
    field_ = draw(st.sampled_from([f for f in dataclasses.fields(cls) if f.init]))
    rule = field_.metadata.get("rule")
    choices = list(rule.choices) if rule is not None and rule.choices else PLAUSIBLE
    value = draw(st.sampled_from(choices) | numbers | scalars)
    node = tree
    for part in section:  # made where missing, so the field is set
        if isinstance(node, dict):
            node = node.setdefault(part, {}) if not isinstance(node.get(part), (dict, list)) else node[part]
        elif isinstance(node, list) and isinstance(part, int) and node:
            node = node[0]
        else:
            return tree, f"field skipped ({section})"
    if not isinstance(node, dict):
        return tree, f"field skipped ({section} is no mapping)"
    node[field_.name] = value
    return tree, f"{'.'.join(map(str, section))}.{field_.name} = {value!r}"


def _mutate_tree(draw: Any, tree: Any) -> tuple[Any, str]:
    kind = draw(st.sampled_from(TREE_MUTATIONS))
    if kind == "field" and isinstance(tree, dict):
        return _set_field(draw, tree)
    paths = _paths(tree)
    path = () if kind == "root" else draw(st.sampled_from(paths[1:] or paths))
    target = _get(tree, path)
    if kind in ("replace", "root"):
        return _set(tree, path, draw(values)), f"replace {path}"
    if kind == "tweak":
        how = draw(st.sampled_from(TWEAKS))
        return _set(tree, path, _tweak(target, how)), f"tweak {path} {how}"
    if kind in ("pruner", "entry"):
        section = "search" if kind == "pruner" else "space"
        if not (isinstance(tree, dict) and isinstance(tree.get(section), dict)):
            return tree, f"{kind} skipped (no {section})"
        key, value = ("pruner", draw(pruners())) if kind == "pruner" else draw(space_entries())
        tree[section][key] = value
        return tree, f"{section}.{key} = {value!r}"
    if kind == "corpus":
        return _set(tree, path, draw(st.sampled_from(VALUES))), f"corpus value at {path}"
    if kind == "delete":
        return _delete(tree, path), f"delete {path}"
    if kind in ("add", "copy"):
        dicts = [p for p in paths if isinstance(_get(tree, p), dict)] or [()]
        where = draw(st.sampled_from(dicts))
        key = draw(keys)
        value = draw(values) if kind == "add" else _get(tree, draw(st.sampled_from(paths)))
        if not isinstance(_get(tree, where), dict):
            return tree, "add skipped (no mapping)"
        _get(tree, where)[key] = value if kind == "add" else _plain_copy(value)
        return tree, f"{kind} key {key!r} at {where}"
    if kind == "rename":
        if not path:
            return tree, "rename skipped (root)"
        return _rename(tree, path, draw(keys)), f"rename {path}"
    if kind == "nest":
        as_list = draw(st.booleans())
        return _set(tree, path, _nest(target, draw(st.integers(1, 3)), as_list)), f"nest {path}"
    if kind == "deep":
        depth = draw(st.integers(MAX_DEPTH - 8, DEEP))
        return _set(tree, path, _nest(target, depth, draw(st.booleans()))), f"nest {path} {depth} deep"
    if kind == "flatten":
        if isinstance(target, dict) and target:
            return _set(tree, path, draw(st.sampled_from(list(target.values())))), f"flatten {path}"
        if isinstance(target, list) and target:
            return _set(tree, path, target[0]), f"flatten {path}"
        return tree, "flatten skipped (a scalar)"
    other = draw(st.sampled_from(paths))
    if not path or not other or other[: len(path)] == path or path[: len(other)] == other:
        return tree, f"{kind} skipped (nested paths)"
    if kind == "swap":
        a, b = _get(tree, path), _get(tree, other)
        _set(tree, path, b)
        return _set(tree, other, a), f"swap {path} {other}"
    return _set(tree, other, target), f"share {path} at {other}"  # dumped as an anchor and an alias


def _plain_copy(value: Any) -> Any:
    """A deep copy that keeps no sharing (a copied value is written out, not aliased)."""
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_copy(v) for v in value]
    return value


def _dump(draw: Any, tree: Any) -> str:
    style = draw(st.sampled_from([False, None, True]))
    return yaml.safe_dump(tree, sort_keys=False, default_flow_style=style, allow_unicode=draw(st.booleans()),
                          width=draw(st.sampled_from([80, 10**6])))


# ----------------------------------------------------------------------------- the text

VALUE_SNIPPETS = [
    "!!python/object:os.system {}", "!!python/object/apply:os.system ['true']", "!!python/name:os.system",
    "!!binary aGVsbG8=", "!!set {a, b}", "!!omap [{a: 1}, {b: 2}]", "!!pairs [{a: 1}]", "!!timestamp 2001-12-14",
    "2001-12-14t21:59:43.10-05:00", "2020-13-45", "!!float 'x'", "!!int '0x1F'", "!!int 'abc'", "!!str 3",
    "!!bool yes", "!!null ''", "!custom 3", "!<tag:example.com,2000:x> 3", "*undefined", "&anchor 3", "0o17",
    "0x_1F", "1_000", "0b101", "1:30", "+.inf", "-.inf", ".NaN", "yes", "Off", "1e400", "-1e-400", "1" * 5000,
    "'quoted'", '"\\u0000"', '"\\x85"', '"\\ud800"', "|\n  block\n", ">-\n  folded\n", "{a: 1, a: 2}",
    "[1, [2, [3]]]", "{? [1, 2] : 3}", "{<<: {x: 1}}", "{<<: [{x: 1}, {y: 2}]}", "{<<: 3}", "=", "[*a]",
    "!" + "t" * 3000 + " 1", "{" * 30 + "}" * 30, "[" * 80 + "]" * 80,
]
LINE_SNIPPETS = [
    "<<: {epochs: 3}", "<<: *undefined", "? [a, b]\n: 1", "~: 1", "1: 2", "true: 1", "null: 3", "'': 1",
    "!!python/object:x {}: 1", "&a a: &b 1", "? |\n  block key\n: 1", "<<: [{x: 1}]", "[a]: 1", "x: y: z",
    "- item", "%YAML 1.1", "--- 3", "...", "# comment",
]
DOC_SNIPPETS = [
    "---\nname: second\n", "--- 3\n", "...\n", "%YAML 1.2\n---\n", "%YAML 1.1\n%TAG !e! tag:example.com,2000:\n---\n",
    "%YAML 3.0\n---\n", "%FOO bar\n---\n",
]
BOMB = ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n")
TEXT_MUTATIONS = ("dup_line", "del_line", "value", "line", "indent", "tab", "prepend_doc", "append_doc", "bomb",
                  "truncate", "insert_char", "long_line", "anchor_alias")


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" "))]


def _mutate_text(draw: Any, text: str) -> tuple[str, str]:
    lines = text.splitlines() or [""]
    kind = draw(st.sampled_from(TEXT_MUTATIONS))
    i = draw(st.integers(0, len(lines) - 1))
    line = lines[i]
    if kind == "dup_line":
        lines.insert(i, line)
    elif kind == "del_line":
        del lines[i]
    elif kind == "value":  # `key: value` -> `key: <snippet>`
        key, colon, _ = line.partition(": ")
        lines[i] = f"{key}{colon or ': '}{draw(st.sampled_from(VALUE_SNIPPETS))}"
    elif kind == "line":
        snippet = draw(st.sampled_from(LINE_SNIPPETS))
        lines.insert(i, "\n".join(_indent_of(line) + part for part in snippet.split("\n")))
    elif kind == "indent":
        lines[i] = " " * draw(st.integers(0, 5)) + line.lstrip(" ")
    elif kind == "tab":
        lines[i] = "\t" + line.lstrip(" ") if draw(st.booleans()) else line.replace(": ", ":\t", 1)
    elif kind == "prepend_doc":
        return draw(st.sampled_from(DOC_SNIPPETS)) + text, kind
    elif kind == "append_doc":
        return text + "\n" + draw(st.sampled_from(DOC_SNIPPETS)), kind
    elif kind == "bomb":
        return text + "\n" + BOMB, kind
    elif kind == "truncate":
        return text[: draw(st.integers(0, len(text)))], kind
    elif kind == "insert_char":
        at = draw(st.integers(0, len(text)))
        char = draw(st.characters(codec="utf-8") | st.sampled_from(["\x00", "\x01", "\x7f", "\ufeff", "\ud800", "\t"]))
        return text[:at] + char + text[at:], f"{kind} {char!r} at {at}"
    elif kind == "long_line":
        lines[i] = f"{_indent_of(line)}{'k' * draw(st.sampled_from([300, 100_000]))}: 1"
    else:  # anchor a mapping line's value, alias it at another line
        j = draw(st.integers(0, len(lines) - 1))
        key, colon, value = line.partition(": ")
        other, colon2, _ = lines[j].partition(": ")
        if colon and colon2 and i != j:
            lines[i] = f"{key}: &x {value}"
            lines[j] = f"{other}: *x"
    return "\n".join(lines) + "\n", f"{kind} line {i}"


def _mutate_bytes(draw: Any, text: str) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(("bad_utf8", "latin1", "utf16", "bom", "nul")))
    data = text.encode("utf-8", "surrogatepass")
    at = draw(st.integers(0, len(data)))
    if kind == "bad_utf8":
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\x80", b"\xed\xa0\x80"])) + data[at:], kind
    if kind == "latin1":
        return ("# café\n" + text).encode("latin-1", "replace"), kind
    if kind == "utf16":
        return text.encode("utf-16", "surrogatepass"), kind
    if kind == "bom":
        return b"\xef\xbb\xbf" + data, kind
    return data[:at] + b"\x00" + data[at:], kind


# ----------------------------------------------------------------------------- the file


@st.composite
def experiment_files(draw: Any) -> MutatedFile:
    """A real experiment file, changed in its data, its text and its bytes (each layer 0-3
    times; a file changed in none is the real one), with a budget to apply."""
    base = draw(st.sampled_from(BASES))
    steps: list[str] = []
    tree_steps = draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3]))  # a list, not integers(): drawn as weighted
    if tree_steps:
        tree = _plain_copy(base.data)
        for _ in range(tree_steps):
            tree, step = _mutate_tree(draw, tree)
            steps.append(step)
        text = _dump(draw, tree)
    else:
        text = base.text  # comments and the file's own layout kept
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 0, 1, 1, 2, 3]))):
        text, step = _mutate_text(draw, text)
        steps.append(step)
    content = text.encode("utf-8", "surrogatepass")
    if draw(st.sampled_from([False] * 9 + [True])):
        content, step = _mutate_bytes(draw, text)
        steps.append(step)
    budget = draw(st.sampled_from([None] * 3 + base.budgets * 3 + ["cpu", "gpu", "<odd>"]))
    if budget == "<odd>":  # a name no file has: one line still, however odd
        budget = draw(st.text(max_size=6) | st.sampled_from(["a\nb", "x" * 300, "none ", ""]))
    return MutatedFile(base.name, content, budget, tuple(steps))


FILE_NAMES = ["x.yaml", "with space.yaml", "ünï.yaml", "new\nline.yaml", "tab\there.yaml", "a" * 200 + ".yaml",
              "[bold]x[-].yaml", "-dash.yaml"]
file_names = st.sampled_from(FILE_NAMES[:1] * 4 + FILE_NAMES)
