"""`nas export`: one architecture as standalone files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from nas.cli.common import DbOption, console, exit_on_user_error, open_existing_store
from nas.errors import ConfigError


def export(
    experiment: Annotated[str, typer.Argument(help="A launched experiment (see `nas list`).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write into (created if needed).")],
    rank: Annotated[
        int | None, typer.Option(help="The K-th confirmed architecture, as `nas status` lists them (its # "
                                 "column): 1 = the confirm race's best, then the ones not separated from it, then the "
                                 "worse, each group by Pareto rank.")
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
    only torch; weights.pt is the state_dict of its first confirm seed (load it
    with torch.load(..., weights_only=True), or model.load()); model.onnx is the same
    network for ONNX runtimes; config.yaml holds the canonical config, the recipe and
    data split, the metrics over the confirm seeds with 95% CIs, the experiment and the
    code version, so `nas train --arch config.yaml` retrains it. Reads the store only.

    Example: nas export cifar_fast --rank 1 --out winner/
    """
    with exit_on_user_error():
        _export_command(experiment, out, rank, arch, formats, force, db)


def _export_command(experiment, out, rank, arch_hash, format_text, force, db) -> None:
    from nas.db import resolve_db_url
    from nas.export.write import (
        check_onnx_available,
        parse_formats,
        select,
        target_paths,
    )
    from nas.export.write import export as write_export

    # 1. Validate everything before anything is written.
    if (rank is None) == (arch_hash is None):
        raise ConfigError("give exactly one of --rank K (a confirmed architecture) or --arch HASH.")
    if rank is not None and rank < 1:
        raise ConfigError(f"--rank counts from 1 (the first confirmed architecture), but got {rank}.")
    formats = parse_formats(format_text)
    if "onnx" in formats:
        check_onnx_available()
    target_paths(out, formats, force=force)
    with open_existing_store(resolve_db_url(db), read_only=True) as store:
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
