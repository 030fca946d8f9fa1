"""The `nas` command line.

Every command validates all of its input before it touches data or the database; a
problem the user can fix prints one message naming it and exits with code 2.
"""

from __future__ import annotations

import json
import sys
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Iterator

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nas.errors import ConfigError, NasError, reject_unknown_keys

app = typer.Typer(
    name="nas",
    help=(
        "Neural-architecture search and ablations for fast residual CNNs on CIFAR-10.\n\n"
        "Results go to an SQL store: a SQLite file ./nas.db by default, or any SQLAlchemy "
        "URL given with --db or NAS_DB (PostgreSQL for a cluster)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
# Piped or captured output (CI logs, tests) has no terminal width: keep lines whole.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="SQLAlchemy URL or SQLite file path of the store. [default: $NAS_DB, else ./nas.db]"),
]
AddressOption = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Join an existing Ray cluster by its GCS address (HEAD:6379, or auto on a cluster node); "
        "not a ray:// client address, since this process runs the Tune loop. [default: a local Ray]",
    ),
]
DataRootOption = Annotated[
    str | None,
    typer.Option(
        "--data-root",
        help="Folder holding cifar-10-batches-py/ or cifar-10-python.tar.gz. "
        "[default: $NAS_DATA_DIR, else ~/.cache/nas/data, downloaded on first use]",
    ),
]


@contextmanager
def _exit_on_user_error() -> Iterator[None]:
    """Turn a `NasError` into one red line on stderr and exit code 2."""
    try:
        yield
    except NasError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}")
        raise typer.Exit(err.exit_code) from None


# ----------------------------------------------------------------------------- nas train


@app.command()
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
    with _exit_on_user_error():
        _train_command(
            arch_text=arch, epochs=epochs, seed=seed, width=width, train_subset=train_subset,
            val_size=val_size, batch_size=batch_size, lr=lr, experiment=experiment,
            threads=threads, device_name=device, db=db, data_root=data_root,
            slimmable=_given(min_width=slimmable_min, max_width=slimmable_max, samples=slimmable_samples),
        )


