"""`nas ablate`: which components of an architecture matter, beyond seed noise.

    reference + the experiment's space -> plan (one change per variant)
        -> Ray Tune trials (phase ablation, unpruned) on the reference's seeds
        -> paired differences per variant -> Holm across variants -> contribution table

The plan switches each component of the reference off, one at a time (an extra layer, a
residual block, a fractal block, a deformable stage, the drop, the pyramid schedule, the
modulation mask), and moves each ordered knob of the space one step to either side (a
count, a numeric choice, the width). Every variant runs on the seeds the reference was
confirmed with (CONFIRM_SEED_BASE + i), so each variant's result on seed s is compared
with the reference's on seed s: a paired design, which cancels the seed's share of the
noise. The reference runs in phase ``ablation`` on any seed its confirm phase lacks.

A variant "matters" when its Holm-adjusted paired t-test p-value is below 0.05: its
difference to the reference is beyond seed noise even after testing every variant.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nas.db import Store
from nas.errors import ConfigError
from nas.models import ArchConfig
from nas.search import CONFIRM_SEED_BASE, Driver, TrialPlan, run_phase
from nas.config.space import Param, SearchSpace
from nas.stats import PairedDifference, SeedSummary, holm_adjust, paired_difference, summarize

ALPHA = 0.05  # family-wise error rate of the "matters" mark (Holm)
# Knobs with no "off" value, only moved to neighbours: the width, and the early exits'
# threshold (an operating point of the same trained network, not a part of it).
NOT_COMPONENTS = ("width", "exits.threshold")
RESULT_PHASES = ("confirm", "ablation")  # where a result of (architecture, seed) may come from
MOVES = ("off", "down", "up")

# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Variant:
    """The reference with one knob changed."""

    arch: ArchConfig
    key: str  # dotted ArchConfig key, e.g. "L1.residual"
    before: Any  # the reference's value
    after: Any  # the variant's value
    move: str  # off (the neutral value) | down | up (the neighbouring value)

    @property
    def change(self) -> str:
        """For people: ``L1.residual 1 -> 0``."""
        return f"{self.key} {_show(self.before)} -> {_show(self.after)}"


def plan_variants(reference: ArchConfig, space: SearchSpace) -> list[Variant]:
    """Every variant one change away from `reference`, in a fixed order, without repeats.

    For each knob, in `ArchConfig` field order:
      - off: a component the reference has is set to its neutral value (the
        `ArchConfig` default): residual/extra/fractal -> 0, deformable -> false, drop
        kind -> none, drop rate -> 0, pyramid -> double, ... (not width: it has none);
      - down / up: an ordered knob of the space (int range, float range, a choice of
        numbers), active for the reference, moves to the nearest value of the space
        below / above the reference's; a continuous float range (no step) halves and
        doubles it, clipped to the range. A count (residual, extra, fractal) always gets
        "down", one fewer, the space listing it or not: removing one block.
    Variants equal to the reference (a change the canonical form undoes) and repeats of
    an earlier variant are left out.
    """
    values = reference.to_flat()
    neutral = ArchConfig().to_flat()
    params = {p.key: p for p in space.params}
    seen = {reference.hash}
    variants = []
    for key, before in values.items():
        moves: list[tuple[str, Any]] = []
        if key not in NOT_COMPONENTS and before != neutral[key]:
            moves.append(("off", neutral[key]))
        param = params.get(key)
        below, above = (None, None)
        if param is not None and param.is_active(values):
            below, above = _neighbours(param, before)
        if below is None and _is_count(neutral[key]) and before > 0:
            below = before - 1
        moves += [("down", below), ("up", above)]
        for move, after in moves:
            if after is None or after == before:
                continue
            try:
                arch = ArchConfig.from_flat({**values, key: after}, source="variant")
            except ConfigError:
                continue  # outside what the architecture allows (e.g. past a maximum)
            if arch.hash in seen:
                continue
            seen.add(arch.hash)
            variants.append(Variant(arch=arch, key=key, before=before, after=after, move=move))
    return variants


def _neighbours(param: Param, value: Any) -> tuple[Any, Any]:
    """The nearest values of an ordered space entry below and above `value` (None: none)."""
    if param.kind == "float" and param.step is None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            return None, None
        below, above = max(param.low, value / 2), min(param.high, value * 2)
        return (below if below < value else None), (above if above > value else None)
    if param.kind in ("int", "float"):
        ordered = sorted(param.values())
    elif param.kind == "choice" and all(_is_number(c) for c in param.choices):
        ordered = sorted(param.choices)
    else:
        return None, None  # fixed, or an unordered choice (names, true/false)
    if not _is_number(value):
        return None, None
    below = [v for v in ordered if v < value]
    above = [v for v in ordered if v > value]
    return (below[-1] if below else None), (above[0] if above else None)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(default: Any) -> bool:
    return isinstance(default, int) and not isinstance(default, bool)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):  # exits.stages, exits.weights: as the short name writes them
        return "+".join(_show(v) for v in value) or "none"
    return str(value)


def ablation_seeds(repeats: int) -> list[int]:
    """The seeds of the paired design: the confirm phase's, CONFIRM_SEED_BASE + i."""
    return [CONFIRM_SEED_BASE + i for i in range(repeats)]


