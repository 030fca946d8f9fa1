"""Universally slimmable networks: one set of weights that runs at any width ratio.

US-Nets (Yu & Huang, "Universally Slimmable Networks and Improved Training Techniques",
ICCV 2019) train a network so that every width between a minimum and a maximum works, by
slicing the first channels of each layer. Here the network at width ratio r of an
architecture is exactly the family member ``arch.replace(width=arch.width * r)``
(`width_member`): each unit keeps the first channels that `unit_channels` gives that member,
so rounding, the pyramid schedule and the costs agree with the builder, and
`count_params(extract_width(model, r)) == count_params(build_model(width_member(arch, r)))`.

A max-width `FastResNet` is made slimmable in place (`make_slimmable`): its convs run on
their first ``active_out`` filters and on as many input channels as they are given, its
BatchNorms and head on the channels they are given, and every residual shortcut pads the
identity to the block's active width. `set_width` sets the active filters of every conv
from the member built on the meta device (no memory, no weights). `extract_width` copies
the sliced weights into a standalone `FastResNet` of the member, for evaluation, costs and
export. The training recipe (sandwich rule, inplace distillation, BN recalibration) is in
`nas.training.usnets`.

Supported: the backbone, extra layers, residual blocks and both width schedules. The other
primitives are refused by `check_slimmable` (deformable convs slice their offset convs
differently, fractal and clique blocks and early exits are not sliced here, drops are left
out until tested under slicing).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import ConfigError
from nas.models.arch import ArchConfig
from nas.models.blocks import PadChannels, ResidualBlock
from nas.models.builder import FastResNet, build_model, unit_channels
from nas.training.recipe import SLIMMABLE_SUPPORTED, slimmable_conflicts

# ----------------------------------------------------------------------------- which architectures


def check_slimmable(arch: ArchConfig, *, source: str = "recipe.slimmable") -> None:
    """Raise ConfigError unless `arch` can be trained as a universally slimmable network."""
    conflicts = slimmable_conflicts(arch.to_flat())
    if conflicts:
        raise ConfigError(
            f"{source}: slimmable training supports {SLIMMABLE_SUPPORTED}, but {arch.short_name()} has "
            f"{', '.join(conflicts)}; remove {'them' if len(conflicts) > 1 else 'it'} or train without slimmable."
        )


def width_member(arch: ArchConfig, ratio: float) -> ArchConfig:
    """The family member at width ratio `ratio` of `arch`: its width times `ratio`."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"a width ratio must be in (0, 1], but got {ratio=}.")
    return arch.replace(width=arch.width * ratio)


# ----------------------------------------------------------------------------- sliced layers


class SlimmableConv2d(nn.Conv2d):
    """A conv that runs on its first `active_out` filters (None: all) and on the first input
    channels of each filter, as many as its input has."""

    active_out: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.active_out or self.out_channels
        weight = self.weight[:out, : x.shape[1]]
        bias = self.bias[:out] if self.bias is not None else None
        return self._conv_forward(x, weight, bias)


class SlimmableBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the channels it is given: the first entries of its affine parameters and
    running statistics. With `update_stats` false, training normalises with the batch
    statistics and leaves the running ones alone (the widths that only learn by distillation
    must not overwrite the max width's statistics, which its per-epoch evaluation uses)."""

    update_stats: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        track = self.training and self.track_running_stats and self.update_stats
        factor = 0.0 if self.momentum is None else self.momentum
        if track and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or self.running_mean is None
        keep = self.running_mean is not None and (track or not self.training)
        return F.batch_norm(
            x,
            self.running_mean[:c] if keep else None,  # views: updated in place, as nn.BatchNorm2d does
            self.running_var[:c] if keep else None,
            self.weight[:c] if self.weight is not None else None,
            self.bias[:c] if self.bias is not None else None,
            use_batch_stats,
            factor,
            self.eps,
        )


class SlimmableLinear(nn.Linear):
    """A linear layer over the first input features, as many as it is given (all outputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.shape[1]], self.bias)


_SLIMMABLE = {nn.Conv2d: SlimmableConv2d, nn.BatchNorm2d: SlimmableBatchNorm2d, nn.Linear: SlimmableLinear}


def make_slimmable(model: FastResNet) -> FastResNet:
    """Make a max-width network slimmable, in place, and return it.

    Each conv, BatchNorm and linear layer becomes its slimmable subclass: the same object
    with the same parameters, buffers and state_dict keys, only `forward` slices. Identity
    shortcuts become `PadChannels` (no weights), since a narrower member may widen where the
    max width does not.

    Raises:
        ConfigError: the architecture has a primitive slimming does not support.
    """
    check_slimmable(model.arch)
    for module in model.modules():
        slimmable = _SLIMMABLE.get(type(module))
        if slimmable is not None:
            module.__class__ = slimmable  # the same module and weights; only forward changes
        if isinstance(module, ResidualBlock) and isinstance(module.shortcut, nn.Identity):
            module.shortcut = PadChannels(module.branch[-1].conv.out_channels)
    model.width_plans = {}  # unit channels -> [(module, active channels)], filled by set_width
    return model


def _active_channels(member: ArchConfig) -> list[tuple[str, int]]:
    """(module name, output channels) of every conv and residual shortcut of `member`."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        net = FastResNet(member)
    out: list[tuple[str, int]] = []
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            out.append((name, module.out_channels))
        elif isinstance(module, ResidualBlock):
            out.append((f"{name}.shortcut", module.branch[-1].conv.out_channels))
    return out


def set_width(model: FastResNet, ratio: float) -> FastResNet:
    """Run a `make_slimmable` network as its member at width ratio `ratio` (1: the whole net).

    Returns:
        `model`, whose forward is now exactly that of the member with the sliced weights.
    """
    plans = getattr(model, "width_plans", None)
    if plans is None:
        raise ValueError("set_width needs a slimmable network: call make_slimmable(model) first.")
    member = width_member(model.arch, ratio)
    # Widths that round to the same channels share a plan: a few hundred per net at most.
    key = tuple(c for units in unit_channels(member).values() for c in units)
    if key not in plans:
        plans[key] = [(model.get_submodule(name), channels) for name, channels in _active_channels(member)]
    for module, channels in plans[key]:
        if isinstance(module, PadChannels):
            module.out_channels = channels
        else:
            module.active_out = channels
    return model


def set_bn_updates(model: nn.Module, update: bool) -> None:
    """Whether the slimmable BatchNorms of `model` update their running statistics in training."""
    for module in _slimmable_norms(model):
        module.update_stats = update


def _slimmable_norms(model: nn.Module) -> Iterator[SlimmableBatchNorm2d]:
    return (m for m in model.modules() if isinstance(m, SlimmableBatchNorm2d))


# ----------------------------------------------------------------------------- standalone members


def slice_state_dict(state: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
    """The first entries of each tensor of `state` along every dimension, to `shapes`."""
    return {key: state[key][tuple(slice(0, n) for n in shape)].clone() for key, shape in shapes.items()}


def extract_width(model: FastResNet, ratio: float) -> FastResNet:
    """A standalone `FastResNet` of the member at width ratio `ratio`, holding the sliced weights
    and running statistics of `model` (a max-width net, slimmable or not), on its device and
    in its training mode."""
    member = build_model(width_member(model.arch, ratio))
    shapes = {key: value.shape for key, value in member.state_dict().items()}
    member.load_state_dict(slice_state_dict(model.state_dict(), shapes))
    parameter = next(model.parameters())
    return member.to(parameter.device, memory_format=torch.channels_last).train(model.training)
