"""`nas ablate`, the plan: the variants of a reference, and the reference itself.

    reference + the experiment's space -> plan (one change per variant)
        -> Ray Tune trials (phase ablation, unpruned) on the reference's seeds
        -> paired differences per variant -> one test per look over all variants -> contribution table

The plan switches each component of the reference off, one at a time (an extra layer, a
residual block, a fractal block, a deformable stage, the drop, the pyramid schedule, the
modulation mask), and moves each ordered knob of the space one step to either side (a
count, a numeric choice, the width). Every variant runs on the seeds the reference was
confirmed with (CONFIRM_SEED_BASE + i), so each variant's result on seed s is compared
with the reference's on seed s: a paired design, which cancels the seed's share of the
noise. The reference runs in phase ``ablation`` on any seed its confirm phase lacks.

A variant "matters" when its paired t-test clears the study's boundary (nas.sequential): its
difference to the reference is beyond seed noise even after testing every variant.
"""

from __future__ import annotations

import math

import json
import re
from dataclasses import dataclass
from typing import Any

from nas.config.space import Param, SearchSpace
from nas.db import Store
from nas.db.schema import Phase
from nas.errors import ConfigError
from nas.models.arch import STAGES, ArchConfig, parse_short_name
from nas.search.confirm import CONFIRM_SEED_BASE

# Knobs with no "off" value, only moved to neighbours: the width, and the early exits'
# threshold (an operating point of the same trained network, not a part of it).
NOT_COMPONENTS = ("width", "exits.threshold")

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


def plan_variants(reference: ArchConfig, space: SearchSpace, *, only: str | None = None) -> list[Variant]:
    """Every variant one change away from `reference`, in a fixed order, without repeats.

    For each knob, in `ArchConfig` field order:
      - off: a component the reference has is set to its neutral value (the
        `ArchConfig` default): residual/extra/fractal -> 0, deformable -> false, drop
        kind -> none, drop rate -> 0, pyramid -> double, ... (not width: it has none);
      - down / up: an ordered knob of the space (int range, float range, a choice of
        numbers), active for the reference, moves to the nearest value of the space
        below / above the reference's; a continuous float range (no step) halves and
        doubles it, clipped to the range. A stage's count (residual, extra, fractal) always
        gets "down", one fewer, the space listing it or not: removing one block. (A trick's
        integer is a setting, not a count: ghost batch 32 -> 31 would not divide the batch.)
    Variants equal to the reference (a change the canonical form undoes) and repeats of
    an earlier variant are left out. `only`: just the keys under this dotted prefix, e.g.
    ``tricks`` (`nas ablate --only tricks`: the training tricks, leave-one-out).
    """
    values = reference.to_flat()
    neutral = ArchConfig().to_flat()
    params = {p.key: p for p in space.params}
    seen = {reference.hash}
    variants = []
    for key, before in values.items():
        if only is not None and not (key == only or key.startswith(only + ".")):
            continue
        moves: list[tuple[str, Any]] = []
        if key not in NOT_COMPONENTS and before != neutral[key]:
            moves.append(("off", neutral[key]))
        param = params.get(key)
        below, above = (None, None)
        if param is not None and param.is_active(values):
            below, above = _neighbours(param, before)
        if below is None and key.split(".")[0] in STAGES and _is_count(neutral[key]) and before > 0:
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


def cumulative_chain(base: ArchConfig, steps: list[tuple[str, Any]]) -> list[ArchConfig]:
    """`base`, then each change of `steps` (dotted key, value) added to the one before, in order:
    Page's timeline ("How to train your ResNet", posts 5-8), each trick added to the last.

    Not a `nas ablate` mode: its report tests each variant against one reference, and a chain
    compares each step with the step before, another family of tests. A chain is a study:
    every step on the same seeds (``search_spaces/page_tricks.yaml``), read with `nas status`.
    A step that changes nothing (its value already set) is refused: it would be a step twice.
    """
    chain = [base]
    for key, value in steps:
        step = ArchConfig.from_flat({**chain[-1].to_flat(), key: value}, source=f"step {key}")
        if step.hash == chain[-1].hash:
            raise ConfigError(f"cumulative step {key}={_show(value)} changes nothing after "
                              f"{chain[-1].short_name()!r}; give each step a change.")
        chain.append(step)
    return chain


def _neighbours(param: Param, value: Any) -> tuple[Any, Any]:
    """The nearest values of an ordered space entry below and above `value` (None: none)."""
    if param.kind == "float" and param.step is None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            return None, None
        below, above = max(param.low, value / 2), min(param.high, value * 2)
        return (below if below < value else None), (above if above > value else None)
    if param.kind in ("int", "float"):
        if not _is_number(value):
            return None, None
        # the grid points next to `value`, by arithmetic: a fine step may make millions of values
        index = (value - param.low) / param.step
        nearest = round(index)
        if abs(index - nearest) <= 1e-6 * max(1.0, abs(index)):  # on the grid (up to float error)
            lower, upper = nearest - 1, nearest + 1
        else:
            lower, upper = math.floor(index), math.ceil(index)
        point = (lambda i: param.low + i * param.step) if param.kind == "int" else \
            (lambda i: round(param.low + i * param.step, 12))
        below, above = point(lower), point(upper)
        return (below if lower >= 0 and below < value else None), (above if value < above <= param.high else None)
    if param.kind == "choice" and all(_is_number(c) for c in param.choices):
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
        rows = arch_results(store, experiment, Phase.CONFIRM) or arch_results(store, experiment, Phase.SEARCH)
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

        return parse_short_name(text)
    except (ConfigError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"--arch {text!r}: not 'best', a stored architecture hash, or an architecture such as "
            f"'R:L1+L3 w=0.25' ({err})."
        ) from None