def _train_command(
    *, arch_text, epochs, seed, width, train_subset, val_size, batch_size, lr, experiment,
    threads, device_name, db, data_root, slimmable=None,
) -> None:
    # Imported here so `nas --help` stays fast (torch takes seconds to import).
    import torch

    from nas.data.archive import resolve_data_root
    from nas.data.tensors import load_data
    from nas.db import Store, resolve_db_url
    from nas.models import build_model, count_flops, count_params
    from nas.provenance import code_version, default_device, device_name as describe_device
    from nas.training.evaluate import exit_curve
    from nas.training.loop import train as train_model
    from nas.training.recipe import Recipe

    # 1. Validate everything before touching data or the database.
    spec = read_arch_spec(arch_text)
    arch_cfg = spec.arch if width is None else spec.arch.replace(width=width)
    recipe_fields = {**spec.recipe, **_given(epochs=epochs, batch_size=batch_size, lr=lr)}
    if slimmable:  # --slimmable-* flags: over the file's recipe.slimmable, if any
        recipe_fields["slimmable"] = {**(spec.recipe.get("slimmable") or {}), **slimmable}
    recipe = Recipe.from_dict(recipe_fields, source=spec.source + "recipe")
    if recipe.slimmable is not None:
        from nas.models.width_slicing import check_slimmable

        check_slimmable(arch_cfg, source="--slimmable-* (recipe.slimmable)")
    data_fields = {**spec.dataset, **_given(train_subset=train_subset, val_size=val_size)}
    yaml_root = data_fields.pop("root", None)
    data_cfg = _data_config(data_fields, source=spec.source + "dataset")
    device = torch.device(device_name) if device_name else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu.")
    db_url = resolve_db_url(db)

    # 2. Data (may download, or fail with a message saying where to put it).
    data_cfg = replace(data_cfg, root=str(resolve_data_root(data_root, yaml_root)))
    console.print(f"loading CIFAR-10 from {escape(data_cfg.root)}")
    data = load_data(data_cfg, device=device)

    # 3. Record the architecture and the trial, then train.
    model = build_model(arch_cfg)
    params, flops = count_params(model), count_flops(model)
    store = Store.open(db_url)
    with store:
        experiment_id = store.ensure_experiment(experiment, code_version=code_version())
        store.upsert_architecture(arch_cfg.hash, arch_cfg.to_json(), arch_cfg.short_name(), params, flops)
        recipe_json = json.dumps({"recipe": recipe.to_dict(), "dataset": asdict(data_cfg)}, sort_keys=True)
        trial_id = store.start_trial(
            experiment_id, arch_cfg.hash, seed, "train", epochs_planned=recipe.epochs,
            recipe_json=recipe_json, device=describe_device(device, threads), code_version=code_version(),
        )
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
            store.record_epoch(
                trial_id, m.epoch, train_loss=m.train_loss, train_acc=m.train_acc, val_acc=m.val_acc,
                test_acc=m.test_acc, epoch_seconds=m.epoch_seconds, cumulative_seconds=m.cumulative_seconds,
            )
            progress.update(task, advance=1, last=_epoch_line(m))
            progress.console.print(_epoch_line(m))

        try:
            with progress:
                result = train_model(arch_cfg, recipe, data, data_cfg, seed=seed, device=device,
                                     threads=threads, on_epoch=on_epoch)
        except KeyboardInterrupt:
            store.finish_trial(trial_id, "failed", error="interrupted (Ctrl-C)")
            err_console.print(f"interrupted: trial {trial_id} recorded as failed with the epochs it finished")
            raise typer.Exit(130) from None
        except Exception:
            store.finish_trial(trial_id, "failed", error=traceback.format_exc())
            raise
        status = "diverged" if result.status == "diverged" else "completed"
        curve = None
        if arch_cfg.exits.stages and status == "completed":  # BranchyNet: the curve across exit thresholds
            curve = exit_curve(result.model, arch_cfg, data, recipe.eval_batch_size)
            store.save_exit_curve(trial_id, curve.split, [asdict(p) for p in curve.points])
        width_curve = None
        if recipe.slimmable is not None and status == "completed":  # US-Nets: accuracy per width
            from nas.training.usnets import accuracy_at_widths, curve_widths

            console.print("measuring every width (BN statistics recomputed per width) ...")
            width_curve = accuracy_at_widths(result.model, data, data_cfg, recipe,
                                             curve_widths(recipe.slimmable), seed=seed)
            store.save_width_curve(trial_id, [asdict(p) for p in width_curve.points])
        store.finish_trial(trial_id, status, train_seconds=result.train_seconds)

    _print_summary(trial_id, arch_cfg, result, params, flops, db_url)
    if curve is not None:
        _print_exit_curve(arch_cfg, curve)
    if width_curve is not None:
        _print_width_curve(arch_cfg, recipe.slimmable, width_curve)
    if status == "diverged":
        err_console.print(
            f"[yellow]diverged:[/] the training loss became non-finite at epoch {result.final.epoch + 1}; "
            "try a lower --lr."
        )


def _epoch_line(m) -> str:
    val = "" if m.val_acc is None else f"val {m.val_acc:.2%}  "
    test = "" if m.test_acc is None else f"test {m.test_acc:.2%}  "
    return f"epoch {m.epoch + 1}: loss {m.train_loss:.3f}  {val}{test}{m.epoch_seconds:.1f} s"


def _print_exit_curve(arch_cfg, curve) -> None:
    """The early-exit curve: accuracy, mean MFLOPs per image and exit shares per threshold."""
    names = [*arch_cfg.exits.stages, "final"]
    table = Table(title=f"early exits ({curve.split} images): an image leaves at the first side exit "
                        "whose softmax entropy / ln(10) is below the threshold")
    for column in ("threshold", "accuracy", "MFLOPs / image", *(f"exit {n}" for n in names)):
        table.add_column(column, justify="right")
    previous = None
    for p in curve.points:
        mark = " *" if p.threshold == arch_cfg.exits.threshold else ""
        same = previous is not None and (p.accuracy, p.mean_flops, p.exit_shares) == previous
        previous = (p.accuracy, p.mean_flops, p.exit_shares)
        if same and not mark:
            continue  # a threshold between the same images' entropies: the row above again
        table.add_row(f"{p.threshold:.4g}{mark}", f"{p.accuracy:.2%}", f"{p.mean_flops / 1e6:.2f}",
                      *(f"{share:.1%}" for share in p.exit_shares))
    console.print(table)
    console.print("* the architecture's threshold (exits.threshold): its mean_inference_flops objective; "
                  "thresholds that change nothing from the row above are left out")


