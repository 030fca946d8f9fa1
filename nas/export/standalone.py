"""A network of nas's fast CIFAR-10 ResNet family in its evaluation form; needs only torch.

`nas export` writes this file as model.py, copied verbatim except for the values of the
data assignments at the top: ARCH (the canonical architecture, as config.yaml holds it for
`nas train --arch`), PLAN (the output channels of every unit, as nas's builder computes
them) and PROVENANCE (what the network is and where it came from). In nas itself ARCH and
PLAN are the plain backbone at width 1, and `Net(arch=..., plan=...)` builds any other
architecture of the family; tests/test_export.py checks it against nas's `FastResNet`.

    from model import load, normalize
    model = load()                          # weights.pt beside this file, eval mode
    logits = model(normalize(images))       # images: (B, 3, 32, 32), uint8 or floats in [0, 1]

`Net` has the state_dict keys of nas's `FastResNet`, so trained weights load unchanged.
Every block runs: the drops of training (stochastic depth, drop-path, width dropout) act
only in training and leave no trace here, and fractal joins average every column; depth
dropout's trainable 1x1 shortcuts stay, being part of the trained network. With early exits
(BranchyNet), `model(x)` is the final exit, `model.forward_exits(x)` gives every exit's
logits and `model.forward_early_exit(x)` lets each image leave at the first confident exit.

The training tricks the network was trained with (ARCH["tricks"]) are built in as measured:
the activation (CELU, GELU), the pool before BN-act, the fixed 3x3 patch whitening before
prep (its filters are in the weights) and frozen BN scales (fixed at 1, not trainable here
either). Ghost batch norm acts in training only (evaluation uses the running statistics),
and a weight EMA or lookahead is already in the weights. Test-time augmentation is
`model.forward_tta(x)`: the logits averaged over the flips (and shifts) of TTA, the
augmentation the accuracy was measured with; `model(x)` is the plain forward.

The blocks: Page, "How to train your ResNet" (2018); PyramidNet's zero-padded shortcuts
(Han et al., CVPR 2017); FractalNet (Larsson et al., ICLR 2017); CliqueNet (Yang et al.,
CVPR 2018); deformable convs v1 and v2 (Dai et al., ICCV 2017; Zhu et al., CVPR 2019);
depth dropout (Guo & Gould, DICTA 2016); BranchyNet (Teerapittayanon et al., ICPR 2016);
the tricks: Page's posts 5-8 (2018) and Jordan's airbench94 (2024).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- data

# The canonical architecture: nas's ArchConfig.to_dict(), fields at their default left out.
ARCH = {}
# Output channels of every unit: prep, then per stage [conv, *extras, *residual blocks,
# fractal block, clique block], as nas's builder computes them (`unit_channels`).
PLAN = {"prep": [64], "L1": [128], "L2": [256], "L3": [512]}
# What the network is and where it came from: name, hash, experiment, code version, weights.
PROVENANCE = {}

# ----------------------------------------------------------------------------- constants

MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 per-channel mean (R, G, B) of pixels in [0, 1]
STD = (0.2470, 0.2435, 0.2616)  # CIFAR-10 per-channel std, same units
LOGIT_SCALE = 0.125  # logits are scaled down: the fast recipe's high learning rate relies on it
NUM_CLASSES = 10
STAGES = ("L1", "L2", "L3")
# Drop kinds of training this module knows; at evaluation each is the plain network, but
# depth_dropout's residual blocks have a trainable 1x1 conv shortcut.
DROP_KINDS = ("none", "stochastic_depth", "depth_dropout", "drop_path", "width_dropout")
DEFAULT_EXIT_THRESHOLD = 0.5  # normalized entropy below which an image leaves a side exit
EXIT_THRESHOLD = ARCH.get("exits", {}).get("threshold", DEFAULT_EXIT_THRESHOLD)
# test-time augmentation the accuracy was measured with: none | flip | flip_translate
TTA = ARCH.get("tricks", {}).get("tta", "none")
WHITENED_CHANNELS = 27  # the patch whitening's outputs: one per dimension of a 3x3x3 patch

# ----------------------------------------------------------------------------- convs


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Deformable 3x3 conv, stride 1, padding 1, no bias (v1; v2 with a modulation `mask`).

    Tap k (row-major) of output pixel p samples the input bilinearly at p + p_k + offset,
    offset channels (2k, 2k+1) = (dy, dx) in pixels, zeros outside; the taps then meet the
    weights in one 1x1 conv. Layouts as torchvision.ops.deform_conv2d.
    """
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    taps = kh * kw
    dtype = torch.promote_types(x.dtype, torch.float32)  # positions in bf16 would be off by pixels
    like = {"device": x.device, "dtype": dtype}
    tap_y, tap_x = torch.meshgrid(torch.arange(kh, **like), torch.arange(kw, **like), indexing="ij")
    rows = tap_y.reshape(taps, 1, 1) + (torch.arange(height, **like) - 1).view(1, height, 1)
    cols = tap_x.reshape(taps, 1, 1) + (torch.arange(width, **like) - 1).view(1, 1, width)
    offset = offset.view(batch, taps, 2, height, width).to(dtype)
    y = rows + offset[:, :, 0]
    x_pos = cols + offset[:, :, 1]
    # grid_sample with align_corners=False puts pixel i's centre at (2i + 1) / size - 1.
    grid = torch.stack(((2 * x_pos + 1) / width - 1, (2 * y + 1) / height - 1), dim=-1)
    sampled = F.grid_sample(x.to(dtype), grid.view(batch, taps * height, width, 2),
                            mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(batch, channels, taps, height, width)
    if mask is not None:
        sampled = sampled * mask.view(batch, 1, taps, height, width).to(sampled.dtype)
    columns = sampled.reshape(batch, channels * taps, height, width)  # channel c * taps + k
    return F.conv2d(columns.to(x.dtype), weight.reshape(out_channels, channels * taps, 1, 1))


class DeformConv2d(nn.Conv2d):
    """3x3 conv whose taps move by offsets from a conv of the input (v2: times 2*sigmoid(mask))."""

    def __init__(self, in_channels: int, out_channels: int, modulated: bool = False) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=False)
        self.offset = nn.Conv2d(in_channels, 18, 3, padding=1)  # (dy, dx) per tap
        self.mask = nn.Conv2d(in_channels, 9, 3, padding=1) if modulated else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = 2.0 * torch.sigmoid(self.mask(x)) if self.mask is not None else None
        return deform_conv2d(x, self.offset(x), self.weight, mask)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """The family's conv: 3x3, padding 1, no bias (BN follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    """1x1 conv, no bias: a clique block's transition, depth dropout's shortcut."""
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


# ----------------------------------------------------------------------------- blocks


class ConvBN(nn.Module):
    """conv (3x3 unless told; no bias: BN follows) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, conv_layer=conv3x3) -> None:
        super().__init__()
        self.conv = conv_layer(in_channels, out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class PadChannels(nn.Module):
    """Identity shortcut to more channels: the new channels are zeros (PyramidNet)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - x.shape[1]))


class ResidualBlock(nn.Module):
    """shortcut(x) + branch(x), the branch two ConvBNs; the shortcut is a trainable 1x1 conv
    (`conv_shortcut`, depth dropout), else the identity, zero-padded where the block widens."""

    def __init__(self, in_channels: int, out_channels: int, conv_layer=conv3x3, conv_shortcut: bool = False) -> None:
        super().__init__()
        if conv_shortcut:
            self.shortcut = conv1x1(in_channels, out_channels)
        elif out_channels > in_channels:
            self.shortcut = PadChannels(out_channels)
        else:
            self.shortcut = nn.Identity()
        self.branch = nn.Sequential(ConvBN(in_channels, out_channels, conv_layer),
                                    ConvBN(out_channels, out_channels, conv_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.branch(x)


class FractalBlock(nn.Module):
    """FractalNet block: column c (from 0) is 2**c ConvBNs deep.

    f_1(z) = conv(z); f_C(z) = join(conv(z), f_{C-1}(f_{C-1}(z))), consecutive joins merged,
    so the last join averages all C columns. A join is the element-wise mean.
    """

    def __init__(self, in_channels: int, out_channels: int, columns: int, conv_layer=conv3x3) -> None:
        super().__init__()
        self.columns = columns
        self.conv = ConvBN(in_channels, out_channels, conv_layer)
        if columns > 1:
            self.first = FractalBlock(in_channels, out_channels, columns - 1, conv_layer)
            self.second = FractalBlock(out_channels, out_channels, columns - 1, conv_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return join(self.paths(x))

    def paths(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of the columns, shallowest first, before the last join."""
        if self.columns == 1:
            return [self.conv(x)]
        z = join(self.first.paths(x))
        return [self.conv(x), *self.second.paths(z)]


def join(inputs: list[torch.Tensor]) -> torch.Tensor:
    return inputs[0] if len(inputs) == 1 else torch.stack(inputs).mean(0)


class CliqueBlock(nn.Module):
    """CliqueNet block: layers X_1..X_n, one 3x3 conv W_li per ordered pair (l -> i).

    X_0 is the input; f is BatchNorm -> ReLU, with one BatchNorm per layer and stage.
      stage I:  X_i  = f(sum_{l<i} W_li * X_l)                      (X_0 included)
      stage II: X_i' = f(sum_{0<l<i} W_li * X_l' + sum_{m>i} W_mi * X_m)
    Stage II reuses stage I's convs. Output: [X_0, X_1', ..., X_n'] -> 1x1 conv-BN-ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, layers: int, conv_layer=conv3x3) -> None:
        super().__init__()
        self.layers = layers
        self.convs = nn.ModuleDict({  # key "l_i": W_li, the conv from X_l to X_i
            f"{l}_{i}": conv_layer(in_channels if l == 0 else out_channels, out_channels)
            for i in range(1, layers + 1) for l in range(layers + 1) if l != i
        })
        self.stage1_bn = nn.ModuleList(nn.BatchNorm2d(out_channels) for _ in range(layers))
        self.stage2_bn = nn.ModuleList(nn.BatchNorm2d(out_channels) for _ in range(layers))
        self.act = nn.ReLU(inplace=True)
        self.transition = ConvBN(in_channels + layers * out_channels, out_channels, conv1x1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latest = [x]  # stage I
        for i in range(1, self.layers + 1):
            total = sum(self.convs[f"{l}_{i}"](latest[l]) for l in range(i))
            latest.append(self.act(self.stage1_bn[i - 1](total)))
        for i in range(1, self.layers + 1):  # stage II: each layer from the latest of the others
            total = sum(self.convs[f"{l}_{i}"](latest[l]) for l in range(1, self.layers + 1) if l != i)
            latest[i] = self.act(self.stage2_bn[i - 1](total))
        return self.transition(torch.cat(latest, dim=1))


class Stage(nn.Module):
    """conv -> 2x2 max-pool -> extra layers -> residual blocks -> fractal block -> clique block;
    with `pool_before_bn` the pool comes between the conv and its BN-act (Page post 5)."""

    def __init__(self, conv: nn.Module, extra=(), residual=(), fractal=(), clique=(), pool_before_bn=False) -> None:
        super().__init__()
        self.conv = conv
        self.pool_before_bn = pool_before_bn
        self.pool = nn.MaxPool2d(2)
        # Empty Sequentials have no keys: the names match nas's whichever blocks there are.
        self.extra = nn.Sequential(*extra)
        self.residual = nn.Sequential(*residual)
        self.fractal = nn.Sequential(*fractal)
        self.clique = nn.Sequential(*clique)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_before_bn:
            x = self.conv.act(self.conv.bn(self.pool(self.conv.conv(x))))
        else:
            x = self.pool(self.conv(x))
        return self.clique(self.fractal(self.residual(self.extra(x))))


class PatchWhitening(nn.Module):
    """A fixed 3x3 conv, 3 -> 27 channels, padding 1: the eigenvectors of the training images'
    patch covariance over sqrt(eigenvalue + eps) (Page post 7), fitted before training."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(WHITENED_CHANNELS, 3, 3, 3), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), padding=1)


def activation(tricks: dict) -> nn.Module:
    """The network's activation: ReLU, CELU(alpha) (Page post 6) or GELU (airbench94)."""
    name = tricks.get("activation", "relu")
    if name == "celu":
        return nn.CELU(tricks.get("celu_alpha", 0.075), inplace=True)
    if name == "gelu":
        return nn.GELU()
    if name != "relu":
        raise ValueError(f"activation {name!r} is not one of relu, celu, gelu.")
    return nn.ReLU(inplace=True)


def tta_logits(model: nn.Module, x: torch.Tensor, level: str) -> torch.Tensor:
    """Logits averaged over test-time augmentations: none; flip (the image and its mirror);
    flip_translate (half that, half its mean over the image shifted one pixel up-left and
    down-right with reflect padding, as airbench94)."""
    def mirror(inputs: torch.Tensor) -> torch.Tensor:
        return model(torch.cat([inputs, inputs.flip(3)])).view(2, len(inputs), -1).mean(0)

    if level == "none":
        return model(x)
    if level == "flip":
        return mirror(x)
    if level != "flip_translate":
        raise ValueError(f"tta {level!r} is not one of none, flip, flip_translate.")
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    translate = mirror(torch.cat([padded[:, :, :h, :w], padded[:, :, 2:, 2:]])).view(2, len(x), -1).mean(0)
    return 0.5 * mirror(x) + 0.5 * translate


class ExitHead(nn.Module):
    """A BranchyNet side classifier: ConvBN -> global max-pool -> linear (no bias) -> logits x 0.125."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvBN(channels, channels)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(channels, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.conv(x)).flatten(1)) * LOGIT_SCALE


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Softmax entropy / ln(classes) of each row, in [0, 1], computed in float32."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return -(log_p.exp() * log_p).sum(1) / math.log(logits.shape[1])


# ----------------------------------------------------------------------------- the network


class Net(nn.Module):
    """prep -> L1 -> L2 -> L3 -> global max-pool -> linear (no bias) -> logits x 0.125.

    Args:
        num_classes: logits.
        arch: the canonical architecture (default ARCH).
        plan: output channels of every unit (default PLAN): prep, then per stage [conv,
            *extras, *residual blocks, fractal block, clique block], as nas's `unit_channels`.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, *, arch: dict | None = None, plan: dict | None = None) -> None:
        super().__init__()
        arch = ARCH if arch is None else arch
        plan = PLAN if plan is None else plan
        kind = arch.get("drop", {}).get("kind", "none")
        if kind not in DROP_KINDS:
            raise ValueError(f"drop kind {kind!r} is not one of {', '.join(DROP_KINDS)}.")
        exits = arch.get("exits", {})
        self.exit_threshold = exits.get("threshold", DEFAULT_EXIT_THRESHOLD)
        tricks = arch.get("tricks", {})
        self.tta = tricks.get("tta", "none")
        if tricks.get("whiten", False):  # fixed patch whitening, then a 1x1 conv-BN-act as prep
            self.whiten = PatchWhitening()
            self.prep = ConvBN(WHITENED_CHANNELS, plan["prep"][0], conv1x1)
        else:
            self.whiten = nn.Identity()
            self.prep = ConvBN(3, plan["prep"][0])
        previous = plan["prep"][0]
        for name in STAGES:
            stage = arch.get(name, {})
            sizes = [stage.get("extra", 0), stage.get("residual", 0), stage.get("fractal", 0), stage.get("clique", 0)]
            if len(plan[name]) != 1 + sizes[0] + sizes[1] + (sizes[2] > 0) + (sizes[3] > 0):
                raise ValueError(f"PLAN[{name!r}] has {len(plan[name])} units, which {name} = {stage} does not.")
            conv_layer = conv3x3
            if stage.get("deformable", False):
                conv_layer = partial(DeformConv2d, modulated=arch.get("deformable_mask", False))
            unit = iter(plan[name])
            c = next(unit)
            conv = ConvBN(previous, c, conv_layer)
            extra, residual, fractal, clique = [], [], [], []
            for _ in range(sizes[0]):
                previous, c = c, next(unit)
                extra.append(ConvBN(previous, c, conv_layer))
            for _ in range(sizes[1]):
                previous, c = c, next(unit)
                residual.append(ResidualBlock(previous, c, conv_layer, conv_shortcut=kind == "depth_dropout"))
            if sizes[2]:
                previous, c = c, next(unit)
                fractal.append(FractalBlock(previous, c, sizes[2], conv_layer))
            if sizes[3]:
                previous, c = c, next(unit)
                clique.append(CliqueBlock(previous, c, sizes[3], conv_layer))
            setattr(self, name.lower(), Stage(conv, extra, residual, fractal, clique,
                                              tricks.get("pool_before_bn", False)))
            previous = c
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(previous, num_classes, bias=False)
        # BranchyNet side exits, keyed by stage as in nas's network; empty without exits.
        self.exits = nn.ModuleDict({name: ExitHead(plan[name][-1], num_classes) for name in exits.get("stages", [])})
        for parent in list(self.modules()):  # the activation of every block, as trained
            for child_name, child in parent.named_children():
                if type(child) is nn.ReLU:
                    setattr(parent, child_name, activation(tricks))
        if tricks.get("freeze_bn_scale", False):  # BN scales fixed at 1 (Page post 6, airbench94)
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.whiten(x)
        x = self.prep(x)
        x = self.l1(x)
        x = self.l2(x)
        x = self.l3(x)
        x = self.pool(x).flatten(1)
        return self.head(x) * LOGIT_SCALE

    def forward_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit: the side exits in network order, then the final one."""
        logits = []
        x = self.prep(self.whiten(x))
        for name, stage in (("L1", self.l1), ("L2", self.l2), ("L3", self.l3)):
            x = stage(x)
            if name in self.exits:
                logits.append(self.exits[name](x))
        logits.append(self.head(self.pool(x).flatten(1)) * LOGIT_SCALE)
        return logits

    def forward_tta(self, x: torch.Tensor, level: str | None = None) -> torch.Tensor:
        """Logits under test-time augmentation `level` (default: the one measured, TTA)."""
        return tta_logits(self, x, self.tta if level is None else level)

    @torch.no_grad()
    def forward_early_exit(self, x: torch.Tensor,
                           threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """BranchyNet inference (in eval mode): each image leaves at the first side exit whose
        normalized_entropy is below `threshold` (default: the architecture's, EXIT_THRESHOLD
        for ARCH), and is not run further; the final exit takes the rest. Returns the logits
        and the exit each image took (side exits from 0, the final exit last)."""
        threshold = self.exit_threshold if threshold is None else threshold
        n = x.shape[0]
        rows = torch.arange(n, device=x.device)  # which input each remaining image is
        taken = torch.full((n,), len(self.exits), dtype=torch.long, device=x.device)
        out, k = None, 0
        h = self.prep(self.whiten(x))
        for name, stage in (("L1", self.l1), ("L2", self.l2), ("L3", self.l3)):
            h = stage(h)
            if name not in self.exits:
                continue
            logits = self.exits[name](h)
            out = logits.new_empty((n, logits.shape[1])) if out is None else out
            leave = normalized_entropy(logits) < threshold
            out[rows[leave]] = logits[leave]
            taken[rows[leave]] = k
            h, rows, k = h[~leave], rows[~leave], k + 1
            if rows.numel() == 0:
                return out, taken  # every image has left: the rest of the net never runs
        final = self.head(self.pool(h).flatten(1)) * LOGIT_SCALE
        out = final.new_empty((n, final.shape[1])) if out is None else out
        out[rows] = final
        return out, taken


# ----------------------------------------------------------------------------- using it


def normalize(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, 32, 32) uint8 pixels, or floats in [0, 1] -> the network's input."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def load(path: str | Path | None = None, map_location: str | torch.device = "cpu") -> Net:
    """The trained network in eval mode; weights from `path` (default: weights.pt beside this file)."""
    path = Path(__file__).with_name("weights.pt") if path is None else Path(path)
    model = Net()
    model.load_state_dict(torch.load(path, map_location=map_location, weights_only=True))
    return model.eval()


if __name__ == "__main__":
    model = load()
    with torch.no_grad():
        logits = model(torch.zeros(2, 3, 32, 32))
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters; logits {tuple(logits.shape)}")
