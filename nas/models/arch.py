"""Architecture configs: one validated, frozen value per network, with a canonical form.

An architecture is the fast CIFAR-10 ResNet backbone (Page, "How to train your ResNet",
2018; the ResNet-9 of DAWNBench) plus what is inserted at each stage L1..L3, how blocks
are dropped in training (`DropConfig`), which stages use deformable convolutions and how
the channels grow (`width_schedule`). The canonical JSON leaves out every field at its
default, so adding a new search dimension later (with a neutral default) keeps the hash
of every stored architecture unchanged.

Settings that build the same network are stored the same way, so they share one hash: a
drop of kind ``none`` has rate 0; a drop that cannot drop anything (rate 0, except depth
dropout, whose 1x1 shortcut changes the network; or a net without the blocks it acts on:
residual blocks, and fractal blocks for drop-path; no kind acts on clique blocks) is kind
``none``; ``global_share`` is 0 unless the kind is ``drop_path``; and ``deformable_mask``
is false when no stage is deformable. The search spaces rely on this: they sample each key
on its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

from nas.config.validate import (
    FieldError,
    Rule,
    between,
    check_fields,
    from_dict,
    interval,
    is_finite,
    one_of,
    require,
    setting,
    store_floats,
)
from nas.errors import ConfigError, shown
from nas.models.tricks import TricksConfig

STAGES = ("L1", "L2", "L3")
MAX_LAYERS_PER_STAGE = 8  # more than this is a typo, not a search
MAX_FRACTAL_COLUMNS = 4  # a 4-column fractal block is 15 convs deep; more is a typo
MIN_CLIQUE_LAYERS = 2  # stage II updates each layer from the others: one layer is no clique
MAX_CLIQUE_LAYERS = 6  # 6 layers are 36 convs run 51 times; more is a typo
DROP_KINDS = ("none", "stochastic_depth", "depth_dropout", "drop_path", "width_dropout")
WIDTH_SCHEDULES = ("double", "pyramid")
EXIT_STAGES = ("L1", "L2")  # stages a side exit may follow; after L3 comes the final exit
DEFAULT_EXIT_THRESHOLD = 0.5  # normalised entropy; label smoothing 0.2 alone puts a perfect fit at 0.38
_DROP_TOKENS = {  # short-name token of each drop kind
    "stochastic_depth": "sd",
    "depth_dropout": "dd",
    "drop_path": "dp",
    "width_dropout": "wd",
}
_CLIQUE_RULE = Rule(
    lambda v: v == 0 or MIN_CLIQUE_LAYERS <= v <= MAX_CLIQUE_LAYERS,
    f"0 (none) or between {MIN_CLIQUE_LAYERS} and {MAX_CLIQUE_LAYERS} layers",
)


@dataclass(frozen=True)
class StageConfig:
    """What is inserted after the pool of one stage (in this order)."""

    EXAMPLE: ClassVar[str] = "{residual: 1}"  # shown where a mapping is expected

    extra: int = setting(0, between(0, MAX_LAYERS_PER_STAGE))  # additional conv-BN-ReLU layers after the pool
    # residual blocks (two conv-BN-ReLU, identity shortcut) after the extras
    residual: int = setting(0, between(0, MAX_LAYERS_PER_STAGE))
    # columns of one FractalNet block after the residual blocks; 0 = none
    fractal: int = setting(
        0, between(0, MAX_FRACTAL_COLUMNS, "columns (0 = none)"), types="an integer (columns; 0 = none)"
    )
    # layers of one CliqueNet block after the fractal block; 0 = none
    clique: int = setting(0, _CLIQUE_RULE, types="an integer (layers; 0 = none)")
    deformable: bool = False  # every 3x3 conv of the stage is deformable (offsets start at 0)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class DropConfig:
    """How depth or width is dropped in training; at eval every block runs, unscaled.

    Kinds (see `nas.models.drop` for the exact rules and the papers):
      - ``stochastic_depth``: residual block l of L (counted over the whole net) keeps its
        branch per image with probability p_l = 1 - l/L * rate (rate = 1 - p_L).
      - ``depth_dropout``: every residual branch is bypassed per image with probability
        rate; each residual block gains a trainable 1x1 conv shortcut.
      - ``drop_path``: at each join (the residual sum, the fractal joins) each input is
        dropped per image with probability rate, keeping at least one (local); in a share
        ``global_share`` of batches each block keeps one column for the whole batch.
      - ``width_dropout``: channel dropout with probability rate in every residual branch.
    """

    EXAMPLE: ClassVar[str] = "{kind: stochastic_depth, rate: 0.2}"

    # none | stochastic_depth | depth_dropout | drop_path | width_dropout
    kind: str = setting("none", one_of(DROP_KINDS))
    rate: float = setting(0.0, interval(0, 1))  # probability in [0, 1]; its meaning depends on kind (see above)
    # drop_path only: share of batches dropped globally (FractalNet: 0.5)
    global_share: float = setting(0.0, interval(0, 1))

    def __post_init__(self) -> None:
        check_fields(self)
        store_floats(self, "rate", "global_share")
        # One network, one canonical form (see the module docstring).
        if self.kind != "drop_path":
            object.__setattr__(self, "global_share", 0.0)
        if self.rate == 0.0 and self.global_share == 0.0 and self.kind != "depth_dropout":
            object.__setattr__(self, "kind", "none")
        if self.kind == "none":
            object.__setattr__(self, "rate", 0.0)


@dataclass(frozen=True)
class ExitConfig:
    """Early exits (BranchyNet: Teerapittayanon, McDanel & Kung, ICPR 2016): a side classifier
    after each stage in `stages`; the final exit is the backbone's own head.

    Training minimises sum_n w_n * CE(exit n) (`weights` for the side exits, 1 for the final
    exit); at inference a sample leaves at the first side exit whose softmax entropy divided
    by ln(classes) is below `threshold`. See `nas.models.exits`.

    ``stages`` may be written as a list or as ``"L1+L2"`` (``""``: none), ``weights`` as a
    list, as one number for every side exit, or as ``"0.5+0.3"``; search spaces use the
    strings and single numbers, since Optuna's choices must be scalars. Stored canonically:
    stages in network order, one weight per stage (1.0 when none are given); without stages
    the weights and the threshold are left at their defaults (no exit to weigh or leave at).
    """

    EXAMPLE: ClassVar[str] = "{stages: [L1, L2], weights: 0.5}"

    stages: tuple[str, ...] = ()  # stages followed by a side exit, in network order: L1, L2
    weights: tuple[float, ...] = ()  # loss weight of each side exit; the final exit weighs 1.0
    # operating point: leave where entropy/ln(classes) < this, in [0, 1]
    threshold: float = setting(DEFAULT_EXIT_THRESHOLD, interval(0, 1, note="(softmax entropy / ln(classes))"))

    def __post_init__(self) -> None:
        # the written forms (lists, "L1+L2", one number) first: the field types are the stored form
        stages = _read_exit_stages(self.stages)
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "weights", _read_exit_weights(self.weights, len(stages)))
        check_fields(self)
        weights, threshold = self.weights, float(self.threshold)
        if not stages:  # no exit: nothing to weigh or leave at
            weights, threshold = (), DEFAULT_EXIT_THRESHOLD
        else:
            if not weights:
                weights = (1.0,) * len(stages)
            if len(weights) != len(stages):
                raise FieldError(
                    "weights",
                    f"weights has {len(weights)} values for {len(stages)} side exits (stages "
                    f"{'+'.join(stages)}); give one weight per stage, or one number for all.",
                )
            order = sorted(range(len(stages)), key=lambda i: EXIT_STAGES.index(stages[i]))
            stages, weights = tuple(stages[i] for i in order), tuple(weights[i] for i in order)
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "threshold", threshold)


def _read_exit_stages(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split("+")] if value.strip() else []
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
        raise FieldError(
            "stages", f"stages must be a list of stage names such as [L1, L2] (or 'L1+L2'), but got {shown(value)}."
        )
    for i, stage in enumerate(value):
        if stage not in EXIT_STAGES:
            raise FieldError(
                "stages",
                f"stages: unknown stage {shown(stage)}; a side exit may follow {', '.join(EXIT_STAGES)}"
                " (after L3 comes the final exit).",
            )
        if stage in value[:i]:
            raise FieldError("stages", f"stages lists {stage} twice; a stage takes at most one side exit.")
    return tuple(value)


def _read_exit_weights(value: Any, side_exits: int) -> tuple[float, ...]:
    if isinstance(value, str):
        try:
            value = [float(part) for part in value.split("+")] if value.strip() else []
        except ValueError:
            raise FieldError(
                "weights", f"weights must be numbers such as [0.5, 0.3] (or '0.5+0.3'), but got {shown(value)}."
            ) from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * side_exits  # one number weighs every side exit
    if not isinstance(value, (list, tuple)):
        raise FieldError(
            "weights", f"weights must be a list of numbers, or one number for every side exit, but got {shown(value)}."
        )
    for weight in value:
        number = not isinstance(weight, bool) and isinstance(weight, (int, float))
        require(number and is_finite(weight), "weights", weight, "finite numbers")
        require(weight >= 0, "weights", weight, "non-negative (a loss weight)")
    return tuple(float(w) for w in value)


@dataclass(frozen=True)
class ArchConfig:
    """One network of the family. Build it with `nas.models.build_model`."""

    # channel multiplier: prep 64w, L1 128w, L2 256w, L3 512w
    width: float = setting(1.0, interval(0, 8, open_low=True))
    L1: StageConfig = field(default_factory=StageConfig)  # what follows stage 1's pool (128w channels)
    L2: StageConfig = field(default_factory=StageConfig)  # what follows stage 2's pool (256w channels)
    L3: StageConfig = field(default_factory=StageConfig)  # what follows stage 3's pool (512w channels)
    drop: DropConfig = field(default_factory=DropConfig)  # depth/width dropping in training
    # double: every unit of a stage has the stage's width (64w, 128w, 256w, 512w);
    # pyramid: each unit after prep (stage conv, extra, residual, fractal or clique block)
    # adds the same number of channels, from 64w after prep to 512w at the last unit (PyramidNet).
    width_schedule: str = setting("double", one_of(WIDTH_SCHEDULES))
    deformable_mask: bool = False  # deformable stages use v2 modulation (a 2*sigmoid mask per tap)
    exits: ExitConfig = field(default_factory=ExitConfig)  # BranchyNet side exits; none by default
    # Page's and airbench's training tricks (`nas.models.tricks`); all off by default
    tricks: TricksConfig = field(default_factory=TricksConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        store_floats(self, "width")  # ints and floats that are equal must hash the same
        stages = [getattr(self, stage) for stage in STAGES]
        if not any(s.deformable for s in stages):
            object.__setattr__(self, "deformable_mask", False)  # no deformable conv to modulate
        fractal_joins = self.drop.kind == "drop_path" and any(s.fractal for s in stages)
        droppable = any(s.residual for s in stages) or fractal_joins
        if not droppable:
            object.__setattr__(self, "drop", DropConfig())  # no block it would drop

    # ---- canonical form -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The canonical dict: fields at their default value are left out."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if is_dataclass(value):
                nested = _non_default(value)
                if nested:
                    out[f.name] = nested
            elif value != f.default:
                out[f.name] = value
        return out

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace. Equal configs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """A stable 12-hex-digit id of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "arch") -> ArchConfig:
        """Validate a plain mapping (from YAML or JSON); errors name the key path.

        Args:
            data: e.g. ``{"width": 0.25, "L1": {"residual": 1}, "L3": {"residual": 1}}``.
            source: where `data` came from, used as the prefix of key paths in errors.
        """
        return from_dict(cls, data, source)

    @classmethod
    def from_json(cls, text: str) -> ArchConfig:
        return cls.from_dict(json.loads(text))

    def to_flat(self) -> dict[str, Any]:
        """Every field under its dotted key, defaults included: {"width": 1.0, "L1.extra": 0, ...}."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if is_dataclass(value):
                for g in fields(value):
                    out[f"{f.name}.{g.name}"] = getattr(value, g.name)
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_flat(cls, values: dict[str, Any], *, source: str = "arch") -> ArchConfig:
        """From dotted keys as search spaces write them: ``{"width": 0.5, "L1.residual": 1}``."""
        nested: dict[str, Any] = {}
        for key, value in values.items():
            head, dot, tail = key.partition(".")
            if dot:
                nested.setdefault(head, {})[tail] = value
            else:
                nested[key] = value
        return cls.from_dict(nested, source=source)

    # ---- names people read ----------------------------------------------------------

    def short_name(self) -> str:
        """Compact form for tables and logs, e.g. ``R:L1+L3 X:L2 w=0.25``.

        ``R`` lists stages with residual blocks and ``X`` stages with extra layers; a
        count above one is written as ``L1x2``. ``F3:L2`` is a 3-column fractal block at
        L2, ``C4:L2`` a 4-layer clique block at L2; ``D:L2`` makes L2's convs deformable
        (``Dm:L2`` with the v2 modulation mask). ``E:L1+L2`` puts early exits after L1 and
        L2, ``ew=0.3`` (or ``ew=0.5+0.3``, per exit) their loss weights when not 1, ``et=0.4``
        their entropy threshold when not the default.
        Drops are ``sd=0.2`` (stochastic depth), ``dd=0.5`` (depth dropout), ``dp=0.1``
        (drop-path; ``dpg=0.5`` its global share) and ``wd=0.1`` (width dropout); ``pyr``
        is the pyramid width schedule. ``base`` is the plain backbone. A training trick that
        is on is ``t.<field>=<value>`` (``t.activation=celu t.ema_decay=0.99``).
        """
        parts = []
        for letter, attr in (("R", "residual"), ("X", "extra")):
            stages = []
            for stage in STAGES:
                count = getattr(getattr(self, stage), attr)
                if count:
                    stages.append(stage if count == 1 else f"{stage}x{count}")
            if stages:
                parts.append(f"{letter}:{'+'.join(stages)}")
        for columns in range(1, MAX_FRACTAL_COLUMNS + 1):
            stages = [stage for stage in STAGES if getattr(self, stage).fractal == columns]
            if stages:
                parts.append(f"F{columns}:{'+'.join(stages)}")
        for layers in range(MIN_CLIQUE_LAYERS, MAX_CLIQUE_LAYERS + 1):
            stages = [stage for stage in STAGES if getattr(self, stage).clique == layers]
            if stages:
                parts.append(f"C{layers}:{'+'.join(stages)}")
        deformable = [stage for stage in STAGES if getattr(self, stage).deformable]
        if deformable:
            parts.append(f"{'Dm' if self.deformable_mask else 'D'}:{'+'.join(deformable)}")
        if self.exits.stages:
            parts += _exit_tokens(self.exits)
        if not parts:
            parts.append("base")
        if self.drop.kind != "none":
            token = _DROP_TOKENS[self.drop.kind]
            parts.append(f"{token}={_number(self.drop.rate)}")
            if self.drop.global_share:  # drop_path only
                parts.append(f"dpg={_number(self.drop.global_share)}")
        if self.width_schedule == "pyramid":
            parts.append("pyr")
        if self.width != 1.0:
            parts.append(f"w={_number(self.width)}")
        parts += [f"t.{name}={_trick_text(value)}" for name, value in _non_default(self.tricks).items()]
        return " ".join(parts)

    def replace(self, **changes: Any) -> ArchConfig:
        """A copy with top-level fields changed, validated again."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(changes)
        return ArchConfig(**data)


