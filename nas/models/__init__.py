"""The fast CIFAR-10 ResNet family: configs, blocks, the builder and cost counters.

The configs (`nas.models.arch`) import no torch, so experiment files are read and checked
without it (torch takes seconds to import). The torch parts are imported on first use
(PEP 562): ``from nas.models import build_model`` imports the builder then.
"""

from __future__ import annotations

import importlib
from typing import Any

from nas.models.arch import STAGES, ArchConfig, DropConfig, ExitConfig, StageConfig, parse_short_name

_LAZY = {  # name -> the module that defines it (and imports torch)
    "FastResNet": "nas.models.builder",
    "build_model": "nas.models.builder",
    "stage_channels": "nas.models.builder",
    "survival_probabilities": "nas.models.builder",
    "unit_channels": "nas.models.builder",
    "count_flops": "nas.models.cost",
    "count_params": "nas.models.cost",
    "DeformConv2d": "nas.models.deform",
    "deform_conv2d": "nas.models.deform",
}

__all__ = [
    "STAGES",
    "ArchConfig",
    "DeformConv2d",
    "DropConfig",
    "ExitConfig",
    "FastResNet",
    "StageConfig",
    "build_model",
    "count_flops",
    "count_params",
    "deform_conv2d",
    "parse_short_name",
    "stage_channels",
    "survival_probabilities",
    "unit_channels",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