def _print_width_curve(arch_cfg, slimmable, curve) -> None:
    """A US-Net's accuracy, params and FLOPs per width ratio, each width its family member."""
    from nas.models.width_slicing import width_member

    table = Table(title=f"universally slimmable {arch_cfg.short_name()}: one training, every width "
                        f"(ratios {slimmable.min_width:g}-{slimmable.max_width:g} of its width, "
                        f"{slimmable.samples} per step; BN statistics recomputed per width)")
    for column in ("width ratio", "member", "params", "MFLOPs / image", "val acc", "test acc"):
        table.add_column(column, justify="left" if column == "member" else "right")
    for p in curve.points:
        table.add_row(f"{p.width:g}", escape(width_member(arch_cfg, p.width).short_name()), f"{p.params:,}",
                      f"{p.flops / 1e6:.2f}", "-" if p.val_acc is None else f"{p.val_acc:.2%}",
                      f"{p.test_acc:.2%}")
    console.print(table)


def _print_summary(trial_id, arch_cfg, result, params, flops, db_url) -> None:
    final = result.final
    table = Table(title=f"trial {trial_id}: {arch_cfg.short_name()}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("architecture", f"{arch_cfg.short_name()}  (hash {arch_cfg.hash})"),
        ("status", result.status),
        ("epochs", str(len(result.epochs))),
        ("val accuracy", "-" if final.val_acc is None else f"{final.val_acc:.2%}"),
        ("test accuracy", "-" if final.test_acc is None else f"{final.test_acc:.2%}"),
        ("train seconds", f"{result.train_seconds:.1f} (evaluation excluded)"),
        ("params", f"{params:,}"),
        ("FLOPs / image", f"{flops:,}"),
        ("device", result.device),
        ("store", _mask_url(db_url)),
    ]
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)


# ----------------------------------------------------------------------------- nas launch


@app.command()
def launch(
    space: Annotated[Path, typer.Argument(help="Experiment YAML, e.g. search_spaces/cifar_fast.yaml.")],
    budget: Annotated[
        str | None,
        typer.Option(help="A named budget of the YAML (its `budgets:` section), e.g. cpu. Without a GPU the "
                     "`cpu` budget is chosen automatically; pass --budget none to run the full space anyway."),
    ] = None,
    address: AddressOption = None,
    db: DbOption = None,
    data_root: DataRootOption = None,
) -> None:
    """Search the YAML's architecture space, then confirm the best with repeated seeds.

    Optuna samples architectures (in this process) and its pruner stops poor trials
    early; Ray Tune runs the trials. Every trial and epoch is written to the store as it
    happens. Running the same command again resumes: finished trials are kept, trials
    interrupted by a crash run again, and the confirm phase picks up where it stopped.
    Prints a line per finished trial and, at the end, the Pareto front with 95% CIs.
    """
    with _exit_on_user_error():
        _launch_command(space, budget, address, db, data_root)


def _launch_command(space: Path, budget: str | None, address: str | None, db: str | None, data_root: str | None) -> None:
    import torch

    from nas.data.archive import ensure_cifar10, resolve_data_root
    from nas.db import Store, resolve_db_url
    from nas.config.experiment import list_budgets, load_experiment

    if not space.is_file():
        raise ConfigError(f"{space}: no such file; pass an experiment YAML such as search_spaces/cifar_fast.yaml.")
    if budget is None and not torch.cuda.is_available() and "cpu" in list_budgets(space):
        budget = "cpu"
        console.print(f"no GPU found: using the `cpu` budget of {escape(str(space))} (--budget none for the full space)")
    spec = load_experiment(space, None if budget == "none" else budget)
    db_url = resolve_db_url(db)
    root = resolve_data_root(data_root, spec.dataset.root)
    ensure_cifar10(root)  # download (or fail with where to put it) before any trial starts

    _start_ray(address)
    from nas.search import launch as run_launch

    with Store.open(db_url) as store:
        console.print(f"experiment {escape(spec.name)!s} -> {escape(_mask_url(db_url))}")
        run_launch(spec, store=store, db_url=db_url, data_root=str(root), log=lambda line: console.print(escape(line)))
        _print_front(store, spec.name)


