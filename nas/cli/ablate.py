"""`nas ablate`: a leave-one-component-out study around an architecture."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from nas.cli.common import (
    AddressOption,
    DataRootOption,
    DbOption,
    console,
    exit_on_user_error,
    open_existing_store,
)
from nas.cli.ray_session import check_ray_address, start_ray
from nas.cli.tables import print_contributions, print_plan
from nas.errors import ConfigError


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
    only: Annotated[
        str | None,
        typer.Option(help="Only the components under this dotted key, e.g. 'tricks' (the training tricks, "
                     "each switched off from the reference's set) or 'L2'. [default: every component]"),
    ] = None,
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
    t-test p-value, the study's p (over every variant and round: the chance of any false
    "matters" held at 0.05, alpha spent over the looks), whether it matters beyond seed
    noise, and the cost differences. No test under 3 paired seeds. Running it again reuses finished runs.

    Example: nas ablate cifar_fast --repeats 3 --dry-run
    """
    with exit_on_user_error():
        _ablate_command(experiment, arch, repeats, dry_run, until_separated, max_repeats, address, db, data_root,
                        only=only)


def _ablate_command(experiment, arch_text, repeats, dry_run, until_separated, max_repeats, address, db, data_root,
                    *, only=None) -> None:
    from nas.ablation.plan import ablation_seeds, plan_variants, resolve_reference
    from nas.config.experiment import MAX_SEEDS
    from nas.stats import MIN_SEEDS
    from nas.db import resolve_db_url
    from nas.trials.experiment import stored_spec

    # 1. Validate everything before anything is written, in the order of `nas launch`: the
    # arguments, the store (it holds the config), then the data and Ray (a run may first
    # bring an older store's schema up to date; a dry run opens it read-only).
    if repeats is not None and repeats < 2:
        raise ConfigError(f"--repeats must be at least 2 (a paired CI needs two seeds), but got {repeats}.")
    if repeats is not None and repeats > MAX_SEEDS:
        raise ConfigError(f"--repeats must be at most {MAX_SEEDS}, but got {repeats}.")
    if until_separated and not max_repeats <= MAX_SEEDS:
        raise ConfigError(f"--max-repeats must be at most {MAX_SEEDS}, but got {max_repeats}.")
    check_ray_address(address)
    db_url = resolve_db_url(db)
    with open_existing_store(db_url, read_only=dry_run) as store:
        spec = stored_spec(store, experiment)
        reference = resolve_reference(store, experiment, arch_text)
        variants = plan_variants(reference, spec.space, only=only)
        repeats = repeats if repeats is not None else spec.confirm.repeats
        if repeats < 2:
            raise ConfigError(
                f"experiment {experiment!r} confirms with {repeats} seed; pass --repeats 2 or more "
                "(a paired CI needs two seeds)."
            )
        if until_separated and max_repeats < max(repeats, MIN_SEEDS):
            raise ConfigError(f"--max-repeats must be at least --repeats ({repeats}) and at least {MIN_SEEDS} "
                              f"(the first test needs {MIN_SEEDS} paired seeds), but got {max_repeats}.")
        if not until_separated and repeats < MIN_SEEDS:
            raise ConfigError(f"{repeats} paired seeds test nothing: a variant is tested from {MIN_SEEDS} seeds on; "
                              f"pass --repeats {MIN_SEEDS} or more, or --until-separated.")
        if not variants:
            under = "" if only is None else f" under --only {only!r}"
            raise ConfigError(
                f"nothing to ablate{under}: {reference.short_name()} has no component to switch off there and the "
                f"space of {experiment!r} gives no neighbouring values; choose another --arch or --only."
            )
        print_plan(store, experiment, reference, variants, ablation_seeds(repeats))
    if dry_run:
        return

    # 2. No other writer, the data (may download), then the runs.
    from nas.data.archive import ensure_cifar10, resolve_data_root
    from nas.db.lease import refuse_if_held

    refuse_if_held(db_url, experiment)

    root = resolve_data_root(data_root, spec.dataset.root)
    ensure_cifar10(root)
    start_ray(address)  # an unreachable --address fails within seconds (a TCP probe first)
    from nas.ablation.run import run_ablation
    from nas.trials.experiment import require_experiment

    with open_existing_store(db_url, read_only=False) as store:
        report = run_ablation(
            spec, store, require_experiment(store, experiment).id, str(root), reference, variants, repeats,
            until_separated=until_separated, max_repeats=max_repeats, log=lambda line: console.print(escape(line)),
        )
    print_contributions(report)
