"""`nas export-mlflow`: an experiment as MLflow runs, one parent and a nested child per trial."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from nas.cli.common import DbOption, console, exit_on_user_error, open_existing_store


def export_mlflow(
    experiment: Annotated[str, typer.Argument(help="A launched experiment (see `nas list`).")],
    tracking_uri: Annotated[str, typer.Option(
        "--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_default=False,
        help="The MLflow tracking server (http://host:5000) or store (sqlite:///mlflow.db). "
             "[default: $MLFLOW_TRACKING_URI]")],
    mlflow_experiment: Annotated[str | None, typer.Option(
        "--mlflow-experiment", help="The MLflow experiment to write into, created if new. [default: the "
                                    "experiment's name]")] = None,
    artifact_location: Annotated[str | None, typer.Option(
        "--artifact-location", help="Where a new MLflow experiment keeps artifacts (the winner's config.yaml). "
                                    "[default: the tracking server's]")] = None,
    db: DbOption = None,
) -> None:
    """Write an experiment to MLflow: one parent run (the search section as params) with a nested
    child run per trial (the architecture's dimensions and the recipe as params, per-epoch curves
    at step = epoch, finals, tags for phase, status, decision, seed, code version).

    Run it again at any time: it adds new trials and completes the ones that were still running,
    and never duplicates a run. Reads the store only. Needs MLflow (pip install 'nas[mlflow]').

    Example: nas export-mlflow cifar_fast --tracking-uri sqlite:///mlflow.db
    """
    with exit_on_user_error():
        from nas.db import resolve_db_url
        from nas.mlflow_export import export_experiment, require_mlflow

        require_mlflow()  # before the store is opened: the fix is an install, not a URL
        with open_existing_store(resolve_db_url(db), read_only=True) as store:
            report = export_experiment(store, experiment, tracking_uri, mlflow_experiment=mlflow_experiment,
                                       artifact_location=artifact_location)
    console.print(
        f"exported [bold]{escape(experiment)}[/] to MLflow experiment {report.mlflow_experiment_id}, parent run "
        f"{report.parent_run_id}: {report.created} child runs created, {report.completed} brought up to date, "
        f"{report.unchanged} unchanged.", highlight=False)
    console.print(escape(report.artifact), highlight=False)
