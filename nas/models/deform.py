"""Deformable convolution v1 and v2, in plain torch (no torchvision).

v1: Dai et al., "Deformable Convolutional Networks", ICCV 2017. Each kernel tap k at each
output position p0 samples the input at p0 + p_k + dp_k, where the offsets dp_k (2 per
tap: dy, dx) come from an ordinary conv over the same input, initialised to zero so the
layer starts as the plain conv. v2: Zhu et al., "Deformable ConvNets v2", CVPR 2019,
multiplies each sampled tap by a modulation scalar m_k.

Sampling is bilinear with zeros outside the image (`F.grid_sample`), exactly as
torchvision.ops.deform_conv2d; the sampled taps then meet the weights in one 1x1 conv, so
the matmul FLOPs are those of the plain conv. `FlopCounterMode` counts ops it does not know
as 0, so a formula for `grid_sample` is registered here: 4 multiply-adds (8 FLOPs) per
bilinear output value.

Modulation: DCNv2 uses sigmoid(m), which a zero-initialised mask conv starts at 0.5 and so
halves the output. Here the mask is 2 * sigmoid(m): it starts at exactly 1, so a v2 layer
also starts as the plain conv, and it can still range over (0, 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair
from torch.utils.flop_counter import flop_registry, register_flop_formula

_aten = torch.ops.aten
_TAPS = {0: 4, 1: 0, 2: 16}  # grid_sample interpolation mode (bilinear, nearest, bicubic) -> input values mixed


def _grid_sampler_flops(input_shape, grid_shape, interpolation_mode, *args, out_shape=None, **kwargs) -> int:
    """One multiply-add (2 FLOPs) per input value mixed into each output value."""
    batch, channels = input_shape[:2]
    outputs = batch * channels * grid_shape[1] * grid_shape[2]
    return 2 * _TAPS.get(interpolation_mode, 4) * outputs


def _grid_sampler_backward_flops(grad_shape, input_shape, grid_shape, interpolation_mode, *args, out_shape=None, **kwargs) -> int:
    """Gradients for the input and the grid: twice the forward."""
    return 2 * _grid_sampler_flops(input_shape, grid_shape, interpolation_mode)


if _aten.grid_sampler_2d not in flop_registry:  # importing twice, or a torch that counts it itself
    register_flop_formula(_aten.grid_sampler_2d)(_grid_sampler_flops)
if _aten.grid_sampler_2d_backward not in flop_registry:
    register_flop_formula(_aten.grid_sampler_2d_backward)(_grid_sampler_backward_flops)


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deformable 2-D convolution; the layouts are those of torchvision.ops.deform_conv2d.

    Args:
        x: input (B, C_in, H, W).
        offset: (B, 2*kh*kw, H_out, W_out): for tap k (row-major over the kernel),
            channel 2k is the row offset dy and 2k+1 the column offset dx, in pixels.
        weight: (C_out, C_in, kh, kw) (one group).
        bias: (C_out,) or None.
        stride, padding, dilation: as for `F.conv2d`.
        mask: (B, kh*kw, H_out, W_out) modulation per tap (v2), or None (v1).
    """
    batch, channels, height, width = x.shape
    out_channels, in_channels, kh, kw = weight.shape
    if in_channels != channels:
        raise ValueError(f"weight expects {in_channels} input channels, but x has {channels}.")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    taps = kh * kw
    if offset.shape != (batch, 2 * taps, out_h, out_w):
        raise ValueError(f"offset must be {(batch, 2 * taps, out_h, out_w)}, but got {tuple(offset.shape)}.")

    # Where each tap of each output pixel samples, in input pixel coordinates.
    dtype = torch.promote_types(x.dtype, torch.float32)  # sample in float32 or better:
    like = {"device": x.device, "dtype": dtype}  # positions in bf16 would be off by pixels
    tap_y, tap_x = torch.meshgrid(torch.arange(kh, **like) * dh, torch.arange(kw, **like) * dw, indexing="ij")
    rows = tap_y.reshape(taps, 1, 1) + (torch.arange(out_h, **like) * sh - ph).view(1, out_h, 1)
    cols = tap_x.reshape(taps, 1, 1) + (torch.arange(out_w, **like) * sw - pw).view(1, 1, out_w)
    offset = offset.view(batch, taps, 2, out_h, out_w).to(dtype)
    y = rows + offset[:, :, 0]  # (B, taps, H_out, W_out)
    x_pos = cols + offset[:, :, 1]
    # grid_sample with align_corners=False puts pixel i's centre at (2i + 1) / size - 1.
    grid = torch.stack(((2 * x_pos + 1) / width - 1, (2 * y + 1) / height - 1), dim=-1)
    sampled = F.grid_sample(
        x.to(dtype), grid.view(batch, taps * out_h, out_w, 2),
        mode="bilinear", padding_mode="zeros", align_corners=False,
    )  # (B, C_in, taps * H_out, W_out)
    sampled = sampled.view(batch, channels, taps, out_h, out_w)
    if mask is not None:
        sampled = sampled * mask.view(batch, 1, taps, out_h, out_w).to(sampled.dtype)
    columns = sampled.reshape(batch, channels * taps, out_h, out_w)  # channel c * taps + k
    return F.conv2d(columns.to(x.dtype), weight.reshape(out_channels, channels * taps, 1, 1), bias)


class DeformConv2d(nn.Conv2d):
    """A conv whose taps move: offsets (and, v2, a mask) come from convs of the input.

    A subclass of `nn.Conv2d`, so its weight and bias are drawn exactly as the plain
    conv's and keep the same state_dict keys (``weight``, ``bias``); the offset and mask
    convs (``offset.*``, ``mask.*``) start at zero without drawing random numbers, so a
    network built with deformable convs starts as the same network built without them.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as
            `nn.Conv2d` (one group).
        modulated: add the v2 modulation mask, 2 * sigmoid(mask conv), which starts at 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 1,
        dilation: int | tuple[int, int] = 1,
        bias: bool = False,
        *,
        modulated: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=bias)
        taps = self.kernel_size[0] * self.kernel_size[1]
        geometry = {"kernel_size": self.kernel_size, "stride": stride, "padding": padding, "dilation": dilation}
        self.offset = _zero_conv(in_channels, 2 * taps, **geometry)
        self.mask = _zero_conv(in_channels, taps, **geometry) if modulated else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset(x)
        mask = 2.0 * torch.sigmoid(self.mask(x)) if self.mask is not None else None
        return deform_conv2d(
            x, offset, self.weight, self.bias,
            stride=self.stride, padding=self.padding, dilation=self.dilation, mask=mask,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", modulated={self.mask is not None}"


def _zero_conv(in_channels: int, out_channels: int, **geometry) -> nn.Conv2d:
    """A conv with zero weights and bias, made without touching the random state."""
    conv = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, bias=True, **geometry)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv
