"""The fast CIFAR-10 ResNet family: configs, blocks, the builder and cost counters."""

from nas.models.arch import STAGES, ArchConfig, StageConfig, parse_short_name
from nas.models.builder import FastResNet, build_model, stage_channels
from nas.models.cost import count_flops, count_params

__all__ = [
    "STAGES",
    "ArchConfig",
    "FastResNet",
    "StageConfig",
    "build_model",
    "count_flops",
    "count_params",
    "parse_short_name",
    "stage_channels",
]