# ----------------------------------------------------------------------------- the reference


_HASH = re.compile(r"[0-9a-f]{4,16}")


def resolve_reference(store: Store, experiment: str, text: str) -> ArchConfig:
    """The architecture `--arch` names: ``best``, a stored hash (or a unique prefix of
    one, 4+ digits), or an architecture written as for `nas train --arch`
    (``R:L1+L3 w=0.25``, or inline JSON).

    ``best`` is the first row of the experiment's confirm results (the Pareto front,
    most accurate first), else of its search results.
    """
    from nas.results import arch_results

    text = text.strip()
    if text == "best":
        rows = arch_results(store, experiment, "confirm") or arch_results(store, experiment, "search")
        if not rows:
            raise ConfigError(
                f"--arch best: experiment {experiment!r} has no completed trials yet; run `nas launch` first."
            )
        return ArchConfig.from_json(store.get_architecture(rows[0].arch_hash).config_json)
    if _HASH.fullmatch(text):
        found = store.get_architecture(text)
        if found is None:
            matches = [a for a in store.architectures() if a.hash.startswith(text)]
            if len(matches) > 1:
                raise ConfigError(
                    f"--arch {text}: the prefix matches {len(matches)} architectures "
                    f"({', '.join(a.hash for a in matches[:5])}); give more digits."
                )
            found = matches[0] if matches else None
        if found is not None:
            return ArchConfig.from_json(found.config_json)
        if len(text) == 12:
            raise ConfigError(
                f"--arch {text}: no architecture with this hash in the store; `nas status {experiment}` "
                "lists the experiment's architectures."
            )
    try:
        if text.startswith("{"):
            return ArchConfig.from_dict(json.loads(text), source="--arch")
        from nas.models import parse_short_name

        return parse_short_name(text)
    except (ConfigError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"--arch {text!r}: not 'best', a stored architecture hash, or an architecture such as "
            f"'R:L1+L3 w=0.25' ({err})."
        ) from None


# ----------------------------------------------------------------------------- running


def record_plan(driver: Driver, reference: ArchConfig, variants: list[Variant]) -> None:
    """Store the architectures and link each variant to the reference (before any run)."""
    store = driver.store
    for arch in [reference, *(v.arch for v in variants)]:
        params, flops = driver.costs(arch)
        store.upsert_architecture(arch.hash, arch.to_json(), arch.short_name(), params, flops)
    for position, variant in enumerate(variants):
        store.add_ablation_variant(
            driver.experiment_id, reference.hash, variant.arch.hash,
            key=variant.key, move=variant.move, change=variant.change, position=position,
        )