def _start_ray(address: str | None) -> None:
    import logging
    import os

    import ray

    if ray.is_initialized():
        return
    # Trial errors reach the store (trials.error); Ray's own chatter stays in its logs.
    ray.init(address=address, include_dashboard=False, configure_logging=True,
             logging_level=logging.ERROR, log_to_driver=False)
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _print_front(store, experiment: str) -> None:
    from nas.results import arch_results, objectives_of

    rows = arch_results(store, experiment, "confirm") or arch_results(store, experiment, "search")
    if not rows:
        console.print("no completed trials yet")
        return
    phase = rows[0].phase
    # early exits: FLOPs per image at the exit threshold, when the search optimises them
    exits = "mean_inference_flops" in [metric for metric, _ in objectives_of(store, experiment)]
    table = Table(title=f"{experiment}: {phase} results (Pareto front first)")
    columns = ("rank", "architecture", "hash", "seeds", "accuracy (mean ± 95% CI)", "train s", "params", "MFLOPs")
    for column in columns + (("inference MFLOPs",) if exits else ()):
        table.add_column(column, justify="left" if column in ("architecture", "hash") else "right")
    for row in rows:
        acc = row.accuracy
        ci = "" if acc.n < 2 else f" ± {acc.half_width:.2%}"
        table.add_row(
            "front" if row.rank == 0 else str(row.rank), escape(row.short_name), row.arch_hash, str(row.seeds),
            f"{acc.mean:.2%}{ci}", f"{row.train_seconds.mean:.1f}", f"{row.params / 1e6:.2f}M", f"{row.flops / 1e6:.1f}",
            *((f"{row.mean_inference_flops / 1e6:.2f}",) if exits else ()),
        )
    console.print(table)


# ----------------------------------------------------------------------------- nas dashboard


@app.command()
def dashboard(
    db: DbOption = None,
    port: Annotated[int, typer.Option(help="TCP port to serve on.", min=1, max=65535)] = 8501,
) -> None:
    """Browse the store in a web browser: Pareto fronts, learning curves, seed variance,
    pruning savings, parameter importance and ablations.

    Starts the Streamlit app (dashboard/app.py) on http://localhost:PORT. It opens the
    store read-only, so it never modifies or locks a running search; pages of a running
    experiment refresh themselves. Stop it with Ctrl-C.
    """
    with _exit_on_user_error():
        from nas.dashboard.serve import serve
        from nas.db import resolve_db_url

        console.print(f"dashboard on http://localhost:{port} for {escape(_mask_url(resolve_db_url(db)))}")
        raise typer.Exit(serve(resolve_db_url(db), port))


# ----------------------------------------------------------------------------- nas status / list


@app.command()
def status(
    experiment: Annotated[str | None, typer.Argument(help="Experiment name. [default: list them all]")] = None,
    db: DbOption = None,
) -> None:
    """Show an experiment's trial counts and its architectures ranked by Pareto front.

    Without an experiment name, lists the experiments in the store (like `nas list`).
    Reads the store only; safe while a search is running.
    """
    with _exit_on_user_error():
        from nas.db import Store, resolve_db_url

        with Store.open(resolve_db_url(db), read_only=True) as store:
            if experiment is None:
                _print_experiments(store)
                return
            from nas.results import require_experiment

            found = require_experiment(store, experiment)
            counts: dict[tuple[str, str], int] = {}
            for trial in store.trials(experiment_id=found.id):
                key = (str(trial.phase), str(trial.status))
                counts[key] = counts.get(key, 0) + 1
            console.print(f"[bold]{escape(experiment)}[/] ({found.status}), started {found.created_at:%Y-%m-%d %H:%M}")
            for (phase, state), n in sorted(counts.items()):
                console.print(f"  {phase:<8} {state:<11} {n}")
            _print_front(store, experiment)


@app.command(name="list")
def list_experiments(db: DbOption = None) -> None:
    """List the experiments in the store with their trial counts and best accuracy."""
    with _exit_on_user_error():
        from nas.db import Store, resolve_db_url

        with Store.open(resolve_db_url(db), read_only=True) as store:
            _print_experiments(store)


