"""Safe YAML for config files: duplicate keys rejected, ``1e-3`` read as a number.

PyYAML's SafeLoader keeps the last of two equal keys (a silent override) and reads
``1e-3`` as a string (YAML 1.1 wants ``1.0e-3``); `read_yaml` does neither, and its errors
name the file, the line and the column.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from nas.errors import ConfigError


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
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{file}: cannot read the {what} ({err}).") from None
    try:
        return text, load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and context_mark is not None:
            problem += f" ({context} that starts on line {context_mark.line + 1})"
        raise ConfigError(f"{file}: {where}invalid YAML: {problem}. Fix the YAML there.") from None