def missing_runs(store: Store, experiment_id: int, archs: list[ArchConfig], seeds: list[int]) -> list[TrialPlan]:
    """Plans for the (architecture, seed) pairs with no finished result yet.

    Seed by seed, every architecture of a seed together: the runs of a pair happen close in
    time (a busy machine's drift hits both), and an interrupted study leaves whole pairs.
    """
    done = {
        (t.arch_hash, t.seed) for phase in RESULT_PHASES
        for t in store.trials(experiment_id=experiment_id, phase=phase)
        if t.status in ("completed", "diverged")
    }
    plans = []
    for seed in seeds:
        for arch in archs:
            if (arch.hash, seed) not in done:
                plans.append(TrialPlan(arch=arch, seed=seed, phase="ablation"))
                done.add((arch.hash, seed))
    return plans


def run_ablation(
    driver: Driver,
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
    variant matters or has `max_repeats` seeds.
    """
    started = time.perf_counter()
    record_plan(driver, reference, variants)
    by_hash = {v.arch.hash: v.arch for v in variants}

    def progress(plan: TrialPlan, status: str) -> None:
        last = plan.last
        acc = last.get("val_acc") if last.get("val_acc") is not None else last.get("test_acc")
        role = "reference" if plan.arch.hash == reference.hash else "variant"
        log(f"[ablation] {role:<9} {plan.arch.short_name():<28} seed {plan.seed:<5} "
            f"acc {'   -   ' if acc is None else f'{acc:6.2%}'}  {status:<9} "
            f"{last.get('cumulative_seconds', 0.0):6.1f} s")

    def run(archs: list[ArchConfig], seeds: list[int]) -> None:
        plans = missing_runs(driver.store, driver.experiment_id, archs, seeds)
        if not plans:
            return
        log(f"ablation: {len(plans)} runs to do ({len(archs)} architectures, seeds {seeds[0]}..{seeds[-1]})")
        queue = list(plans)
        run_phase(driver, lambda: queue.pop(0) if queue else None, len(plans), prune=False, progress=progress)

    seeds = ablation_seeds(repeats)
    run([reference, *by_hash.values()], seeds)
    report = contributions(driver.store, driver.spec.name, reference.hash)
    n = repeats
    while until_separated and n < max_repeats:
        open_rows = [row for row in report.rows if not row.matters]
        if not open_rows:
            break
        n += 1
        log(f"until separated: {len(open_rows)} variant(s) within seed noise; seed {n} of at most {max_repeats}")
        run([reference, *(by_hash[row.arch_hash] for row in open_rows if row.arch_hash in by_hash)],
            ablation_seeds(n))
        report = contributions(driver.store, driver.spec.name, reference.hash)
    log(f"ablation done in {time.perf_counter() - started:.0f} s")
    return report


# ----------------------------------------------------------------------------- the contribution table


@dataclass(frozen=True)
class Contribution:
    """One variant against the reference, over the seeds both have results for."""

    change: str  # e.g. "L1.residual 1 -> 0"
    key: str  # dotted ArchConfig key changed
    move: str  # off | down | up
    arch_hash: str
    short_name: str
    seeds: tuple[int, ...]  # the paired seeds
    accuracy: PairedDifference  # variant - reference, fraction (val accuracy, else test)
    holm_p: float  # the paired t-test p-value, Holm-adjusted over the table's variants
    train_seconds: float  # mean paired difference of training wall seconds (nan: none)
    params: int  # variant - reference
    flops: int  # variant - reference, per image

    @property
    def matters(self) -> bool:
        """The difference is beyond seed noise: Holm-adjusted p below ALPHA (so the 95% CI
        excludes 0 too)."""
        return math.isfinite(self.holm_p) and self.holm_p < ALPHA


@dataclass(frozen=True)
class AblationReport:
    """The contribution table of one reference: its variants, most harmful change first."""

    experiment: str
    reference_hash: str
    reference_name: str
    reference_accuracy: SeedSummary  # over the seeds any variant is paired on
    reference_seconds: SeedSummary
    reference_params: int
    reference_flops: int
    rows: tuple[Contribution, ...]


def ablation_references(store: Store, experiment: str) -> list[str]:
    """Hashes of the architectures ablated in an experiment, most recent study first."""
    found = store.get_experiment(experiment)
    if found is None:
        return []
    latest: dict[str, Any] = {}
    for link in store.ablation_variants(found.id):
        if link.reference_hash not in latest or link.created_at > latest[link.reference_hash]:
            latest[link.reference_hash] = link.created_at
    return sorted(latest, key=lambda h: latest[h], reverse=True)


def contributions(store: Store, experiment: str, reference_hash: str) -> AblationReport:
    """The contribution table of `reference_hash`'s ablation in `experiment`, read from the store.

    Each variant is paired, seed by seed, with the reference's completed results (phases
    confirm and ablation); the accuracy difference gets a paired t 95% CI and p-value, and
    the p-values are Holm-adjusted across the variants. Rows are sorted by the mean
    accuracy difference, most harmful first (variants with fewer than two pairs last).
    Reads only: the dashboard calls it too.
    """
    from nas.results import require_experiment

    found = require_experiment(store, experiment)
    results = _results(store, found.id)
    reference = store.get_architecture(reference_hash)
    ref_by_seed = results.get(reference_hash, {})
    drafts = []
    used_seeds: set[int] = set()
    for link in store.ablation_variants(found.id, reference_hash):
        arch = store.get_architecture(link.arch_hash)
        var_by_seed = results.get(link.arch_hash, {})
        seeds = tuple(sorted(set(var_by_seed) & set(ref_by_seed)))
        used_seeds.update(seeds)
        accuracy = paired_difference([_acc(var_by_seed[s]) for s in seeds], [_acc(ref_by_seed[s]) for s in seeds])
        seconds = paired_difference(
            [var_by_seed[s].train_seconds for s in seeds], [ref_by_seed[s].train_seconds for s in seeds]
        ).mean
        drafts.append(dict(
            change=link.change, key=link.key, move=link.move, arch_hash=link.arch_hash,
            short_name=arch.short_name, seeds=seeds, accuracy=accuracy, train_seconds=seconds,
            params=arch.params - reference.params, flops=arch.flops - reference.flops,
        ))
    adjusted = holm_adjust([d["accuracy"].p_value for d in drafts])
    rows = [Contribution(**d, holm_p=p) for d, p in zip(drafts, adjusted)]
    rows.sort(key=lambda r: (r.accuracy.n < 2 or not math.isfinite(r.accuracy.mean),
                             r.accuracy.mean if math.isfinite(r.accuracy.mean) else 0.0, r.change))
    ref_trials = [ref_by_seed[s] for s in sorted(used_seeds or ref_by_seed)]
    return AblationReport(
        experiment=experiment, reference_hash=reference_hash, reference_name=reference.short_name,
        reference_accuracy=summarize([_acc(t) for t in ref_trials]),
        reference_seconds=summarize([t.train_seconds for t in ref_trials]),
        reference_params=reference.params, reference_flops=reference.flops, rows=tuple(rows),
    )


def _results(store: Store, experiment_id: int) -> dict[str, dict[int, Any]]:
    """Completed trials by architecture and seed; a confirm result wins over an ablation one."""
    out: dict[str, dict[int, Any]] = {}
    for phase in RESULT_PHASES:
        for trial in store.trials(experiment_id=experiment_id, phase=phase, status="completed"):
            out.setdefault(trial.arch_hash, {}).setdefault(trial.seed, trial)
    return out


def _acc(trial) -> float | None:
    return trial.final_val_acc if trial.final_val_acc is not None else trial.final_test_acc
