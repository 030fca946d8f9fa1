"""`nas ablate`, the runs: every variant and the reference on the same seeds, unpruned.

    reference + the experiment's space -> plan (one change per variant)
        -> Ray Tune trials (phase ablation, unpruned) on the reference's seeds
        -> paired differences per variant -> one test per look over all variants -> contribution table

The runs go through `nas.trials` only, never the search controller: an ablation opens no
Optuna study and leaves the experiment's other trials (a search still running) alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace

from nas.ablation.plan import Variant, ablation_seeds
from nas.ablation.report import RESULT_PHASES, AblationReport, contributions, study_looks
from nas.config.experiment import ExperimentSpec
from nas.db import Store
from nas.db.lease import Lease
from nas.db.schema import Phase
from nas.models.arch import ArchConfig
from nas.trials.batch import TrialBatch
from nas.trials.costs import CostCounter, known_costs
from nas.trials.plan import RESULTS, TrialPlan


def record_plan(store: Store, experiment_id: int, costs: CostCounter, reference: ArchConfig,
                variants: list[Variant], looks: tuple[int, int] | None = None) -> None:
    """Store the architectures and link each variant to the reference (before any run), with
    the study's planned looks (first, last; `study_looks`)."""
    for arch in [reference, *(v.arch for v in variants)]:
        params, flops = costs(arch)
        store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), params, flops)
    for position, variant in enumerate(variants):
        store.add_ablation_variant(
            experiment_id, reference.hash, variant.arch.hash,
            key=variant.key, move=variant.move, change=variant.change, position=position, looks=looks,
        )


def missing_runs(store: Store, experiment_id: int, archs: list[ArchConfig], seeds: list[int]) -> list[TrialPlan]:
    """Plans for the (architecture, seed) pairs with no finished result yet.

    Seed by seed, every architecture of a seed together: the runs of a pair happen close in
    time (a busy machine's drift hits both), and an interrupted study leaves whole pairs.
    """
    done = {
        (t.arch_hash, t.seed) for phase in RESULT_PHASES
        for t in store.trials(experiment_id=experiment_id, phase=phase)
        if t.status in RESULTS
    }
    plans = []
    for seed in seeds:
        for arch in archs:
            if (arch.hash, seed) not in done:
                plans.append(TrialPlan(arch=arch, seed=seed, phase=Phase.ABLATION))
                done.add((arch.hash, seed))
    return plans


def run_ablation(
    spec: ExperimentSpec,
    store: Store,
    experiment_id: int,
    data_root: str,
    reference: ArchConfig,
    variants: list[Variant],
    repeats: int,
    *,
    until_separated: bool = False,
    max_repeats: int = 10,
    log: Callable[[str], None] = print,
) -> AblationReport:
    """Run the variants and the reference on `repeats` paired seeds; return the table.

    With `until_separated`, rounds follow: each variant that does not matter yet (see
    `Contribution.matters`) gets one more seed, paired with the reference's, until every
    variant matters or has `max_repeats` seeds. The looks (tests at repeats..max_repeats
    seeds, from 3) are stored with the plan, so the report spends alpha over them
    (`nas.ablation.report`).

    Holds the experiment's lease while it runs (`nas.db.lease`): refused while a search
    (or another ablation) of the experiment runs.
    """
    with Lease(store, spec.name, "nas ablate"), closing(CostCounter(known_costs(store))) as costs:
        return _run_ablation(spec, store, experiment_id, data_root, reference, variants, repeats,
                             until_separated=until_separated, max_repeats=max_repeats, log=log, costs=costs)


def _run_ablation(spec: ExperimentSpec, store: Store, experiment_id: int, data_root: str, reference: ArchConfig,
                  variants: list[Variant], repeats: int, *, until_separated: bool, max_repeats: int,
                  log: Callable[[str], None], costs: CostCounter) -> AblationReport:
    from nas.trials.tune import run_batch  # imports Ray

    started = time.perf_counter()
    record_plan(store, experiment_id, costs, reference, variants,
                looks=study_looks(repeats, max_repeats if until_separated else repeats))
    by_hash = {v.arch.hash: v.arch for v in variants}

    def finished(plan: TrialPlan, status: str) -> None:
        acc = plan.accuracy
        role = "reference" if plan.arch.hash == reference.hash else "variant"
        log(f"[ablation] {role:<9} {plan.arch.short_name():<28} seed {plan.seed:<5} "
            f"acc {'   -   ' if acc is None else f'{acc:6.2%}'}  {status:<9} "
            f"{plan.last.get('cumulative_seconds', 0.0):6.1f} s")

    batch = TrialBatch(
        store=store, experiment_id=experiment_id, name=spec.name, recipe=spec.recipe,
        data_cfg=replace(spec.dataset, root=data_root), resources=spec.resources,
        next_plan=lambda: None, costs=costs, on_finished=finished,
    )

    def run(archs: list[ArchConfig], seeds: list[int]) -> None:
        plans = missing_runs(store, experiment_id, archs, seeds)
        if not plans:
            return
        log(f"ablation: {len(plans)} runs to do ({len(archs)} architectures, seeds {seeds[0]}..{seeds[-1]})")
        queue = list(plans)
        run_batch(replace(batch, next_plan=lambda: queue.pop(0) if queue else None, plans={}), len(plans))

    seeds = ablation_seeds(repeats)
    run([reference, *by_hash.values()], seeds)
    report = contributions(store, spec.name, reference.hash)
    n = repeats
    while until_separated and n < max_repeats:
        open_rows = [row for row in report.rows if not row.matters]
        if not open_rows:
            break
        n += 1
        log(f"until separated: {len(open_rows)} variant(s) within seed noise; seed {n} of at most {max_repeats}")
        run([reference, *(by_hash[row.arch_hash] for row in open_rows if row.arch_hash in by_hash)],
            ablation_seeds(n))
        report = contributions(store, spec.name, reference.hash)
    log(f"ablation done in {time.perf_counter() - started:.0f} s")
    return report
