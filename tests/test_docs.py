"""The docs stay true to the code: the YAML reference documents every field of every config
class an experiment file can reach (with help), the committed page is what the generator
writes today, and the README's relative links lead to files and headings that exist.
(`make docs` builds the site with --strict, which checks the links inside docs/.)"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import typing
from pathlib import Path

import pytest

from nas.config.experiment import SECTIONS, ExperimentSpec
from nas.config.space import ARCH_KEYS, SearchSpace
from nas.models.arch import ArchConfig

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", REPO / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config_classes() -> list[type]:
    """Every config class an experiment file reaches: the sections of ExperimentSpec and the
    architecture a `space` entry names (the space itself is entries, not a class's fields),
    and every class nested in those (`X`, `X | None`, `tuple[X, ...]`)."""
    found: list[type] = []

    def visit(hint: object) -> None:
        if dataclasses.is_dataclass(hint) and hint not in found and hint is not SearchSpace:
            found.append(hint)
            for nested in typing.get_type_hints(hint).values():
                visit(nested)
        for arg in typing.get_args(hint):  # X | None, tuple[X, ...]
            visit(arg)

    for hint in typing.get_type_hints(ExperimentSpec).values():
        visit(hint)
    visit(ArchConfig)
    return found


def _tables(page: str) -> dict[str, list[list[str]]]:
    """Class path -> the rows (cells) of the table under the line naming it."""
    tables: dict[str, list[list[str]]] = {}
    current = None
    for line in page.splitlines():
        named = re.match(r"`([\w.]+)`: ", line)
        if named:
            current = tables.setdefault(named.group(1), [])
        elif line.startswith("| ") and current is not None:
            current.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
        elif not line.strip() and current is not None and current:
            current = None
    return tables


def test_the_reference_page_is_what_the_generator_writes_today():
    generated = _generator().reference()
    assert (REPO / "docs" / "reference.md").read_text() == generated, (
        "docs/reference.md is out of date with the config classes: run `make reference`.")


def test_every_field_of_every_config_class_has_a_documented_row():
    classes = _config_classes()
    assert len(classes) >= 12  # the walk found the sections and the architecture's parts
    tables = _tables(_generator().reference())
    for cls in classes:
        path = f"{cls.__module__}.{cls.__qualname__}"
        assert path in tables, f"{path} has no table in the YAML reference"
        rows = {row[0]: row for row in tables[path][1:]}  # past the header
        for f in dataclasses.fields(cls):
            row = next((r for key, r in rows.items() if re.search(rf"`(?:[\w.]+\.)?{f.name}`", key)), None)
            assert row is not None, f"{path}.{f.name} is not in the YAML reference"
            assert row[4], f"{path}.{f.name} has no help: add a comment at or above its declaration"


def test_the_reference_names_every_section_and_every_space_key():
    page = _generator().reference()
    for section in SECTIONS:
        assert f"## {section}\n" in page
    for key in ARCH_KEYS:
        assert f"`{key}" in page, f"space key {key} is not in the YAML reference"


def test_a_field_without_a_help_comment_is_caught():
    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        documented: int = 1  # a count
        bare: int = 2

    help_ = _generator().field_help(Undocumented)
    assert help_ == {"documented": "a count", "bare": ""}


def _github_slug(heading: str) -> str:
    text = re.sub(r"[`*_]", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@pytest.mark.parametrize("link", re.findall(r"\]\(([^)#\s]+)(#[^)\s]*)?\)", README.read_text()))
def test_every_relative_link_in_the_readme_leads_to_a_file_and_heading_that_exist(link):
    target, anchor = link
    if re.match(r"[a-z]+://", target):
        return  # web addresses are not checked offline
    path = REPO / target
    assert path.exists(), f"README links to {target}, which does not exist"
    if anchor:
        headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
        assert anchor[1:] in {_github_slug(h) for h in headings}, f"README links to {target}{anchor}: no such heading"


def test_the_readme_stays_short():
    assert len(README.read_text().splitlines()) <= 250
