"""The fast CIFAR-10 ResNet family: configs, blocks, the builder and cost counters."""

from nas.models.arch import STAGES, ArchConfig, DropConfig, ExitConfig, StageConfig, parse_short_name
from nas.models.builder import (
    FastResNet,
    build_model,
    stage_channels,
    survival_probabilities,
    unit_channels,
)
from nas.models.cost import count_flops, count_params
from nas.models.deform import DeformConv2d, deform_conv2d

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
