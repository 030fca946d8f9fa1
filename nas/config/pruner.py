"""The pruner of a search: an Optuna pruner by name with its constructor's keyword arguments
(checked by Optuna's own constructor, and the checks Optuna defers to the first prune), plus
nas's own options (`margin`: nas.search.pruning)."""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any

import optuna

from nas.config.validate import (
    FieldError,
    Source,
    check_fields,
    did_you_mean,
    is_finite,
    mapping,
    one_of,
    setting,
    type_ok,
    type_words,
)
from nas.errors import ConfigError, clip, shown

MAX_OPTION = 100_000  # integer options are counts of trials or steps, as many as a search has trials
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "patient": optuna.pruners.PatientPruner,  # wraps another pruner, given as `wrapped`
}
# Options of nas's own on top of Optuna's (nas.search.pruning): `margin`, in standard errors of
# the seed noise at the epoch, by which a trial must fall below the threshold to be pruned;
# `pilot`, the architectures that also run a second seed so that the noise is known.
NAS_PRUNER_OPTIONS = {"median": ("margin", "pilot"), "percentile": ("margin", "pilot")}
_NAS_OPTIONS = {
    "margin": inspect.Parameter("margin", inspect.Parameter.KEYWORD_ONLY, default=2.0, annotation="float"),
    "pilot": inspect.Parameter("pilot", inspect.Parameter.KEYWORD_ONLY, default=3, annotation="int"),
}
_PRUNER_EXAMPLES = {"percentile": "percentile: 25", "patience": "patience: 2"}  # required options


@dataclass(frozen=True)
class PrunerSpec:
    """An Optuna pruner by name, with keyword arguments of its constructor."""

    # none | median | percentile | successive_halving | hyperband | patient
    kind: str = setting("median", one_of(tuple(PRUNERS)))
    options: tuple[tuple[str, Any], ...] = ()  # constructor keyword arguments, sorted by name
    wrapped: PrunerSpec | None = None  # patient only: the pruner it wraps (None: patience alone)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.wrapped is not None and self.kind != "patient":
            raise FieldError("wrapped", f"wrapped is only for kind patient, but kind is {shown(self.kind)}.")
        try:
            self.build()  # Optuna's own constructor checks (ranges, required arguments)
            self._check_deferred()
        except (TypeError, ValueError) as err:
            name = PRUNERS[self.kind].__name__  # Optuna's message may repeat a value of any length
            raise ConfigError(f"{name} rejects {shown(dict(self.options))}: {clip(str(err), 200)}") from None

    def _check_deferred(self) -> None:
        """What Optuna checks only at the first prune, mid-search: the SuccessiveHalvingPruners a
        HyperbandPruner makes (min_resource >= 1, reduction_factor >= 2, ...), log(max / min)."""
        if self.kind == "hyperband":
            options = dict(self.options)
            defaults = {"min_resource": 1, "reduction_factor": 3, "bootstrap_count": 0}
            optuna.pruners.SuccessiveHalvingPruner(**{k: options.get(k, v) for k, v in defaults.items()})
            if options.get("max_resource", "auto") != "auto" and options["max_resource"] < 1:
                raise ValueError(f"The value of `max_resource` is {options['max_resource']}, but must be >= 1 or 'auto'.")

    def build(self) -> optuna.pruners.BasePruner:
        cls = PRUNERS[self.kind]
        # nas's own options (the noise margin, the pilot) are applied by the search, not Optuna
        options = {k: v for k, v in self.options if k not in NAS_PRUNER_OPTIONS.get(self.kind, ())}
        with warnings.catch_warnings():  # PatientPruner is experimental; its options are checked here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.kind == "patient":
                wrapped = self.wrapped.build() if self.wrapped is not None else None
                return cls(wrapped, **options)
            return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, **dict(self.options)}
        if self.wrapped is not None:
            out["wrapped"] = self.wrapped.to_dict()
        return out



def parse_pruner(src: Source, path: tuple, value: Any) -> PrunerSpec:
    """A pruner mapping: `kind`, the Optuna constructor's keyword arguments, `wrapped` (patient)."""
    data = dict(mapping(src, path, value))
    kind = data.pop("kind", None)
    if not isinstance(kind, str) or kind not in PRUNERS:  # a list or mapping is no key of PRUNERS
        raise src.error(
            path + ("kind",),
            f"must be one of {', '.join(PRUNERS)}, but got {shown(kind)}.{did_you_mean(kind, tuple(PRUNERS))}",
        )
    wrapped = None
    if "wrapped" in data:
        if kind != "patient":
            raise src.error(path + ("wrapped",), "only a patient pruner wraps another; remove it or set kind: patient.")
        wrapped = parse_pruner(src, path + ("wrapped",), data.pop("wrapped"))
    cls = PRUNERS[kind]
    params = {
        name: p
        for name, p in inspect.signature(cls).parameters.items()
        if name != "wrapped_pruner" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    params.update({name: _NAS_OPTIONS[name] for name in NAS_PRUNER_OPTIONS.get(kind, ())})
    for key, option in data.items():
        if key not in params:
            raise src.error(
                path + (key,),
                f"not an option of the {kind} pruner ({cls.__name__}); its options are "
                f"{', '.join(params) or 'none'}.{did_you_mean(key, tuple(params))}",
            )
        hint = _annotation(params[key].annotation)
        if hint is not None and not type_ok(option, hint):
            raise src.error(path + (key,), f"must be {type_words(hint)}, but got {shown(option)}.")
        if not is_finite(option):
            raise src.error(path + (key,), f"must be a finite number, but got {shown(option)}.")
        if type_ok(option, int) and option > MAX_OPTION:  # Optuna has none; SuccessiveHalvingPruner takes
            # reduction_factor ** min_early_stopping_rate at every prune, and 3 ** 2**63 never ends
            raise src.error(path + (key,), f"must be at most {MAX_OPTION} (a count of trials or steps), "
                                           f"but got {shown(option)}.")
    for name, p in params.items():
        if p.default is p.empty and name not in data:
            example = _PRUNER_EXAMPLES.get(name, f"{name}: ...")
            raise src.error(path + (name,), f"missing; the {kind} pruner needs it, e.g. {example}.")
    if "margin" in data and not data["margin"] >= 0:
        raise src.error(path + ("margin",), f"must be >= 0 (standard errors of the noise), but got {shown(data['margin'])}.")
    if "pilot" in data and not data["pilot"] >= 0:
        raise src.error(path + ("pilot",), f"must be >= 0 (architectures run on a second seed), but got {shown(data['pilot'])}.")
    if kind == "percentile" and not 0 <= data["percentile"] <= 100:
        raise src.error(
            path + ("percentile",), f"must be between 0 and 100 inclusive, but got {shown(data['percentile'])}."
        )
    try:
        return PrunerSpec(kind=kind, options=tuple(sorted(data.items())), wrapped=wrapped)
    except ConfigError as err:
        raise src.rejected(path, err) from None


def _annotation(annotation: Any) -> Any:
    """A constructor annotation (often a string) as a type `type_ok` reads, or None."""
    if annotation is inspect.Parameter.empty:
        return None
    if not isinstance(annotation, str):
        return annotation
    names = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None)}
    parts = [part.strip() for part in annotation.split("|")]
    if not all(part in names for part in parts):
        return None  # something richer (a callable, a class): Optuna checks it
    hint: Any = names[parts[0]]
    for part in parts[1:]:
        hint = hint | names[part]
    return hint
