"""`nas results`: an experiment's trials, epochs, architectures or ablation, as a table or as data."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from nas.cli.common import DbOption, err_console, exit_on_user_error
from nas.cli.output import Format, FormatOption, OutputOption, check_output, write_frame


class What(enum.StrEnum):
    TRIALS = "trials"
    EPOCHS = "epochs"
    ARCHITECTURES = "architectures"
    ABLATION = "ablation"


# --format table: the columns a terminal has room for; the data formats carry every column
TABLE_COLUMNS = {
    What.TRIALS: ("trial_id", "phase", "status", "short_name", "seed", "accuracy", "train_seconds", "epochs_done"),
    What.EPOCHS: ("trial_id", "short_name", "seed", "epoch", "train_loss", "val_acc", "test_acc",
                  "cumulative_seconds"),
    What.ARCHITECTURES: ("phase", "position", "short_name", "arch_hash", "seeds", "accuracy_mean",
                         "accuracy_ci_low", "accuracy_ci_high", "pareto_front", "front_share", "decision"),
    What.ABLATION: ("reference_name", "change", "seeds", "delta_accuracy", "delta_accuracy_ci_low",
                    "delta_accuracy_ci_high", "study_p", "matters"),
}


def results(
    experiment: Annotated[str, typer.Argument(help="Experiment name (nas list shows them).")],
    what: Annotated[What, typer.Option("--what", help="trials: one row per trial; epochs: per trial and epoch; "
                                                      "architectures: per architecture and phase (mean, 95% CI, "
                                                      "Pareto front, decision); ablation: per variant.",
                                       case_sensitive=False)] = What.TRIALS,
    fmt: FormatOption = Format.TABLE,
    output: OutputOption = None,
    db: DbOption = None,
) -> None:
    """Print or write an experiment's results: the frames `nas.open(url).experiment(name)` gives.

    The columns and their dtypes are listed in nas/frames.py (COLUMNS). Reads the store only;
    safe while a search is running.
    """
    with exit_on_user_error():
        check_output(fmt, output)
        from nas.api import open_results
        from nas.cli.tables import print_frame

        with open_results(db) as store:
            frame = store.experiment(experiment).frame(what.value)
        if fmt == Format.TABLE:
            print_frame(frame[list(TABLE_COLUMNS[what])], f"{experiment}: {what.value}")
            err_console.print(f"{len(frame.columns) - len(TABLE_COLUMNS[what])} more columns with --format csv, json "
                              "or parquet (listed in nas/frames.py)", highlight=False)
        else:
            write_frame(frame, fmt, output)
