"""Safe YAML for config files: duplicate keys rejected, ``1e-3`` read as a number, the cost
bounded.

PyYAML's SafeLoader keeps the last of two equal keys (a silent override) and reads
``1e-3`` as a string (YAML 1.1 wants ``1.0e-3``); `read_yaml` does neither, and its errors
name the file, the line and the column. A config is small, so what a file may cost is too:
at most `MAX_DEPTH` nested collections and `MAX_VALUES` values once aliases are expanded (a
few lines of nested ``&a``/``*a`` otherwise stand for billions of values, and every later
walk over them - validation, a message - pays for all of them), and `MAX_BYTES` of text.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from nas.errors import ConfigError, clip, shown

MAX_DEPTH = 64  # nested lists/mappings; an experiment file uses about 5
MAX_VALUES = 100_000  # nodes after alias expansion; an experiment file has a few hundred
MAX_BYTES = 4 << 20  # 4 MiB; an experiment file is a few KiB
PROBLEM_CHARS = 200  # the most of a parser's problem a message repeats (it may quote the file)


class _TooCostly(yaml.YAMLError):
    """Valid YAML that would cost more than a config may; formatted like a parse error."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _Loader(yaml.SafeLoader):
    """Safe YAML that rejects duplicate keys, reads 1e-3 as a float (YAML 1.2 does) and
    refuses documents deeper than MAX_DEPTH or larger than MAX_VALUES once expanded."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        # The composer recurses per level: stop at MAX_DEPTH, long before a RecursionError.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooCostly(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """_TooCostly if the node graph, with every alias expanded, has more than MAX_VALUES
    nodes or is deeper than MAX_DEPTH (aliases of aliases nest), or an alias contains itself.

    Walks each distinct node once (sizes of shared nodes are memoised), without recursion.
    """
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once expanded
    open_: set[int] = set()  # nodes whose subtree is being walked: seeing one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        children = _children(node)
        if finished:
            open_.discard(id(node))
            values = 1 + sum(done[id(c)][0] for c in children)
            depth = 1 + max((done[id(c)][1] for c in children), default=0)
            if values > MAX_VALUES:
                raise _TooCostly(
                    f"this value expands to more than {MAX_VALUES:,} values through its aliases (*name); "
                    "a config needs far fewer, so write the values out or reuse fewer aliases", node.start_mark)
            if depth > MAX_DEPTH:
                raise _TooCostly(f"this value nests more than {MAX_DEPTH} levels deep through its aliases",
                                 node.start_mark)
            done[id(node)] = (values, depth)
        elif id(node) in open_:
            raise _TooCostly("an alias refers to a value that contains it", node.start_mark)
        elif id(node) not in done:
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in done)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            continue  # construct_mapping reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {shown(key)}, also on line {seen[key]}", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_implicit_resolver(  # PyYAML alone reads 1e-3 and 1.0e3 as strings
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with the rules above; raises yaml.YAMLError."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def read_yaml(file: str, *, what: str = "file") -> tuple[str, Any]:
    """The text of `file` and the data it holds.

    Args:
        file: the path, as the user wrote it (it starts every message).
        what: what the file is, for the message when it cannot be read ("experiment file").

    Raises:
        ConfigError: unreadable, or invalid YAML (naming the line and column).
    """
    name = clip(file)  # a file name is echoed, at most a line of it
    try:
        path = Path(file)
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{name}: the {what} is larger than {MAX_BYTES >> 20} MiB; a config is a few KiB, "
                              "so check that this is the file you meant.")
        text = path.read_text(encoding="utf-8")
    except OSError as err:  # missing, a folder, a name too long, ...
        raise ConfigError(f"{name}: cannot read the {what} ({err.strerror or err}).") from None
    except UnicodeDecodeError:  # a binary file
        raise ConfigError(f"{name}: cannot read the {what}: it is not UTF-8 text; give a YAML file.") from None
    except ValueError as err:  # a NUL byte in the name
        raise ConfigError(f"{name}: cannot read the {what} ({err}).") from None
    try:
        return text, load_yaml(text)
    except (RecursionError, MemoryError, ValueError, OverflowError) as err:
        # PyYAML's constructors raise these for values they cannot build: 2020-13-45, an
        # integer of more than 4300 digits; recursion or memory should not happen (bounded above).
        raise ConfigError(f"{name}: invalid YAML: {type(err).__name__}: {clip(str(err))}. Fix the YAML there.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{name}: {_yaml_problem(err, text)}. Fix the YAML there.") from None


def _yaml_problem(err: yaml.YAMLError, text: str) -> str:
    """Where and what, in one line: ``line 3, column 5: invalid YAML: found ...``.

    The reader's errors (a control character) carry a position in the text instead of a
    mark, and a multi-line ``str()``; a problem may quote what the file holds (a tag of any
    length), so it is cut to a line.
    """
    if isinstance(err, yaml.reader.ReaderError):
        before = text[: err.position]
        line, column = before.count("\n") + 1, err.position - (before.rfind("\n") + 1) + 1
        char = f"#x{err.character:04x}" if isinstance(err.character, int) else shown(err.character)
        return f"line {line}, column {column}: invalid YAML: unacceptable character {char}: {err.reason}"
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = clip(getattr(err, "problem", None) or str(err), PROBLEM_CHARS)
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and context_mark is not None:
        problem += f" ({clip(context)} that starts on line {context_mark.line + 1})"
    return f"{where}invalid YAML: {problem}"