def parse_short_name(text: str) -> ArchConfig:
    """Inverse of `ArchConfig.short_name`: ``"R:L1+L3 X:L2 F3:L2 C4:L2 D:L2 sd=0.2 pyr w=0.25"`` -> config."""
    stages: dict[str, dict[str, Any]] = {s: {} for s in STAGES}
    top: dict[str, Any] = {}
    drop: dict[str, Any] = {}
    exits: dict[str, Any] = {}
    tricks: dict[str, Any] = {}
    kinds = {token: kind for kind, token in _DROP_TOKENS.items()}
    for token in text.split():
        name, eq, value = token.partition("=")
        if token == "base":
            continue
        if token == "pyr":
            top["width_schedule"] = "pyramid"
            continue
        if eq and name == "w":
            top["width"] = _read_number(value, token, text)
            continue
        if eq and name in kinds:
            if "kind" in drop:
                raise ConfigError(f"cannot read {shown(token)} in architecture {shown(text)}: it names two drop kinds; keep one.")
            drop.update(kind=kinds[name], rate=_read_number(value, token, text))
            continue
        if eq and name == "dpg":
            drop["global_share"] = _read_number(value, token, text)
            continue
        if token.startswith("E:"):
            exits["stages"] = token[2:]
            continue
        if eq and name == "ew":  # one number for every exit, or one per exit joined by +
            exits["weights"] = value if "+" in value else _read_number(value, token, text)
            continue
        if eq and name == "et":
            exits["threshold"] = _read_number(value, token, text)
            continue
        if eq and name.startswith("t."):  # a training trick (`TricksConfig`), validated below
            tricks[name[2:]] = _read_trick(value)
            continue
        letter, sep, rest = token.partition(":")
        attr, attr_value = _STAGE_LETTERS.get(letter, (None, None))
        if letter.startswith("F") and letter[1:].isdigit():
            attr, attr_value = "fractal", int(letter[1:])
        if letter.startswith("C") and letter[1:].isdigit():
            attr, attr_value = "clique", int(letter[1:])
        if not sep or attr is None:
            raise ConfigError(
                f"cannot read {shown(token)} in architecture {shown(text)}: expected R:L1+L3, X:L2, F3:L2, D:L2,"
                " Dm:L2, C4:L2, sd=0.2, dd=0.5, dp=0.1, dpg=0.5, wd=0.1, pyr, w=0.5 or t.activation=celu."
            )
        if letter == "Dm":
            top["deformable_mask"] = True
        for item in rest.split("+"):
            stage, _, count = item.partition("x")
            counted = attr in ("residual", "extra")
            if stage not in STAGES or (count and not (counted and count.isdigit())):
                raise ConfigError(
                    f"cannot read {shown(item)} in architecture {shown(text)}: stages are L1, L2, L3,"
                    " optionally with a count such as L1x2 (R and X only)."
                )
            stages[stage][attr] = int(count) if count else attr_value
    if "global_share" in drop and drop.get("kind") != "drop_path":
        raise ConfigError(f"cannot read architecture {shown(text)}: dpg= (drop-path global share) needs dp= too.")
    if exits and "stages" not in exits:
        raise ConfigError(f"cannot read architecture {shown(text)}: ew= and et= (early exits) need E:L1 or the like too.")
    data: dict[str, Any] = {**top, **stages}
    if drop:
        data["drop"] = drop
    if exits:
        data["exits"] = exits
    if tricks:
        data["tricks"] = tricks
    return ArchConfig.from_dict(data)


