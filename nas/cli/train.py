"""`nas train`: train one architecture and record it; how `--arch` is read."""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from nas.cli.common import (
    DataRootOption,
    DbOption,
    console,
    err_console,
    exit_on_user_error,
    given,
    is_file,
)
from nas.cli.tables import print_exit_curve, print_summary, print_width_curve
from nas.config.experiment import MAX_CPUS, name_problem
from nas.config.yaml_io import read_yaml
from nas.errors import ConfigError, clip, reject_unknown_keys

MAX_SEED = 2**31 - 1  # trials.seed is an Integer column (32 bits on PostgreSQL)


def train(
    arch: Annotated[
        str,
        typer.Option(
            "--arch",
            help="The architecture: a YAML/JSON file (a bare arch mapping, or a config.yaml from "
            "`nas export` with arch/recipe/dataset sections), inline JSON such as "
            "'{\"L1\": {\"residual\": 1}, \"L3\": {\"residual\": 1}}', or the short form 'R:L1+L3 X:L2'.",
        ),
    ],
    epochs: Annotated[int | None, typer.Option(help="Passes over the training split. [default: 24]")] = None,
    seed: Annotated[int, typer.Option(help="Draws the weights, batch order and augmentation.")] = 0,
    width: Annotated[float | None, typer.Option(help="Channel multiplier; overrides the architecture's.")] = None,
    train_subset: Annotated[
        int | None, typer.Option(help="Train on this many images (class-balanced). [default: all]")
    ] = None,
    val_size: Annotated[
        int | None, typer.Option(help="Images held out of train for validation. [default: 5000]")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per SGD step. [default: 512]")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate. [default: 0.4]")] = None,
    experiment: Annotated[str, typer.Option(help="Experiment the trial is recorded under.")] = "train",
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch. [default: all cores]", min=1)
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda. [default: cuda when present]")] = None,
    slimmable_min: Annotated[
        float | None,
        typer.Option(help="Train a universally slimmable net (US-Nets) down to this ratio of --arch's width, "
                     "and print its accuracy per width. [default: off; 0.25 when another --slimmable-* is given]"),
    ] = None,
    slimmable_max: Annotated[
        float | None, typer.Option(help="US-Nets: the largest width ratio trained. [default: 1.0]")
    ] = None,
    slimmable_samples: Annotated[
        int | None,
        typer.Option(help="US-Nets: widths trained per step (the max, the min and the rest random). [default: 4]"),
    ] = None,
    db: DbOption = None,
    data_root: DataRootOption = None,
) -> None:
    """Train one architecture on CIFAR-10 and record it in the store.

    Prints each epoch (loss, accuracy, seconds) and a summary. The trial, its epochs and
    the architecture (canonical config, params, FLOPs) are written to the store as they
    happen, so an interrupted run keeps what it finished.

    Example: nas train --arch R:L1+L3 --width 0.25 --epochs 4 --train-subset 10000
    """
    with exit_on_user_error():
        _train_command(
            arch_text=arch, epochs=epochs, seed=seed, width=width, train_subset=train_subset,
            val_size=val_size, batch_size=batch_size, lr=lr, experiment=experiment,
            threads=threads, device_name=device, db=db, data_root=data_root,
            slimmable=given(min_width=slimmable_min, max_width=slimmable_max, samples=slimmable_samples),
        )