def _print_experiments(store) -> None:
    table = Table(title="experiments")
    for column in ("name", "status", "trials", "completed", "pruned", "failed", "best accuracy", "started"):
        table.add_column(column)
    for exp in store.experiments():
        trials = store.trials(experiment_id=exp.id)
        by_status = {s: sum(1 for t in trials if str(t.status) == s) for s in ("completed", "pruned", "failed")}
        accs = [t.final_val_acc if t.final_val_acc is not None else t.final_test_acc
                for t in trials if str(t.status) == "completed"]
        accs = [a for a in accs if a is not None]
        table.add_row(
            escape(exp.name), str(exp.status), str(len(trials)), str(by_status["completed"]),
            str(by_status["pruned"]), str(by_status["failed"]), f"{max(accs):.2%}" if accs else "-",
            f"{exp.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


# ----------------------------------------------------------------------------- nas ablate


@app.command()
def ablate(
    experiment: Annotated[str, typer.Argument(help="A launched experiment (see `nas list`).")],
    arch: Annotated[
        str,
        typer.Option(
            "--arch",
            help="The reference: best (the experiment's first confirm result, else search), an "
            "architecture hash (or a unique prefix), or an architecture such as 'R:L1+L3 w=0.25'.",
        ),
    ] = "best",
    repeats: Annotated[
        int | None,
        typer.Option(help="Seeds per variant, paired with the reference's (its confirm seeds). "
                     "[default: the experiment's confirm repeats]"),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and stop; writes nothing.")] = False,
    until_separated: Annotated[
        bool,
        typer.Option("--until-separated",
                     help="Then add paired seeds, one round at a time, to variants still within seed noise."),
    ] = False,
    max_repeats: Annotated[
        int, typer.Option(help="With --until-separated: the most seeds a variant gets.")
    ] = 10,
    address: AddressOption = None,
    db: DbOption = None,
    data_root: DataRootOption = None,
) -> None:
    """Ablate an architecture: switch each component off, one at a time, on paired seeds.

    The plan: from the reference and the experiment's space, each component switched off
    (an extra layer, a residual block, deformable -> plain, drop -> none, pyramid ->
    double, ...) and each ordered knob moved one step to its neighbouring values. It is
    printed before anything runs. Every variant trains, unpruned, on the seeds the
    reference was confirmed with (phase `ablation` in the store; the reference too, on
    seeds it lacks), with the experiment's recipe and data. Then the contribution table:
    per variant the accuracy difference to the reference with a paired 95% CI, the paired
    t-test p-value, Holm-adjusted across variants, whether it matters beyond seed noise,
    and the cost differences. Running it again reuses finished runs.

    Example: nas ablate cifar_fast --repeats 3 --dry-run
    """
    with _exit_on_user_error():
        _ablate_command(experiment, arch, repeats, dry_run, until_separated, max_repeats, address, db, data_root)


def _ablate_command(experiment, arch_text, repeats, dry_run, until_separated, max_repeats, address, db, data_root) -> None:
    from nas.ablation import ablation_seeds, plan_variants, resolve_reference, run_ablation
    from nas.db import resolve_db_url
    from nas.search import stored_spec

    # 1. Validate everything before anything is written (a run may first bring an older
    # store's schema up to date; a dry run opens it read-only).
    if repeats is not None and repeats < 2:
        raise ConfigError(f"--repeats must be at least 2 (a paired CI needs two seeds), but got {repeats}.")
    db_url = resolve_db_url(db)
    with _open_existing_store(db_url, read_only=dry_run) as store:
        spec = stored_spec(store, experiment)
        reference = resolve_reference(store, experiment, arch_text)
        variants = plan_variants(reference, spec.space)
        repeats = repeats if repeats is not None else spec.confirm.repeats
        if repeats < 2:
            raise ConfigError(
                f"experiment {experiment!r} confirms with {repeats} seed; pass --repeats 2 or more "
                "(a paired CI needs two seeds)."
            )
        if until_separated and max_repeats < repeats:
            raise ConfigError(f"--max-repeats must be at least --repeats ({repeats}), but got {max_repeats}.")
        if not variants:
            raise ConfigError(
                f"nothing to ablate: {reference.short_name()} has no component to switch off and the space of "
                f"{experiment!r} gives no neighbouring values; choose another --arch."
            )
        _print_plan(store, experiment, reference, variants, ablation_seeds(repeats))
    if dry_run:
        return

    # 2. Data (may download), then the runs.
    from nas.data.archive import ensure_cifar10, resolve_data_root

    root = resolve_data_root(data_root, spec.dataset.root)
    ensure_cifar10(root)
    _start_ray(address)
    import optuna

    from nas.search import Driver

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _open_existing_store(db_url, read_only=False) as store:
        driver = Driver(spec, store, db_url, str(root), log=lambda line: console.print(escape(line)))
        report = run_ablation(
            driver, reference, variants, repeats, until_separated=until_separated, max_repeats=max_repeats,
            log=lambda line: console.print(escape(line)),
        )
    _print_contributions(report)


def _open_existing_store(db_url: str, *, read_only: bool):
    """Open a store that must exist already (never create an empty database by mistake)."""
    from sqlalchemy.engine import make_url

    from nas.db import Store

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database).expanduser()
        if not path.is_file():
            raise ConfigError(f"no nas database at {path}; check --db or NAS_DB, or run `nas launch` first.")
    return Store.open(db_url, read_only=read_only)


def _print_plan(store, experiment, reference, variants, seeds) -> None:
    from nas.ablation import missing_runs
    from nas.models import build_model, count_flops, count_params

    experiment_id = store.get_experiment(experiment).id

    def to_run(arch) -> int:
        return len(missing_runs(store, experiment_id, [arch], seeds))

    def costs(arch) -> tuple[int, int]:
        model = build_model(arch)
        return count_params(model), count_flops(model)

    ref_params, ref_flops = costs(reference)
    table = Table(title=f"ablation plan: {reference.short_name()} ({reference.hash}) in {experiment}, "
                        f"seeds {seeds[0]}..{seeds[-1]}")
    for column in ("#", "change", "move", "variant", "hash", "params", "MFLOPs", "runs"):
        table.add_column(column, justify="right" if column in ("#", "params", "MFLOPs", "runs") else "left")
    table.add_row("ref", "-", "-", escape(reference.short_name()), reference.hash, f"{ref_params:,}",
                  f"{ref_flops / 1e6:.1f}", str(to_run(reference)))
    total = to_run(reference)
    for i, variant in enumerate(variants, start=1):
        params, flops = costs(variant.arch)
        runs = to_run(variant.arch)
        total += runs
        table.add_row(str(i), escape(variant.change), variant.move, escape(variant.arch.short_name()),
                      variant.arch.hash, f"{params:,}", f"{flops / 1e6:.1f}", str(runs))
    console.print(table)
    console.print(f"{len(variants)} variants x {len(seeds)} paired seeds: {total} runs to do")


def _print_contributions(report) -> None:
    acc = report.reference_accuracy
    ci = "" if acc.n < 2 else f" ± {acc.half_width:.2%}"
    table = Table(
        title=f"{report.experiment}: contributions to {report.reference_name} ({report.reference_hash}), "
              f"accuracy {acc.mean:.2%}{ci} over {acc.n} seeds",
        caption="Δ = variant - reference on the same seeds; 95% CI paired over seeds; p: paired t-test; "
                "Holm: adjusted over the variants; matters: Holm p < 0.05.",
    )
    for column in ("change", "variant", "seeds", "Δ acc (pp)", "95% CI (pp)", "p", "Holm p", "matters",
                   "Δ train s", "Δ params", "Δ MFLOPs"):
        table.add_column(column, justify="left" if column in ("change", "variant", "matters") else "right")
    ref_seconds = report.reference_seconds.mean
    for row in report.rows:
        d = row.accuracy
        ci_text = "-" if d.n < 2 else f"[{d.ci_low * 100:+.2f}, {d.ci_high * 100:+.2f}]"
        seconds = "-" if row.train_seconds != row.train_seconds else f"{row.train_seconds:+.1f}"
        if seconds != "-" and ref_seconds and ref_seconds == ref_seconds:
            seconds += f" ({row.train_seconds / ref_seconds:+.0%})"
        table.add_row(
            escape(row.change), escape(row.short_name), str(d.n),
            "-" if d.mean != d.mean else f"{d.mean * 100:+.2f}", ci_text, _p(d.p_value), _p(row.holm_p),
            "yes" if row.matters else "", seconds, f"{row.params:+,}", f"{row.flops / 1e6:+.1f}",
        )
    console.print(table)


def _p(value: float) -> str:
    if value != value:
        return "-"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


# ----------------------------------------------------------------------------- nas export


@app.command()
def export(
    experiment: Annotated[str, typer.Argument(help="A launched experiment (see `nas list`).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write into (created if needed).")],
    rank: Annotated[
        int | None, typer.Option(help="The K-th confirmed architecture, as `nas status` ranks them (1 = first).")
    ] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="The architecture's hash (see `nas status`).")] = None,
    formats: Annotated[
        str, typer.Option("--format", help="Comma-separated: py (model.py), pt (weights.pt), onnx (model.onnx), "
                          "yaml (config.yaml).")
    ] = "py,pt,onnx,yaml",
    force: Annotated[bool, typer.Option("--force", help="Overwrite files already in --out.")] = False,
    db: DbOption = None,
) -> None:
    """Export one architecture as standalone files: model code, weights, ONNX and config.

    model.py is readable code of exactly that network (its evaluation form) that imports
    only torch; weights.pt is the state_dict of its most accurate confirm seed (load it
    with torch.load(..., weights_only=True), or model.load()); model.onnx is the same
    network for ONNX runtimes; config.yaml holds the canonical config, the recipe and
    data split, the metrics over the confirm seeds with 95% CIs, the experiment and the
    code version, so `nas train --arch config.yaml` retrains it. Reads the store only.

    Example: nas export cifar_fast --rank 1 --out winner/
    """
    with _exit_on_user_error():
        _export_command(experiment, out, rank, arch, formats, force, db)


