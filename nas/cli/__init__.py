"""The `nas` command line. This module only routes: each command lives in its own module.

Every command validates all of its input before it touches data or the database; a
problem the user can fix prints one message naming it and exits with code 2.
"""

from __future__ import annotations

import typer

from nas.cli import ablate, compare, dashboard, export, export_mlflow, launch, results, status, train

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
# In the order `nas --help` lists them.
app.command()(train.train)
app.command()(launch.launch)
app.command()(dashboard.dashboard)
app.command()(status.status)
app.command(name="list")(status.list_experiments)
app.command()(results.results)
app.command()(compare.compare)
app.command()(ablate.ablate)
app.command()(export.export)
app.command(name="export-mlflow")(export_mlflow.export_mlflow)


def main() -> None:
    app()
