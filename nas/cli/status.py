"""`nas status` and `nas list`: read-only views of the store, as tables or as data (--format)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from nas.cli.common import DbOption, console, exit_on_user_error
from nas.cli.output import Format, FormatOption, OutputOption, check_output, write_frame
from nas.cli.tables import print_experiments, print_front, print_pruned, print_rank_correlation


def status(
    experiment: Annotated[str | None, typer.Argument(help="Experiment name. [default: list them all]")] = None,
    db: DbOption = None,
    fmt: FormatOption = Format.TABLE,
    output: OutputOption = None,
) -> None:
    """Show an experiment's trial counts and its architectures ranked by Pareto front.

    Without an experiment name, lists the experiments in the store (like `nas list`).
    With --format csv, json or parquet: the architectures of the phase the table shows
    (confirm, else search), with the columns of `nas results --what architectures`.
    Reads the store only; safe while a search is running.
    """
    with exit_on_user_error():
        check_output(fmt, output)
        if fmt != Format.TABLE:
            _write_status(experiment, db, fmt, output)
            return
        from nas.db import Store, resolve_db_url
        from nas.db.lease import holder

        with Store.open(resolve_db_url(db), read_only=True) as store:
            if experiment is None:
                print_experiments(store)
                return
            from nas.trials.experiment import require_experiment

            found = require_experiment(store, experiment)
            counts: dict[tuple[str, str], int] = {}
            for trial in store.trials(experiment_id=found.id):
                key = (str(trial.phase), str(trial.status))
                counts[key] = counts.get(key, 0) + 1
            console.print(f"[bold]{escape(experiment)}[/] ({found.status}), started {found.created_at:%Y-%m-%d %H:%M}")
            writer = holder(store.engine, experiment)
            if writer is not None:  # a live writer, or a killed one's lease that the next run takes over
                state = "stopped; `nas launch` resumes it" if writer.is_stale() else "running"
                console.print(f"  writer: {escape(writer.describe())} ({state})")
            for (phase, state), n in sorted(counts.items()):
                console.print(f"  {phase:<8} {state:<11} {n}")
            print_front(store, experiment)
            print_pruned(store, found.id)
            print_rank_correlation(store, experiment, found.id)


def list_experiments(db: DbOption = None, fmt: FormatOption = Format.TABLE, output: OutputOption = None) -> None:
    """List the experiments in the store with their trial counts and best accuracy."""
    with exit_on_user_error():
        check_output(fmt, output)
        if fmt != Format.TABLE:
            _write_status(None, db, fmt, output)
            return
        from nas.db import Store, resolve_db_url

        with Store.open(resolve_db_url(db), read_only=True) as store:
            print_experiments(store)


def _write_status(experiment: str | None, db: str | None, fmt: Format, output) -> None:
    """The data behind the table: the experiments, or one experiment's shown architectures."""
    from nas.api import open_results

    with open_results(db) as store:
        if experiment is None:
            frame = store.experiments()
        else:
            frame = store.experiment(experiment).architectures()
            # the phase the table shows: confirm once it has results, else search
            shown = "confirm" if (frame["phase"] == "confirm").any() else "search"
            frame = frame[frame["phase"] == shown].reset_index(drop=True)
    write_frame(frame, fmt, output)
