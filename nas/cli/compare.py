"""`nas compare`: experiments side by side, and how alike they rank their shared architectures."""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from nas.cli.common import DbOption, console, exit_on_user_error
from nas.cli.output import Format, FormatOption, OutputOption, check_output, write_frame
from nas.errors import ConfigError

if TYPE_CHECKING:
    from nas.compare import Comparison, Correlation


class What(enum.StrEnum):
    ARCHITECTURES = "architectures"
    CORRELATIONS = "correlations"


class Match(enum.StrEnum):
    AUTO = "auto"
    HASH = "hash"
    NAME = "name"


def compare(
    experiments: Annotated[list[str], typer.Argument(
        help="Two or more experiments: NAME (in the --db store) or NAME@STORE (an SQLAlchemy URL or SQLite file), "
             "e.g. cpu_study@sqlite:///cpu.db.", show_default=False)],
    match: Annotated[Match, typer.Option(
        "--match", help="What makes two architectures the same: hash (the same config), name (the same short name "
                        "without its w= width, e.g. a cpu budget's w=0.25 against the full w=1), auto (name unless "
                        "width varies inside an experiment, then hash).", case_sensitive=False)] = Match.AUTO,
    what: Annotated[What, typer.Option(
        "--what", help="With --format csv|json|parquet: architectures (one row per shared architecture and "
                       "experiment) or correlations (one row per pair of experiments).",
        case_sensitive=False)] = What.ARCHITECTURES,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples of each correlation's 95% CI.")] = 2000,
    seed: Annotated[int, typer.Option(help="The bootstrap's random seed (the same seed, the same CIs).")] = 0,
    fmt: FormatOption = Format.TABLE,
    output: OutputOption = None,
    db: DbOption = None,
) -> None:
    """Compare experiments: the architectures they share, each one's accuracy in each (mean, 95% CI,
    seeds), and the rank correlation of the shared ones (Spearman, Kendall) with bootstrap CIs.

    Does a cheap budget rank architectures as the full one does? Each architecture's result comes
    from its phase with the most seeds (confirm or search). Exits 2, after the table, when
    fewer than 3 architectures are shared (no correlation). Reads the stores only.

    Example: nas compare page_post4@cpu.db page_post4@full.db
    """
    with exit_on_user_error():
        check_output(fmt, output)
        from nas.compare import MIN_SHARED, parse_sources, read_comparison
        from nas.db import resolve_db_url

        sources = parse_sources(experiments, resolve_db_url(db))
        result = read_comparison(sources, match=match.value, resamples=resamples, seed=seed)
        enough = len(result.keys) >= MIN_SHARED
        if fmt == Format.TABLE:
            print_comparison(result)
        elif what == What.ARCHITECTURES or enough:
            write_frame(result.architectures_frame() if what == What.ARCHITECTURES else result.correlations_frame(),
                        fmt, output)
        if not enough:
            hint = {"name": " (--match hash would be stricter)",
                    "hash": "; if their widths differ, try --match name"}[result.match]
            raise ConfigError(f"{' and '.join(result.labels)} share {len(result.keys)} architecture"
                              f"{'' if len(result.keys) == 1 else 's'} (matched by {result.match}{hint}); a rank "
                              f"correlation needs at least {MIN_SHARED}. Compare experiments that ran more of the "
                              "same architectures.")


def print_comparison(result: Comparison) -> None:
    """The shared architectures as a table, then one correlation line per pair of experiments."""
    how = ("by hash (the same config)" if result.match == "hash" else "by short name without width ("
           + "; ".join(f"{label} {', '.join(result.widths(label))}" for label in result.labels) + ")")
    table = Table(title=f"{' vs '.join(result.labels)}: {len(result.keys)} shared architectures, matched {how}",
                  caption="accuracy: mean over seeds, 95% CI (Student t); rank: among the shared, 1 = most accurate; "
                          "seeds: completed, in the phase with the most")
    table.add_column("architecture")
    for label in result.labels:
        table.add_column(f"{label}\naccuracy [95% CI]", justify="right")
        table.add_column("seeds", justify="right")
        table.add_column("rank", justify="right")
    ranks = {label: result.rank(label) for label in result.labels}
    for key in result.keys:
        cells = [escape(key)]
        for label in result.labels:
            e = result.entries[label][key]
            cells += [_accuracy(e.accuracy), f"{e.accuracy.n} {e.phase}", str(ranks[label][key])]
        table.add_row(*cells)
    console.print(table)
    for label, keys in result.only.items():
        if keys:
            console.print(f"only in {escape(label)} ({len(keys)}): {escape(', '.join(keys))}", highlight=False)
    for c in result.correlations:
        best = {label: next(k for k, r in result.rank(label).items() if r == 1) for label in (c.a, c.b)}
        console.print(escape(correlation_text(c, best)), highlight=False, soft_wrap=True)


def correlation_text(c: Correlation, best: dict[str, str]) -> str:
    """A pair's correlations, one line each, with both bootstrap CIs and the first-ranked of each."""
    def line(name: str, value: float, arch: tuple[float, float], seeds: tuple[float, float]) -> str:
        seed_part = "no seed CI (one seed each)" if math.isnan(seeds[0]) else f"{_ci(seeds)} over seeds"
        return f"  {name:<12} {value:+.2f}   95% CI {_ci(arch)} over architectures, {seed_part}"

    return "\n".join((
        f"{c.a} vs {c.b}, rank correlation over the {c.n} shared architectures:",
        line("Spearman rho", c.spearman, c.spearman_ci, c.spearman_seed_ci),
        line("Kendall tau", c.kendall, c.kendall_ci, c.kendall_seed_ci),
        f"  same best: {'yes' if c.same_best else 'no'} ({c.a}: {best[c.a]}; {c.b}: {best[c.b]}). "
        f"Percentile bootstrap, {c.resamples} resamples each, seed {c.seed}.",
    ))


def _ci(bounds: tuple[float, float]) -> str:
    return "n/a" if math.isnan(bounds[0]) else f"{bounds[0]:+.2f} to {bounds[1]:+.2f}"


def _accuracy(summary) -> str:
    if summary.n < 2:
        return f"{summary.mean:.2%}"
    return f"{summary.mean:.2%} [{summary.ci_low * 100:.2f}, {summary.ci_high * 100:.2f}]"
