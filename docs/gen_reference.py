"""Write docs/reference.md, the experiment YAML reference, from the config classes.

Every key an experiment file may hold is a field of a frozen dataclass checked by
`nas.config.validate`; its type is the annotation, its default and rule are given where it
is declared (``setting(default, rule)``), and its help is the comment beside or above it::

    # train images kept after the val split, balanced; None: all
    train_subset: int | None = setting(None, at_least(NUM_CLASSES, "(one per class)") & ...)

So this script walks the classes of each section (dataset, recipe, space, search, pruner,
confirm, resources, budgets) and writes one table per class: key, type, default, allowed
values, help. The page cannot drift from the code: `tests/test_docs.py` regenerates it,
fails when the committed page differs, and fails when a field has no help comment.

    python docs/gen_reference.py           # rewrite docs/reference.md
    python docs/gen_reference.py --check   # exit 1 if docs/reference.md is out of date
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import sys
import textwrap
import tokenize
import typing
from pathlib import Path
from typing import Any

from nas.config import experiment, pruner, space, validate
from nas.data.config import DataConfig
from nas.models.arch import STAGES, ArchConfig, DropConfig, ExitConfig, StageConfig
from nas.models.tricks import TricksConfig
from nas.search.pruning import PILOT, PILOT_PAYS_FROM
from nas.training.recipe import Recipe, SlimmableConfig

PAGE = Path(__file__).resolve().parent / "reference.md"

# ----------------------------------------------------------------------------- help: the comments in the source


def field_help(cls: type) -> dict[str, str]:
    """Each field's help: the comment lines right above its declaration and the comment at
    the end of it, joined. Section banners (``# -- the loop --``) are not help."""
    lines, _ = inspect.getsourcelines(cls)
    source = textwrap.dedent("".join(lines))
    comments = _comments(source)  # line number -> comment text
    tree = ast.parse(source).body[0]
    assert isinstance(tree, ast.ClassDef)
    out: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        line = node.lineno - 1
        while line in comments and _is_comment_line(source, line):
            if not comments[line].startswith("--"):
                above.insert(0, comments[line])
            line -= 1
        after = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        out[node.target.id] = " ".join(above + after).strip()
    return out


def _comments(source: str) -> dict[int, str]:
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string.lstrip("#").strip()
    return found


def _is_comment_line(source: str, lineno: int) -> bool:
    return source.splitlines()[lineno - 1].lstrip().startswith("#")


# ----------------------------------------------------------------------------- type, default, allowed values


def _type(hint: Any) -> str:
    base, optional = validate._without_none(hint)  # the validator's own reading of `X | None`
    args = typing.get_args(base)
    if typing.get_origin(base) is tuple and args and dataclasses.is_dataclass(args[0]):
        text = f"list of {args[0].__name__}"
    elif typing.get_origin(base) is tuple and args and args[-1] is Ellipsis:
        text = f"list of {validate.type_words(args[0]).split(' ', 1)[1]}s"
    elif dataclasses.is_dataclass(base):
        text = f"mapping ({base.__name__})"
    else:
        text = validate.type_words(base).removeprefix("an ").removeprefix("a ")
    return f"{text} or null" if optional else text


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if dataclasses.is_dataclass(value):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in dataclasses.asdict(value).items()) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return repr(value) if isinstance(value, float) else str(value)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{_yaml(f.default)}`"
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "see below" if dataclasses.is_dataclass(value) else f"`{_yaml(value)}`"
    return "required"


def _allowed(f: dataclasses.Field) -> str:
    rule = f.metadata.get("rule")
    if rule is None:
        return ""
    if rule.choices:
        return ", ".join(f"`{c}`" for c in rule.choices)
    return rule.words


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _nested_class(hint: Any) -> type | None:
    """The config class a field holds (`X`, `X | None`, `tuple[X, ...]`), or None."""
    base, _ = validate._without_none(hint)
    args = typing.get_args(base)
    if typing.get_origin(base) is tuple and args and dataclasses.is_dataclass(args[0]):
        base = args[0]
    return base if dataclasses.is_dataclass(base) else None


def class_table(cls: type, keys: dict[str, str] | None = None, notes: dict[str, str] | None = None) -> list[str]:
    """A markdown table of `cls`'s fields, under a line naming the class.

    Args:
        keys: a field's key cell when it is not the field's name (dotted `space` keys).
        notes: words added to a field's help.
    """
    hints = typing.get_type_hints(cls)
    help_ = field_help(cls)
    rows = [f"`{cls.__module__}.{cls.__qualname__}`: {_doc(cls)}", "",
            "| key | type | default | allowed | help |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        key = (keys or {}).get(f.name, f"`{f.name}`")
        text = " ".join(t for t in (help_[f.name], (notes or {}).get(f.name, "")) if t)
        nested = _nested_class(hints[f.name])
        if nested is not None and not (notes or {}).get(f.name):
            text = " ".join(t for t in (text, f"Its keys: the `{nested.__name__}` table.") if t)
        rows.append("| " + " | ".join(_cell(c) for c in (
            key, _type(hints[f.name]), _default(f), _allowed(f), text)) + " |")
    return rows


def _doc(cls: type) -> str:
    """The first paragraph of a class's docstring, on one line."""
    return " ".join(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].split())


# ----------------------------------------------------------------------------- the sections


def _section(title: str, intro: str, cls: type, notes: dict[str, str] | None = None) -> list[str]:
    return [f"## {title}", "", intro, "", *class_table(cls, notes=notes), ""]


def _arch_keys(cls: type, prefixes: tuple[str, ...]) -> dict[str, str]:
    """Key cells for the fields of a nested architecture class: every dotted `space` key."""
    return {f.name: " ".join(f"`{p}.{f.name}`" if p else f"`{f.name}`" for p in prefixes)
            for f in dataclasses.fields(cls)}


def _pruner_options() -> list[str]:
    """Per pruner kind, its options: the Optuna constructor's keyword arguments, plus nas's own."""
    rows = ["| kind | Optuna class | options (default) |", "|---|---|---|"]
    for kind, cls in pruner.PRUNERS.items():
        params = [p for name, p in inspect.signature(cls).parameters.items()
                  if name != "wrapped_pruner" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        params += [pruner._NAS_OPTIONS[name] for name in pruner.NAS_PRUNER_OPTIONS.get(kind, ())]
        # a default that depends on the search, in words (nas.search.pruning.pilot_size)
        words = {"pilot": f"{PILOT} in a search of at least {PILOT_PAYS_FROM} architectures with one seed each, else 0"}
        shown = [f"`{p.name}`" + (" (required)" if p.default is p.empty else f" ({words.get(p.name) or _yaml(p.default)})")
                 for p in params]
        if kind == "patient":
            shown.append("`wrapped` (a pruner mapping)")
        rows.append(f"| `{kind}` | `optuna.pruners.{cls.__name__}` | {', '.join(shown) or 'none'} |")
    return rows


def _space_entries() -> list[str]:
    rows = ["| entry | options besides `when` | example |", "|---|---|---|"]
    examples = {"choice": "`L1.residual: {choice: [0, 1]}`", "int": "`L2.extra: {int: [0, 2], step: 1}`",
                "float": "`drop.rate: {float: [0.0, 0.3], step: 0.1}`", "fixed": "`width: {fixed: 0.25}`"}
    for kind in space.KINDS:
        options = sorted(space._ENTRY_OPTIONS[kind] - {"when"})
        rows.append(f"| `{kind}` | {', '.join(f'`{o}`' for o in options) or 'none'} | {examples[kind]} |")
    return rows


def reference() -> str:
    """The whole page."""
    stage_keys = tuple(STAGES)
    out = [
        "# Experiment YAML reference",
        "",
        "<!-- Generated by docs/gen_reference.py from the config classes; do not edit by hand:",
        "     run `make reference` (tests/test_docs.py fails when this page is out of date). -->",
        "",
        "One file is one experiment. Its top-level keys are "
        + ", ".join(f"`{s}`" for s in experiment.SECTIONS)
        + "; any other key is refused. A key left out takes the default below. Every value is "
        "checked by `load_experiment` before anything runs: a bad one is one line naming the file, "
        "the key path, the rule and the value, and exit code 2. How the sections fit together, with "
        "an annotated example: [The experiment YAML](experiment.md).",
        "",
        "## name",
        "",
        f"A string: the experiment's name in the store (default: the file's stem); letters, digits, "
        f"`_`, `.` or `-`, starting with a letter or digit, at most {experiment.NAME_LENGTH} characters.",
        "",
    ]
    out += _section("dataset", "`dataset:` where CIFAR-10 lives, how it is split and augmented. Besides "
                    "the fields below, `name` names the dataset: " + ", ".join(f"`{d}`" for d in experiment.DATASETS)
                    + " (the default). A relative `root` is relative to the YAML file.", DataConfig)
    out += _section("recipe", "`recipe:` how every trial trains.", Recipe)
    out += _section("recipe.slimmable", "`recipe.slimmable:` US-Nets training (a mapping turns it on).",
                    SlimmableConfig)
    out += ["## space", "",
            "`space:` maps dotted architecture keys (below) to entries saying how each is searched. "
            "Every entry may add `when: {KEY: [values]}`: it is active only when each named key took one "
            "of those values (conditions are data, never evaluated as code). `arch: {choice: [base, "
            "\"R:L1\", ...]}` lists whole architectures by their short names; the other entries apply on "
            "top of the named one.", "", *_space_entries(), "",
            "The architecture keys, each a field of `nas.models.arch.ArchConfig` or of a part of it; a key "
            "left out of the space keeps its default.", ""]
    out += ["### Network", "", *class_table(ArchConfig), ""]
    out += ["### Stages: `L1`, `L2`, `L3`", "", *class_table(StageConfig, _arch_keys(StageConfig, stage_keys)), ""]
    out += ["### drop", "", *class_table(DropConfig, _arch_keys(DropConfig, ("drop",))), ""]
    out += ["### exits", "", *class_table(ExitConfig, _arch_keys(ExitConfig, ("exits",))), ""]
    out += ["### tricks", "", *class_table(TricksConfig, _arch_keys(TricksConfig, ("tricks",))), ""]
    out += _section("search", "`search:` how architectures are chosen in the search phase.",
                    experiment.SearchSettings)
    out += _section("search.objectives", "`search.objectives:` a list of mappings; the first accuracy is what "
                    "pruning watches.", experiment.Objective)
    out += _section("search.pruner", "`search.pruner:` a mapping with `kind` and that pruner's options "
                    "written beside it (`{kind: median, n_startup_trials: 5}`); options are checked by name "
                    "and type, then by Optuna's own constructor. How nas's `margin` and `pilot` decide: "
                    "[the pruning rule](statistics.md#pruning).", pruner.PrunerSpec,
                    {"options": "Written beside `kind`, not under an `options:` key: the table below."})
    out += ["The options of each kind (Optuna's constructor arguments; `margin` and `pilot` are nas's):", "",
            *_pruner_options(), ""]
    out += _section("confirm", "`confirm:` the confirm phase ([the race](statistics.md#the-confirm-race)).",
                    experiment.ConfirmSettings)
    out += _section("resources", "`resources:` what one trial gets, and how many run at once.",
                    experiment.Resources)
    out += _section("tracking", "`tracking:` where `nas launch` also writes its results as it goes "
                    "([MLflow](mlflow.md)).", experiment.Tracking)
    out += ["## budgets", "",
            "`budgets:` named overrides, chosen with `nas launch SPACE.yaml --budget NAME`: each maps "
            "sections (" + ", ".join(f"`{s}`" for s in experiment.BUDGET_SECTIONS) + ") to values deep-merged "
            "over the file's; a space entry and the pruner are replaced whole. A bad value from a budget "
            "is named by its path there (`budgets.cpu.recipe.epochs`).", ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    text = reference()
    if "--check" in argv:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run `make reference` (python docs/gen_reference.py).", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