def _train_command(
    *, arch_text, epochs, seed, width, train_subset, val_size, batch_size, lr, experiment,
    threads, device_name, db, data_root, slimmable=None,
) -> None:
    # Imported here so `nas --help` stays fast (torch takes seconds to import).
    from nas.data.archive import resolve_data_root
    from nas.data.tensors import load_data
    from nas.db import Store, resolve_db_url
    from nas.db.engine import probe
    from nas.db.schema import Phase, TrialStatus
    from nas.provenance import code_version, resolve_device
    from nas.provenance import device_name as describe_device
    from nas.training.loop import train as train_model
    from nas.training.recipe import Recipe
    from nas.trials.artifacts import TrialSetup, compute_artifacts
    from nas.trials.costs import count_costs
    from nas.trials.recorder import TrialRecorder

    # 1. Validate everything before touching data or the database.
    if (problem := name_problem(experiment)) is not None:
        raise ConfigError(f"--experiment: {problem}; give such a name.")
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed must be between 0 and {MAX_SEED} (the store's column), but got {seed}.")
    if threads is not None and threads > MAX_CPUS:
        raise ConfigError(f"--threads must be at most {MAX_CPUS}, but got {threads}.")
    spec = read_arch_spec(arch_text)
    try:
        arch_cfg = spec.arch if width is None else spec.arch.replace(width=width)
    except ConfigError as err:
        raise ConfigError(f"--width: {err}") from None
    recipe_fields = {**spec.recipe, **given(epochs=epochs, batch_size=batch_size, lr=lr)}
    if slimmable:  # --slimmable-* flags: over the file's recipe.slimmable, if any
        recipe_fields["slimmable"] = {**(spec.recipe.get("slimmable") or {}), **slimmable}
    recipe = Recipe.from_dict(recipe_fields, source=spec.source + "recipe")
    if recipe.slimmable is not None:
        from nas.models.width_slicing import check_slimmable

        check_slimmable(arch_cfg, source="--slimmable-* (recipe.slimmable)")
    data_fields = {**spec.dataset, **given(train_subset=train_subset, val_size=val_size)}
    yaml_root = data_fields.pop("root", None)
    data_cfg = _data_config(data_fields, source=spec.source + "dataset")
    device = resolve_device(device_name)
    db_url = resolve_db_url(db)
    probe(db_url)  # a wrong --db fails before the data is read, creating nothing

    # 2. Data (may download, or fail with a message saying where to put it).
    data_cfg = replace(data_cfg, root=str(resolve_data_root(data_root, yaml_root)))
    console.print(f"loading CIFAR-10 from {escape(data_cfg.root)}")
    data = load_data(data_cfg, device=device)

    # 3. Record the architecture and the trial, then train.
    setup = TrialSetup(arch=arch_cfg, recipe=recipe, data_cfg=data_cfg, seed=seed)
    params, flops = count_costs(arch_cfg)
    with Store.open(db_url) as store:
        experiment_id = store.ensure_experiment(experiment, code_version=code_version())
        recorder = TrialRecorder(store, experiment_id, setup, Phase.TRAIN, costs=(params, flops),
                                 device=describe_device(device, threads))
        trial_id = recorder.trial_id
        console.print(
            f"trial {trial_id}: [bold]{escape(arch_cfg.short_name())}[/] ({arch_cfg.hash}) "
            f"{params / 1e6:.2f}M params, {flops / 1e6:.1f} MFLOPs/image, seed {seed}, "
            f"{len(data.train_y)} train / {len(data.val_y)} val / {len(data.test_y)} test images"
        )
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[last]}"), console=console, transient=False,
        )
        task = progress.add_task("epochs", total=recipe.epochs, last="")

        def on_epoch(m) -> None:
            recorder.epoch(m.to_dict())
            progress.update(task, advance=1, last=epoch_line(m))
            progress.console.print(epoch_line(m))

        try:
            with progress:
                result = train_model(arch_cfg, recipe, data, data_cfg, seed=seed, device=device,
                                     threads=threads, on_epoch=on_epoch)
        except KeyboardInterrupt:
            recorder.finish(TrialStatus.FAILED, error="interrupted (Ctrl-C)")
            err_console.print(f"interrupted: trial {trial_id} recorded as failed with the epochs it finished")
            raise typer.Exit(130) from None
        except Exception:
            recorder.finish(TrialStatus.FAILED, error=traceback.format_exc())
            raise
        status = TrialStatus.DIVERGED if result.status == "diverged" else TrialStatus.COMPLETED
        artifacts = {}
        if status == TrialStatus.COMPLETED:  # the exit curve (BranchyNet), the width curve (US-Nets)
            artifacts = compute_artifacts(result.model, data, setup, log=console.print)
            recorder.artifacts(artifacts)
        recorder.finish(status, train_seconds=result.train_seconds)

    print_summary(trial_id, arch_cfg, result, params, flops, db_url)
    if "exit_curve" in artifacts:
        print_exit_curve(arch_cfg, artifacts["exit_curve"])
    if "width_curve" in artifacts:
        print_width_curve(arch_cfg, recipe.slimmable, artifacts["width_curve"])
    if status == TrialStatus.DIVERGED:
        err_console.print(
            f"[yellow]diverged:[/] the training loss became non-finite at epoch {result.final.epoch + 1}; "
            "try a lower --lr."
        )


def epoch_line(m) -> str:
    val = "" if m.val_acc is None else f"val {m.val_acc:.2%}  "
    test = "" if m.test_acc is None else f"test {m.test_acc:.2%}  "
    return f"epoch {m.epoch + 1}: loss {m.train_loss:.3f}  {val}{test}{m.epoch_seconds:.1f} s"


@dataclass(frozen=True)
class ArchSpec:
    """What `--arch` named: the architecture, plus recipe/dataset sections from a file."""

    arch: Any  # nas.models.ArchConfig (imported lazily: torch is slow to import)
    recipe: dict[str, Any]
    dataset: dict[str, Any]
    source: str  # prefix of key paths in error messages, e.g. "config.yaml: "


def read_arch_spec(text: str) -> ArchSpec:
    """Read `--arch`: a file, inline JSON/YAML mapping, or a short form like ``R:L1+L3``."""
    from nas.models import ArchConfig, parse_short_name

    path = Path(text)
    # A string no file can be called (too long, a NUL byte) is no path: it is read as a short form.
    named_file = _suffix(path) in {".yaml", ".yml", ".json"} or is_file(path)
    if text.strip().startswith(("{", "[")) or not named_file:
        if text.strip().startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise ConfigError(f"--arch: not valid JSON ({err}); quote the whole mapping.") from None
            return ArchSpec(ArchConfig.from_dict(data, source="--arch"), {}, {}, "--arch ")
        return ArchSpec(parse_short_name(text), {}, {}, "--arch ")
    if not is_file(path):
        raise ConfigError(f"--arch {clip(text)}: no such file.")
    # The experiment files' reader: bounded depth and alias expansion, one-line errors.
    _, data = read_yaml(text, what="architecture file")
    path = clip(text)  # named in messages below
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level.")
    if "arch" not in data:
        return ArchSpec(ArchConfig.from_dict(data, source=f"{path}: arch"), {}, {}, f"{path}: ")
    known = {"arch", "recipe", "dataset", "metrics", "experiment", "code_version", "hash", "short_name"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: unknown top-level key; expected arch, recipe, dataset.")
    sections = {}
    for name in ("recipe", "dataset"):
        section = data.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: {name}: expected a mapping.")
        sections[name] = section
    arch_cfg = ArchConfig.from_dict(data["arch"] or {}, source=f"{path}: arch")
    return ArchSpec(arch_cfg, sections["recipe"], sections["dataset"], f"{path}: ")


def _suffix(path: Path) -> str:
    try:
        return path.suffix
    except ValueError:  # pathlib refuses some names ("." alone)
        return ""


def _data_config(fields: dict[str, Any], *, source: str):
    from dataclasses import fields as dc_fields

    from nas.data.config import DataConfig

    reject_unknown_keys(fields, (f.name for f in dc_fields(DataConfig)), source)
    try:
        return DataConfig(**fields)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{source}: {err}") from None