def _trick_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _number(value) if isinstance(value, float) else str(value)


def _read_trick(text: str) -> Any:
    """A trick's value as `_trick_text` writes it: true/false, a number, else the word."""
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


_STAGE_LETTERS: dict[str, tuple[str, Any]] = {  # short-name letter -> (stage field, value of a bare stage)
    "R": ("residual", 1),
    "X": ("extra", 1),
    "D": ("deformable", True),
    "Dm": ("deformable", True),
}


def _exit_tokens(exits: ExitConfig) -> list[str]:
    """``E:L1+L2``, then ``ew=`` (weights, when not all 1) and ``et=`` (threshold, when not the default)."""
    tokens = [f"E:{'+'.join(exits.stages)}"]
    if any(w != 1.0 for w in exits.weights):
        same = len(set(exits.weights)) == 1
        tokens.append("ew=" + (_number(exits.weights[0]) if same else "+".join(_number(w) for w in exits.weights)))
    if exits.threshold != DEFAULT_EXIT_THRESHOLD:
        tokens.append(f"et={_number(exits.threshold)}")
    return tokens


def _number(value: float) -> str:
    """Shortest text that reads back as exactly `value` (0.25, not 0.250000)."""
    text = f"{value:g}"
    return text if float(text) == value else repr(value)


def _read_number(text: str, token: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"cannot read {shown(token)} in architecture {shown(name)}: {shown(text)} is not a number.") from None


def _non_default(obj: Any) -> dict[str, Any]:
    # Tuples (exits.stages) as lists: the dict is plain data for JSON and YAML alike.
    return {
        f.name: list(value) if isinstance(value, tuple) else value
        for f in fields(obj) if (value := getattr(obj, f.name)) != f.default
    }

