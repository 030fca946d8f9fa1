"""Architecture configs: one validated, frozen value per network, with a canonical form.

An architecture is the fast CIFAR-10 ResNet backbone (Page, "How to train your ResNet",
2018; the ResNet-9 of DAWNBench) plus what is inserted at each stage L1..L3. The
canonical JSON leaves out every field at its default, so adding a new search dimension
later (with a neutral default) keeps the hash of every stored architecture unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

from nas.errors import ConfigError

STAGES = ("L1", "L2", "L3")
MAX_LAYERS_PER_STAGE = 8  # more than this is a typo, not a search


@dataclass(frozen=True)
class StageConfig:
    """What is inserted after the pool of one stage (in this order)."""

    extra: int = 0  # additional conv-BN-ReLU layers after the pool
    residual: int = 0  # residual blocks (two conv-BN-ReLU, identity shortcut) after the extras

    def __post_init__(self) -> None:
        for name in ("extra", "residual"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, but got {value!r}.")
            if not 0 <= value <= MAX_LAYERS_PER_STAGE:
                raise ConfigError(
                    f"{name} must be between 0 and {MAX_LAYERS_PER_STAGE}, but got {value}."
                )


@dataclass(frozen=True)
class ArchConfig:
    """One network of the family. Build it with `nas.models.build_model`."""

    width: float = 1.0  # channel multiplier: prep 64w, L1 128w, L2 256w, L3 512w
    L1: StageConfig = field(default_factory=StageConfig)
    L2: StageConfig = field(default_factory=StageConfig)
    L3: StageConfig = field(default_factory=StageConfig)

    def __post_init__(self) -> None:
        if isinstance(self.width, bool) or not isinstance(self.width, (int, float)):
            raise ConfigError(f"width must be a number, but got {self.width!r}.")
        if not 0.0 < self.width <= 8.0:
            raise ConfigError(f"width must be in (0, 8], but got {self.width}.")
        # ints and floats that are equal must hash the same: store width as float.
        object.__setattr__(self, "width", float(self.width))

    # ---- canonical form -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The canonical dict: fields at their default value are left out."""
        out: dict[str, Any] = {}
        if self.width != 1.0:
            out["width"] = self.width
        for stage in STAGES:
            stage_dict = _non_default(getattr(self, stage))
            if stage_dict:
                out[stage] = stage_dict
        return out

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace. Equal configs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """A stable 12-hex-digit id of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "arch") -> ArchConfig:
        """Validate a plain mapping (from YAML or JSON); errors name the key path.

        Args:
            data: e.g. ``{"width": 0.25, "L1": {"residual": 1}, "L3": {"residual": 1}}``.
            source: where `data` came from, used as the prefix of key paths in errors.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping, but got {type(data).__name__}.")
        allowed = {f.name for f in fields(cls)}
        _reject_unknown(data, allowed, source)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            path = f"{source}.{key}"
            if key in STAGES:
                if value is None:
                    value = {}
                if not isinstance(value, dict):
                    raise ConfigError(
                        f"{path}: expected a mapping such as {{residual: 1}}, but got {value!r}."
                    )
                _reject_unknown(value, {f.name for f in fields(StageConfig)}, path)
                kwargs[key] = _build(StageConfig, value, path)
            else:
                kwargs[key] = value
        return _build(cls, kwargs, source)

    @classmethod
    def from_json(cls, text: str) -> ArchConfig:
        return cls.from_dict(json.loads(text))

    # ---- names people read ----------------------------------------------------------

    def short_name(self) -> str:
        """Compact form for tables and logs, e.g. ``R:L1+L3 X:L2 w=0.25``.

        ``R`` lists stages with residual blocks and ``X`` stages with extra layers; a
        count above one is written as ``L1x2``. ``base`` is the plain backbone.
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
        if not parts:
            parts.append("base")
        if self.width != 1.0:
            parts.append(f"w={self.width:g}")
        return " ".join(parts)

    def replace(self, **changes: Any) -> ArchConfig:
        """A copy with top-level fields changed, validated again."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(changes)
        return ArchConfig(**data)


def parse_short_name(text: str) -> ArchConfig:
    """Inverse of `ArchConfig.short_name`: ``"R:L1+L3 X:L2 w=0.25"`` -> config."""
    stages: dict[str, dict[str, int]] = {s: {} for s in STAGES}
    width = 1.0
    for token in text.split():
        if token == "base":
            continue
        if token.startswith("w="):
            try:
                width = float(token[2:])
            except ValueError:
                raise ConfigError(f"width in {text!r}: {token!r} is not a number.") from None
            continue
        letter, sep, rest = token.partition(":")
        attr = {"R": "residual", "X": "extra"}.get(letter)
        if not sep or attr is None:
            raise ConfigError(
                f"cannot read {token!r} in architecture {text!r}: expected R:L1+L3, X:L2 or w=0.5."
            )
        for item in rest.split("+"):
            stage, _, count = item.partition("x")
            if stage not in STAGES or (count and not count.isdigit()):
                raise ConfigError(
                    f"cannot read {item!r} in architecture {text!r}: stages are L1, L2, L3,"
                    " optionally with a count such as L1x2."
                )
            stages[stage][attr] = int(count or 1)
    return ArchConfig.from_dict({"width": width, **stages})


def _non_default(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj) if getattr(obj, f.name) != f.default}


def _reject_unknown(data: dict[str, Any], allowed: set[str], path: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            f"{path}.{unknown[0]}: unknown key; allowed keys are {', '.join(sorted(allowed))}."
        )


def _build(cls: type, kwargs: dict[str, Any], path: str) -> Any:
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
