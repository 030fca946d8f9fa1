"""`nas launch`: search an experiment's space, then confirm the best."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from nas.cli.common import (
    AddressOption,
    DataRootOption,
    DbOption,
    console,
    exit_on_user_error,
    is_file,
    mask_url,
)
from nas.cli.ray_session import check_ray_address, start_ray
from nas.cli.tables import print_front
from nas.errors import ConfigError, clip


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
    with exit_on_user_error():
        _launch_command(space, budget, address, db, data_root)


def _launch_command(space: Path, budget: str | None, address: str | None, db: str | None, data_root: str | None) -> None:
    import torch

    from nas.config.experiment import list_budgets, load_experiment
    from nas.data.archive import ensure_cifar10, resolve_data_root
    from nas.db import Store, resolve_db_url
    from nas.db.engine import probe
    from nas.db.lease import refuse_if_held

    # Each check fails fast and names what it checked, in this order: the arguments, the
    # config, the store, the data, Ray. Nothing is written before they all pass.
    if not is_file(space):
        raise ConfigError(f"{clip(str(space))}: no such file; pass an experiment YAML such as search_spaces/cifar_fast.yaml.")
    check_ray_address(address)
    if budget is None and not torch.cuda.is_available() and "cpu" in list_budgets(space):
        budget = "cpu"
        console.print(f"no GPU found: using the `cpu` budget of {escape(str(space))} (--budget none for the full space)")
    spec = load_experiment(space, None if budget == "none" else budget)
    if spec.tracking.mlflow:  # tracking: {mlflow: URI} needs MLflow installed: say so before anything runs
        from nas.mlflow_export import require_mlflow

        require_mlflow()
    db_url = resolve_db_url(db)
    probe(db_url)  # scheme, reachable, a nas store or empty: before the data is fetched
    refuse_if_held(db_url, spec.name)  # another live writer of this experiment
    root = resolve_data_root(data_root, spec.dataset.root)
    ensure_cifar10(root)  # download (or fail with where to put it) before any trial starts

    start_ray(address)  # an unreachable --address fails within seconds (check_ray_address, then a TCP probe)
    from nas.search.launch import launch as run_launch

    with Store.open(db_url) as store:
        console.print(f"experiment {escape(spec.name)!s} -> {escape(mask_url(db_url))}")
        run_launch(spec, store=store, db_url=db_url, data_root=str(root), log=lambda line: console.print(escape(line)))
        print_front(store, spec.name)
