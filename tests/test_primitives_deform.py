"""Deformable convolution v1/v2 in plain torch: equal to a conv at zero offsets, to a naive
bilinear reference at random offsets, to torchvision (in this process where it imports, else
in the side venv of `make torchvision-venv`); FLOPs counted."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.models import ArchConfig, DeformConv2d, build_model, count_flops, deform_conv2d, stage_channels


def _rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _bilinear(img: torch.Tensor, y: float, x: float) -> float:
    """Value of one (H, W) image at (y, x): bilinear over the 4 neighbours, zero outside."""
    height, width = img.shape
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    value = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                value += wy * wx * img[yy, xx].item()
    return value


def _naive_deform_conv(x, offset, weight, bias, stride, padding, dilation, mask=None) -> torch.Tensor:
    """The definition, one output value at a time (Dai et al. 2017, eq. 2; Zhu et al. 2019, eq. 1)."""
    batch, channels, _, _ = x.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[2:]
    out = torch.zeros(batch, out_channels, out_h, out_w, dtype=torch.float64)
    for b in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                for k in range(kh * kw):
                    ki, kj = divmod(k, kw)
                    y = i * stride - padding + ki * dilation + offset[b, 2 * k, i, j].item()
                    x_pos = j * stride - padding + kj * dilation + offset[b, 2 * k + 1, i, j].item()
                    m = 1.0 if mask is None else mask[b, k, i, j].item()
                    sampled = torch.tensor([_bilinear(x[b, c], y, x_pos) for c in range(channels)], dtype=torch.float64)
                    out[b, :, i, j] += m * (weight[:, :, ki, kj].double() @ sampled)
    if bias is not None:
        out += bias.double().view(1, -1, 1, 1)
    return out.float()


# ---- the function ---------------------------------------------------------------------


@pytest.mark.parametrize(("stride", "padding", "dilation"), [(1, 1, 1), (2, 1, 1), (1, 2, 2), (1, 0, 1)])
def test_zero_offsets_equal_a_plain_conv(stride, padding, dilation):
    x, weight, bias = _rand(2, 3, 7, 7), _rand(4, 3, 3, 3, seed=1), _rand(4, seed=2)
    expected = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    offset = torch.zeros(2, 18, *expected.shape[2:])
    out = deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    mask = torch.ones(2, 9, *expected.shape[2:])
    out_v2 = deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)
    torch.testing.assert_close(out_v2, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize(("stride", "padding", "dilation"), [(1, 1, 1), (2, 1, 2)])
def test_random_offsets_equal_the_naive_bilinear_reference(modulated, stride, padding, dilation):
    x, weight, bias = _rand(2, 2, 5, 5), _rand(3, 2, 3, 3, seed=1), _rand(3, seed=2)
    out_h = (5 + 2 * padding - dilation * 2 - 1) // stride + 1
    offset = _rand(2, 18, out_h, out_h, seed=3, scale=1.5)  # reaches outside the image too
    mask = torch.rand(2, 9, out_h, out_h, generator=torch.Generator().manual_seed(4)) if modulated else None
    out = deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)
    expected = _naive_deform_conv(x, offset, weight, bias, stride, padding, dilation, mask)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


# torchvision's op, run where it imports: in this process, else in the side venv that `make
# torchvision-venv` creates (NAS_TORCHVISION_PYTHON names another python; CI sets
# NAS_REQUIRE_TORCHVISION=1, and then neither being there fails instead of skipping).
TORCHVISION_CHILD = Path(__file__).with_name("torchvision_child.py")
REPO = Path(__file__).resolve().parent.parent


def _torchvision_cases() -> list[dict]:
    """Random inputs, offsets reaching outside the image, over (stride, padding, dilation,
    kernel, bias, mask); the first two are the 3x3, stride-1 v1 and v2 of one input."""
    cases = []
    for i, (stride, padding, dilation, kernel, bias, modulated) in enumerate([
        ((1, 1), (1, 1), (1, 1), (3, 3), True, False),
        ((1, 1), (1, 1), (1, 1), (3, 3), True, True),
        ((2, 2), (1, 1), (1, 1), (3, 3), False, True),
        ((1, 1), (2, 2), (2, 2), (3, 3), True, False),
        ((2, 1), (0, 1), (1, 2), (3, 2), True, True),
    ]):
        seed = 0 if i < 2 else 10 * i  # cases 0 and 1 share their input
        height, width = (6, 6) if i < 2 else (7, 6)
        out_h = (height + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
        out_w = (width + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
        taps = kernel[0] * kernel[1]
        cases.append({
            "x": _rand(2, 3, height, width, seed=seed), "weight": _rand(4, 3, *kernel, seed=seed + 1),
            "bias": _rand(4, seed=seed + 2) if bias else None,
            "offset": _rand(2, 2 * taps, out_h, out_w, seed=seed + 3, scale=2.0),
            "mask": torch.rand(2, taps, out_h, out_w, generator=torch.Generator().manual_seed(seed + 4))
            if modulated else None,
            "stride": stride, "padding": padding, "dilation": dilation,
        })
    return cases


def _torchvision_outputs(cases: list[dict], tmp_path: Path) -> list[torch.Tensor]:
    try:
        from torchvision.ops import deform_conv2d as tv_deform_conv2d
    except Exception as err:  # absent, or built for another torch (its ops fail to load)
        not_here = f"{type(err).__name__}: {err}"
    else:
        return [tv_deform_conv2d(c["x"], c["offset"], c["weight"], c["bias"], stride=c["stride"],
                                 padding=c["padding"], dilation=c["dilation"], mask=c["mask"]) for c in cases]
    python = Path(os.environ.get("NAS_TORCHVISION_PYTHON", ".venv-torchvision/bin/python"))
    python = python if python.is_absolute() else REPO / python
    if not python.exists():
        reason = (f"torchvision is not importable here ({not_here}) and there is no side venv at {python}: "
                  "`make torchvision-venv` creates it")
        if os.environ.get("NAS_REQUIRE_TORCHVISION") == "1":
            pytest.fail(f"NAS_REQUIRE_TORCHVISION=1, but {reason}")
        pytest.skip(reason)
    torch.save(cases, tmp_path / "cases.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the side venv's own torch only
    run = subprocess.run([str(python), str(TORCHVISION_CHILD), str(tmp_path / "cases.pt"), str(tmp_path / "out.pt")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, f"{python} {TORCHVISION_CHILD.name} failed:\n{run.stdout}{run.stderr[-4000:]}"
    return torch.load(tmp_path / "out.pt", weights_only=True)


def test_agrees_with_torchvision_deform_conv2d(tmp_path):
    cases = _torchvision_cases()
    for i, (c, theirs) in enumerate(zip(cases, _torchvision_outputs(cases, tmp_path), strict=True)):
        ours = deform_conv2d(c["x"], c["offset"], c["weight"], c["bias"], stride=c["stride"],
                             padding=c["padding"], dilation=c["dilation"], mask=c["mask"])
        where = (f"case {i}: stride {c['stride']}, padding {c['padding']}, dilation {c['dilation']}, "
                 f"kernel {tuple(c['weight'].shape[2:])}, mask {c['mask'] is not None}")
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5, msg=lambda m, where=where: f"{where}: {m}")


def test_gradients_match_finite_differences():
    x, weight = _rand(1, 2, 3, 3).double(), _rand(2, 2, 3, 3, seed=1).double()
    offset = (_rand(1, 18, 3, 3, seed=3) * 0.7 + 0.13).double()  # away from integer positions (kinks)
    mask = torch.rand(1, 9, 3, 3, dtype=torch.float64)
    inputs = tuple(t.requires_grad_() for t in (x, offset, weight, mask))
    assert torch.autograd.gradcheck(
        lambda a, o, w, m: deform_conv2d(a, o, w, padding=1, mask=m), inputs, fast_mode=True
    )


def test_wrong_offset_shape_is_refused():
    with pytest.raises(ValueError, match="offset must be"):
        deform_conv2d(_rand(1, 2, 5, 5), torch.zeros(1, 9, 5, 5), _rand(3, 2, 3, 3), padding=1)


# ---- the module -----------------------------------------------------------------------


@pytest.mark.parametrize("modulated", [False, True])
def test_module_starts_as_the_plain_conv_with_the_same_weights(modulated):
    torch.manual_seed(0)
    plain = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    torch.manual_seed(0)
    deform = DeformConv2d(3, 5, 3, padding=1, bias=False, modulated=modulated)
    assert torch.equal(deform.weight, plain.weight)  # drawn the same way, same key
    x = _rand(2, 3, 8, 8)
    torch.testing.assert_close(deform(x), plain(x), atol=1e-5, rtol=1e-5)


def test_module_gradients_reach_the_offset_and_mask_convs():
    deform = DeformConv2d(3, 4, modulated=True)
    deform(_rand(2, 3, 6, 6)).square().sum().backward()
    assert deform.offset.weight.grad.abs().sum() > 0
    assert deform.mask.weight.grad.abs().sum() > 0


def test_v1_module_has_no_mask_and_keeps_the_conv_state_dict_keys():
    keys = set(DeformConv2d(3, 4).state_dict())
    assert keys == {"weight", "offset.weight", "offset.bias"}
    assert {"mask.weight", "mask.bias"} <= set(DeformConv2d(3, 4, modulated=True).state_dict())


def test_a_deformable_network_starts_as_the_plain_network_of_the_same_seed():
    base = {"width": 0.125, "L1": {"residual": 1}, "L3": {"residual": 1}}
    plain = build_model(ArchConfig.from_dict(base), seed=3).eval()
    deform = build_model(ArchConfig.from_dict({
        **base, "L2": {"deformable": True}, "L3": {"residual": 1, "deformable": True}, "deformable_mask": True,
    }), seed=3).eval()
    x = _rand(2, 3, 16, 16)
    torch.testing.assert_close(deform(x), plain(x), atol=1e-5, rtol=1e-5)


# ---- FLOPs ----------------------------------------------------------------------------


def test_a_deformable_stage_counts_more_flops_than_the_plain_one():
    base = {"width": 0.25, "L1": {"residual": 1}, "L3": {"residual": 1}}
    plain = count_flops(build_model(ArchConfig.from_dict(base)))
    deform = count_flops(build_model(ArchConfig.from_dict({**base, "L2": {"deformable": True}})))
    modulated = count_flops(build_model(ArchConfig.from_dict({**base, "L2": {"deformable": True}, "deformable_mask": True})))
    assert plain < deform < modulated


def test_deformable_stage_flops_equal_a_hand_count():
    # L2's stage conv at 16x16: the plain conv's FLOPs (as a 1x1 over the sampled taps), plus the
    # offset conv (18 outputs, 3x3, with bias: FlopCounterMode counts the conv only) and the
    # bilinear sampling: 4 multiply-adds per sampled value, C_in * 9 values per pixel.
    arch = ArchConfig(width=0.25)
    c, side = stage_channels(arch), 16
    plain = count_flops(build_model(arch))
    deform = count_flops(build_model(ArchConfig.from_dict({"width": 0.25, "L2": {"deformable": True}})))
    offset_conv = 2 * c["L1"] * 18 * 9 * side * side
    sampling = 2 * 4 * c["L1"] * 9 * side * side
    assert deform - plain == offset_conv + sampling