def _export_command(experiment, out, rank, arch_hash, format_text, force, db) -> None:
    from nas.db import resolve_db_url
    from nas.export import check_onnx_available, export as write_export, parse_formats, select, target_paths

    # 1. Validate everything before anything is written.
    if (rank is None) == (arch_hash is None):
        raise ConfigError("give exactly one of --rank K (a confirmed architecture) or --arch HASH.")
    if rank is not None and rank < 1:
        raise ConfigError(f"--rank counts from 1 (the first confirmed architecture), but got {rank}.")
    formats = parse_formats(format_text)
    if "onnx" in formats:
        check_onnx_available()
    target_paths(out, formats, force=force)
    with _open_existing_store(resolve_db_url(db), read_only=True) as store:
        source = select(store, experiment, rank=rank, arch_hash=arch_hash.strip() if arch_hash else None,
                        need_weights=bool({"pt", "onnx"} & set(formats)))

    # 2. Write (model.py is checked against nas's own network first).
    written = write_export(source, out, formats, force=force)
    console.print(f"exported [bold]{escape(source.arch.short_name())}[/] ({source.arch.hash}) "
                  f"from {escape(experiment)}:")
    for fmt, path in written.items():
        console.print(f"  {escape(str(path))}  ({path.stat().st_size:,} bytes)")
    if "yaml" in written:
        console.print(f"retrain it: nas train --arch {escape(str(written['yaml']))}")


# ----------------------------------------------------------------------------- arch input


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
    if text.strip().startswith(("{", "[")) or not (path.suffix in {".yaml", ".yml", ".json"} or path.exists()):
        if text.strip().startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise ConfigError(f"--arch: not valid JSON ({err}); quote the whole mapping.") from None
            return ArchSpec(ArchConfig.from_dict(data, source="--arch"), {}, {}, "--arch ")
        return ArchSpec(parse_short_name(text), {}, {}, "--arch ")
    if not path.is_file():
        raise ConfigError(f"--arch {text}: no such file.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML/JSON: {err}") from None
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


def _data_config(fields: dict[str, Any], *, source: str):
    from dataclasses import fields as dc_fields

    from nas.data.config import DataConfig

    reject_unknown_keys(fields, (f.name for f in dc_fields(DataConfig)), source)
    try:
        return DataConfig(**fields)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{source}: {err}") from None


def _given(**values: Any) -> dict[str, Any]:
    """The options the user actually passed (None means not given)."""
    return {key: value for key, value in values.items() if value is not None}


def _mask_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - display only
        return url


def main() -> None:
    app()


if __name__ == "__main__":
    main()
