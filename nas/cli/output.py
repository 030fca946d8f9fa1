"""Machine-readable output of the read-only commands: one DataFrame as CSV, JSON or Parquet.

`--format table` is the rich table people read (each command prints its own); csv, json and
parquet write the frame `nas.api` returns, with the same columns (`nas.frames.COLUMNS`), to
stdout or to `-o FILE`. Stdout then carries the data only, so it pipes into other tools;
messages go to stderr. A file is written whole or not at all: to a temporary file beside it,
renamed over it once complete, so a failure never leaves half a file where a tool would read it.
"""

from __future__ import annotations

import enum
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nas.cli.common import err_console
from nas.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd


class Format(enum.StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    PARQUET = "parquet"


FormatOption = Annotated[
    Format,
    typer.Option("--format", help="table: for people; csv, json (a list of records): the API's columns, on stdout "
                                  "or -o; parquet: typed columns, needs -o.", case_sensitive=False),
]
OutputOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write to this file (replaced whole once complete) instead of stdout.",
                 dir_okay=False),
]


def check_output(fmt: Format, output: Path | None) -> None:
    """Refuse a format and file that cannot go together, before anything is read.

    Raises:
        ConfigError: parquet without -o (binary on a terminal), table with -o, or -o in a
            folder that does not exist.
    """
    if fmt == Format.PARQUET and output is None:
        raise ConfigError("--format parquet writes a binary file: give one with -o FILE (e.g. -o results.parquet), "
                          "or use --format csv or json for stdout.")
    if fmt == Format.TABLE and output is not None:
        raise ConfigError("-o writes data: use it with --format csv, json or parquet (the table is for the terminal).")
    if output is not None and not output.expanduser().parent.is_dir():
        raise ConfigError(f"-o {output}: the folder {output.expanduser().parent} does not exist; create it first.")


def write_frame(frame: pd.DataFrame, fmt: Format, output: Path | None) -> None:
    """`frame` as `fmt` (csv, json or parquet) to `output`, or to stdout when None."""
    if output is None:
        sys.stdout.write(_text(frame, fmt))
        sys.stdout.flush()
        return
    path = output.expanduser()
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        if fmt == Format.PARQUET:
            frame.to_parquet(temporary, index=False)
        else:
            Path(temporary).write_text(_text(frame, fmt), encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    err_console.print(f"wrote {len(frame)} rows to {path}", highlight=False)


def _text(frame: pd.DataFrame, fmt: Format) -> str:
    if fmt == Format.CSV:
        return frame.to_csv(index=False, lineterminator="\n")
    if fmt == Format.JSON:
        # ISO times with microseconds (UTC, "Z"), missing values as null, 15 significant digits
        return frame.to_json(orient="records", date_format="iso", date_unit="us", double_precision=15) + "\n"
    raise ValueError(f"{fmt} is not a text format.")
