"""`nas export`: one architecture of an experiment as files that need only torch.

    store -> the architecture (--rank K of the confirm results, or --arch HASH)
          -> model.py     readable code of exactly that network, importing only torch
          -> weights.pt   the best confirm seed's state_dict (torch.load(weights_only=True))
          -> model.onnx   the same network through torch.onnx
          -> config.yaml  arch, recipe, dataset, metrics, experiment, code version:
                          `nas train --arch config.yaml` retrains it

model.py is generated, not copied: its `Net` has the layers of this one architecture, in
its evaluation form (every block runs; drop rates only act in training, so they leave no
trace but a comment), with the same state_dict keys as nas's `FastResNet`, so the trained
weights load into it unchanged. Before anything is written the generated network is built
here, loaded with the weights and checked against nas's own on a random batch.

Every file goes inside --out; an existing file is only replaced with --force.
"""

from __future__ import annotations

import io
import json
import os
import types
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from nas.db import Store
from nas.errors import ConfigError
from nas.models import STAGES, ArchConfig, build_model, unit_channels

FORMATS = {"py": "model.py", "pt": "weights.pt", "onnx": "model.onnx", "yaml": "config.yaml"}
CHECK_TOLERANCE = 1e-5  # max |logit difference| between the generated network and nas's
ONNX_OPSET = 18
# The ArchConfig fields this exporter writes code for; anything else new is refused by name.
SUPPORTED_FIELDS = {
    "width", "width_schedule", "deformable_mask", "drop.kind", "drop.rate", "drop.global_share",
    "exits.stages", "exits.weights", "exits.threshold",
    *(f"{stage}.{name}" for stage in STAGES for name in ("extra", "residual", "fractal", "clique", "deformable")),
}
_KNOWN_DROP_KINDS = ("none", "stochastic_depth", "depth_dropout", "drop_path", "width_dropout")
_KNOWN_SCHEDULES = ("double", "pyramid")


# ----------------------------------------------------------------------------- what to export


@dataclass(frozen=True)
class ExportSource:
    """One architecture of an experiment, with what the files need."""

    experiment: str
    arch: ArchConfig
    weights: dict[str, torch.Tensor] | None  # the kept state_dict (best confirm seed), if any
    weights_trial: Any  # the Trial row the weights come from, or None
    config: dict[str, Any]  # the experiment's resolved config (recipe, dataset, ...)
    code_version: str | None
    metrics: dict[str, Any]


def parse_formats(text: str) -> tuple[str, ...]:
    """``"py,onnx"`` -> ("py", "onnx"); ConfigError naming an unknown format."""
    items = [item.strip().lower() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"--format: give one or more of {', '.join(FORMATS)}, comma-separated.")
    for item in items:
        if item not in FORMATS:
            raise ConfigError(
                f"--format: {item!r} is not a format; choose from {', '.join(FORMATS)} (comma-separated)."
            )
    return tuple(dict.fromkeys(items))


def select(store: Store, experiment: str, *, rank: int | None = None, arch_hash: str | None = None,
           need_weights: bool = True) -> ExportSource:
    """The architecture `--rank` (1 = the first confirm result) or `--arch` names, with its weights.

    Raises:
        ConfigError: no such experiment, rank or architecture; or `need_weights` and no
            weights were kept for it (only the confirm phase keeps them).
    """
    from nas.results import arch_results
    from nas.trials.experiment import require_experiment

    found = require_experiment(store, experiment)
    confirmed = arch_results(store, experiment, "confirm")
    if rank is not None:
        if not confirmed:
            raise ConfigError(
                f"--rank {rank}: experiment {experiment!r} has no confirmed architectures; run its confirm "
                "phase (`nas launch` with confirm.top_k > 0) or name one with --arch HASH."
            )
        if not 1 <= rank <= len(confirmed):
            raise ConfigError(f"--rank must be between 1 and {len(confirmed)} (the confirmed architectures "
                              f"of {experiment!r}), but got {rank}.")
        arch_hash = confirmed[rank - 1].arch_hash
    trials = [t for t in store.trials(experiment_id=found.id) if t.arch_hash == arch_hash]
    if not trials:
        known = ", ".join(r.arch_hash for r in confirmed[:5])
        raise ConfigError(
            f"--arch {arch_hash}: no trial of this architecture in experiment {experiment!r}"
            + (f"; its confirmed architectures are {known}." if known else ".")
        )
    arch = ArchConfig.from_json(store.get_architecture(arch_hash).config_json)
    check_supported(arch)
    kept = [store.get_trial(i) for i in store.trials_with_weights(found.id)]
    kept = [t for t in kept if t.arch_hash == arch_hash]
    kept.sort(key=lambda t: -(t.final_val_acc if t.final_val_acc is not None else t.final_test_acc or 0.0))
    weights = None
    if kept:
        state = torch.load(io.BytesIO(store.load_weights(kept[0].id)), map_location="cpu", weights_only=True)
        weights = {k: v.contiguous() for k, v in state.items()}
    elif need_weights:
        raise ConfigError(
            f"architecture {arch.short_name()} ({arch_hash}) of {experiment!r} has no kept weights: only the "
            "confirm phase keeps them (the best seed of each confirmed architecture). Run the confirm phase "
            "(`nas launch` with confirm.top_k > 0, which resumes the experiment), export a confirmed "
            "architecture (--rank K), or export --format py,yaml only."
        )
    config = json.loads(found.config_json) if found.config_json else {}
    return ExportSource(
        experiment=experiment, arch=arch, weights=weights, weights_trial=kept[0] if kept else None,
        config=config, code_version=found.code_version, metrics=_metrics(store, experiment, arch_hash),
    )


def check_supported(arch: ArchConfig) -> None:
    """ConfigError naming the first field of `arch` this exporter cannot write yet."""
    defaults = _flat(ArchConfig())
    for key, value in _flat(arch).items():
        if key not in SUPPORTED_FIELDS and value != defaults.get(key):
            raise ConfigError(f"nas export does not support {key} yet (the architecture sets {key}={value!r}).")
    if arch.drop.kind not in _KNOWN_DROP_KINDS:
        raise ConfigError(f"nas export does not support drop.kind {arch.drop.kind} yet.")
    if arch.width_schedule not in _KNOWN_SCHEDULES:
        raise ConfigError(f"nas export does not support width_schedule {arch.width_schedule} yet.")


def _flat(arch: ArchConfig) -> dict[str, Any]:
    """{"width": 1.0, "L1.extra": 0, ..., "drop.kind": "none", ...}: every field, dotted."""
    out: dict[str, Any] = {}
    for f in fields(arch):
        value = getattr(arch, f.name)
        if is_dataclass(value):
            out.update({f"{f.name}.{g.name}": getattr(value, g.name) for g in fields(value)})
        else:
            out[f.name] = value
    return out


def _metrics(store: Store, experiment: str, arch_hash: str) -> dict[str, Any]:
    """Mean, std and 95% CI over the confirm seeds (else the search seeds) of one architecture."""
    from nas.results import arch_results

    for phase in ("confirm", "search"):
        row = next((r for r in arch_results(store, experiment, phase) if r.arch_hash == arch_hash), None)
        if row is not None:
            break
    if row is None:
        return {}

    def summary(s) -> dict[str, Any]:
        return {"mean": _num(s.mean), "std": _num(s.std), "ci95": [_num(s.ci_low), _num(s.ci_high)]}

    return {
        "phase": row.phase, "seeds": row.seeds, "accuracy": summary(row.accuracy),
        "test_acc": summary(row.test_acc), "train_seconds": summary(row.train_seconds),
        "params": row.params, "flops": row.flops, "pareto_rank": row.rank,
    }


def _num(x: float) -> float | None:
    return None if x != x else round(float(x), 6)


# ----------------------------------------------------------------------------- model.py


def render_model(arch: ArchConfig, *, experiment: str = "", code_version: str | None = None,
                 weights_note: str = "") -> str:
    """The source of a standalone model.py for `arch` (imports only torch)."""
    check_supported(arch)
    widths = unit_channels(arch)
    deformable = any(getattr(arch, s).deformable for s in STAGES)
    fractal = any(getattr(arch, s).fractal for s in STAGES)
    kind = arch.drop.kind
    pads = False
    lines: list[str] = []
    conv_args = (lambda on: ", deformable=True" if on else "") if deformable else (lambda on: "")
    previous = widths["prep"][0]
    lines.append(f"        self.prep = ConvBN(3, {previous})")
    for name in STAGES:
        stage = getattr(arch, name)
        d = conv_args(stage.deformable)
        unit = iter(widths[name])
        c = next(unit)
        parts = [f"ConvBN({previous}, {c}{d})"]
        extra, residual, fractal_blocks = [], [], []
        for _ in range(stage.extra):
            previous, c = c, next(unit)
            extra.append(f"ConvBN({previous}, {c}{d})")
        for _ in range(stage.residual):
            previous, c = c, next(unit)
            shortcut = "conv" if kind == "depth_dropout" else "pad" if c > previous else "identity"
            pads = pads or shortcut == "pad"
            residual.append(f"ResidualBlock({previous}, {c}, shortcut={shortcut!r}{d})")
        if stage.fractal:
            previous, c = c, next(unit)
            fractal_blocks.append(f"FractalBlock({previous}, {c}, columns={stage.fractal}{d})")
        clique_blocks = []
        if stage.clique:
            previous, c = c, next(unit)
            clique_blocks.append(f"CliqueBlock({previous}, {c}, layers={stage.clique}{d})")
        for label, items in (("extra", extra), ("residual", residual), ("fractal", fractal_blocks),
                             ("clique", clique_blocks)):
            if items:
                parts.append(f"{label}=[{', '.join(items)}]")
        call = f"Stage({', '.join(parts)})"
        if len(call) > 88:
            inner = "".join(f"            {p},\n" for p in parts)
            call = f"Stage(\n{inner}        )"
        lines.append(f"        self.{name.lower()} = {call}")
        previous = c
    lines.append("        self.pool = nn.AdaptiveMaxPool2d(1)")
    lines.append(f"        self.head = nn.Linear({previous}, num_classes, bias=False)")
    if arch.exits.stages:  # BranchyNet side exits, keyed by stage as in nas's network
        heads = ", ".join(f'"{s}": ExitHead({widths[s][-1]}, num_classes)' for s in arch.exits.stages)
        lines.append(f"        self.exits = nn.ModuleDict({{{heads}}})")

    blocks = [_CONV_BN_DEFORMABLE if deformable else _CONV_BN]
    if deformable:
        blocks.insert(0, _DEFORMABLE.replace("MODULATED_DEFAULT", "True" if arch.deformable_mask else "False"))
    if pads:
        blocks.append(_PAD_CHANNELS)
    if any(getattr(arch, s).residual for s in STAGES):
        blocks.append(_RESIDUAL_DEFORMABLE if deformable else _RESIDUAL)
    if fractal:
        blocks.append(_FRACTAL_DEFORMABLE if deformable else _FRACTAL)
    if any(getattr(arch, s).clique for s in STAGES):
        blocks.append(_CLIQUE_DEFORMABLE if deformable else _CLIQUE)
    blocks.append(_STAGE)
    if arch.exits.stages:
        blocks.append(_EXIT_HEAD.replace("EXIT_THRESHOLD_VALUE", repr(arch.exits.threshold)))
    return _MODULE.format(
        short_name=arch.short_name(), hash=arch.hash,
        provenance=_provenance(experiment, code_version, weights_note),
        arch_json=repr(arch.to_dict()),
        training_note=_training_note(arch) + _exits_note(arch),
        blocks="\n\n\n".join(b.strip("\n") for b in blocks),
        layers="\n".join(lines),
        exit_methods=_EXIT_METHODS.rstrip("\n") if arch.exits.stages else "",
    )


def _provenance(experiment: str, code_version: str | None, weights_note: str) -> str:
    parts = []
    if experiment:
        parts.append(f"experiment {experiment!r}")
    if code_version:
        parts.append(f"nas {code_version}")
    text = f"From {', '.join(parts)}." if parts else ""
    if weights_note:
        text += f" {weights_note}"
    return text.strip()


def _training_note(arch: ArchConfig) -> str:
    drop = arch.drop
    if drop.kind == "none" and not any(getattr(arch, s).fractal for s in STAGES):
        return "Nothing is dropped in training, so this is exactly the trained network."
    notes = {
        "stochastic_depth": f"stochastic depth (final drop rate {drop.rate:g}; survivors scaled by 1/p in "
                            "training, so at evaluation every block runs unscaled)",
        "depth_dropout": f"depth dropout (rate {drop.rate:g}; the trainable 1x1 shortcuts stay, the "
                         "bypass is training-only)",
        "drop_path": f"drop-path (rate {drop.rate:g}, global share {drop.global_share:g}; training-only)",
        "width_dropout": f"width dropout (rate {drop.rate:g}, inverted scaling; training-only)",
    }
    if drop.kind == "none":
        return "Fractal joins average every column, as at evaluation in training."
    return f"Trained with {notes[drop.kind]}: here, the evaluation form, nothing is dropped."


_MODULE = '''"""{short_name} ({hash}): a fast CIFAR-10 ResNet exported by `nas export`.

{provenance}
Only torch is needed. {training_note}

    from model import load, normalize
    model = load()                          # weights.pt beside this file, eval mode
    logits = model(normalize(images))       # images: (B, 3, 32, 32), uint8 or floats in [0, 1]

The canonical config (`nas train --arch` reads config.yaml beside this file) is ARCH.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ARCH = {arch_json}
MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 per-channel mean (R, G, B) of pixels in [0, 1]
STD = (0.2470, 0.2435, 0.2616)  # CIFAR-10 per-channel std, same units
LOGIT_SCALE = 0.125  # logits are scaled down: the fast recipe's high learning rate relies on it

# ----------------------------------------------------------------------------- blocks

{blocks}


# ----------------------------------------------------------------------------- the network


class Net(nn.Module):
    """prep -> L1 -> L2 -> L3 -> global max-pool -> linear (no bias) -> logits x 0.125."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
{layers}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prep(x)
        x = self.l1(x)
        x = self.l2(x)
        x = self.l3(x)
        x = self.pool(x).flatten(1)
        return self.head(x) * LOGIT_SCALE{exit_methods}


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
    print(f"{{sum(p.numel() for p in model.parameters()):,}} parameters; logits {{tuple(logits.shape)}}")
'''

_CONV_BN = '''
class ConvBN(nn.Module):
    """3x3 conv (no bias: BN follows) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))
'''

_CONV_BN_DEFORMABLE = '''
class ConvBN(nn.Module):
    """3x3 conv (no bias: BN follows; deformable or plain) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, deformable: bool = False) -> None:
        super().__init__()
        if deformable:
            self.conv = DeformConv2d(in_channels, out_channels)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))
'''

_DEFORMABLE = '''
def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Deformable 3x3 conv, stride 1, padding 1 (Dai et al. 2017; v2 mask: Zhu et al. 2019).

    Tap k (row-major) of output pixel p samples the input bilinearly at p + p_k + offset,
    offset channels (2k, 2k+1) = (dy, dx) in pixels, zeros outside; the taps then meet the
    weights in one 1x1 conv. Layouts as torchvision.ops.deform_conv2d.
    """
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    taps = kh * kw
    dtype = torch.promote_types(x.dtype, torch.float32)  # positions in bf16 would be off by pixels
    kwargs = {"device": x.device, "dtype": dtype}
    tap_y, tap_x = torch.meshgrid(torch.arange(kh, **kwargs), torch.arange(kw, **kwargs), indexing="ij")
    rows = tap_y.reshape(taps, 1, 1) + (torch.arange(height, **kwargs) - 1).view(1, height, 1)
    cols = tap_x.reshape(taps, 1, 1) + (torch.arange(width, **kwargs) - 1).view(1, 1, width)
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
    columns = sampled.reshape(batch, channels * taps, height, width)
    return F.conv2d(columns.to(x.dtype), weight.reshape(out_channels, channels * taps, 1, 1))


class DeformConv2d(nn.Conv2d):
    """3x3 conv whose taps move by offsets from a conv of the input (v2: times 2*sigmoid(mask))."""

    def __init__(self, in_channels: int, out_channels: int, modulated: bool = MODULATED_DEFAULT) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=False)
        self.offset = nn.Conv2d(in_channels, 18, 3, padding=1)
        self.mask = nn.Conv2d(in_channels, 9, 3, padding=1) if modulated else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = 2.0 * torch.sigmoid(self.mask(x)) if self.mask is not None else None
        return deform_conv2d(x, self.offset(x), self.weight, mask)
'''

_PAD_CHANNELS = '''
class PadChannels(nn.Module):
    """Identity shortcut to more channels: the new channels are zeros (PyramidNet)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - x.shape[1]))
'''

_RESIDUAL = '''
class ResidualBlock(nn.Module):
    """shortcut(x) + branch(x), the branch two ConvBNs.

    shortcut: "identity"; "pad" (zero channels added where the block widens); "conv" (a
    trainable 1x1 conv, as depth dropout trains it).
    """

    def __init__(self, in_channels: int, out_channels: int, shortcut: str = "identity") -> None:
        super().__init__()
        if shortcut == "conv":
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        elif shortcut == "pad":
            self.shortcut = PadChannels(out_channels)
        else:
            self.shortcut = nn.Identity()
        self.branch = nn.Sequential(ConvBN(in_channels, out_channels), ConvBN(out_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.branch(x)
'''

# With deformable stages, every ConvBN of a block takes the stage's `deformable` flag.
_RESIDUAL_DEFORMABLE = _RESIDUAL.replace(
    'shortcut: str = "identity") -> None:',
    'shortcut: str = "identity",\n                 deformable: bool = False) -> None:',
).replace(
    "self.branch = nn.Sequential(ConvBN(in_channels, out_channels), ConvBN(out_channels, out_channels))",
    "self.branch = nn.Sequential(\n            ConvBN(in_channels, out_channels, deformable), "
    "ConvBN(out_channels, out_channels, deformable)\n        )",
)

_FRACTAL = '''
class FractalBlock(nn.Module):
    """FractalNet block (Larsson et al. 2017): column c (from 0) is 2**c ConvBNs deep.

    f_1(z) = conv(z); f_C(z) = join(conv(z), f_{C-1}(f_{C-1}(z))), consecutive joins merged,
    so the last join averages all C columns. A join is the element-wise mean.
    """

    def __init__(self, in_channels: int, out_channels: int, columns: int) -> None:
        super().__init__()
        self.columns = columns
        self.conv = ConvBN(in_channels, out_channels)
        if columns > 1:
            self.first = FractalBlock(in_channels, out_channels, columns - 1)
            self.second = FractalBlock(out_channels, out_channels, columns - 1)

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
'''

_FRACTAL_DEFORMABLE = _FRACTAL.replace(
    "columns: int) -> None:", "columns: int, deformable: bool = False) -> None:"
).replace(
    "self.conv = ConvBN(in_channels, out_channels)", "self.conv = ConvBN(in_channels, out_channels, deformable)"
).replace(
    "FractalBlock(in_channels, out_channels, columns - 1)",
    "FractalBlock(in_channels, out_channels, columns - 1, deformable)",
).replace(
    "FractalBlock(out_channels, out_channels, columns - 1)",
    "FractalBlock(out_channels, out_channels, columns - 1, deformable)",
)

_CLIQUE = '''
class CliqueBlock(nn.Module):
    """CliqueNet block (Yang et al. 2018): layers X_1..X_n, one 3x3 conv W_li per ordered pair.

    X_0 is the input; f is BatchNorm -> ReLU, with one BatchNorm per layer and stage.
      stage I:  X_i  = f(sum_{l<i} W_li * X_l)                      (X_0 included)
      stage II: X_i' = f(sum_{0<l<i} W_li * X_l' + sum_{m>i} W_mi * X_m)
    Stage II reuses stage I's convs. Output: [X_0, X_1', ..., X_n'] -> 1x1 conv-BN-ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, layers: int) -> None:
        super().__init__()
        self.layers = layers
        self.convs = nn.ModuleDict({  # key "l_i": W_li, the conv from X_l to X_i
            f"{l}_{i}": nn.Conv2d(in_channels if l == 0 else out_channels, out_channels, 3, padding=1, bias=False)
            for i in range(1, layers + 1) for l in range(layers + 1) if l != i
        })
        self.stage1_bn = nn.ModuleList(nn.BatchNorm2d(out_channels) for _ in range(layers))
        self.stage2_bn = nn.ModuleList(nn.BatchNorm2d(out_channels) for _ in range(layers))
        self.act = nn.ReLU(inplace=True)
        self.transition = Transition(in_channels + layers * out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latest = [x]  # stage I
        for i in range(1, self.layers + 1):
            total = sum(self.convs[f"{l}_{i}"](latest[l]) for l in range(i))
            latest.append(self.act(self.stage1_bn[i - 1](total)))
        for i in range(1, self.layers + 1):  # stage II: each layer from the latest of the others
            total = sum(self.convs[f"{l}_{i}"](latest[l]) for l in range(1, self.layers + 1) if l != i)
            latest[i] = self.act(self.stage2_bn[i - 1](total))
        return self.transition(torch.cat(latest, dim=1))


class Transition(nn.Module):
    """1x1 conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))
'''

# With deformable stages, every 3x3 conv of the block takes the stage's `deformable` flag.
_CLIQUE_DEFORMABLE = _CLIQUE.replace(
    "layers: int) -> None:", "layers: int, deformable: bool = False) -> None:"
).replace(
    "nn.Conv2d(in_channels if l == 0 else out_channels, out_channels, 3, padding=1, bias=False)",
    "conv3x3(in_channels if l == 0 else out_channels, out_channels, deformable)",
) + '''

def conv3x3(in_channels: int, out_channels: int, deformable: bool = False) -> nn.Module:
    """3x3 conv, padding 1, no bias (BN follows): deformable or plain."""
    if deformable:
        return DeformConv2d(in_channels, out_channels)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
'''

_STAGE = '''
class Stage(nn.Module):
    """conv -> 2x2 max-pool -> extra layers -> residual blocks -> fractal block -> clique block."""

    def __init__(self, conv: nn.Module, extra=(), residual=(), fractal=(), clique=()) -> None:
        super().__init__()
        self.conv = conv
        self.pool = nn.MaxPool2d(2)
        self.extra = nn.Sequential(*extra)
        self.residual = nn.Sequential(*residual)
        self.fractal = nn.Sequential(*fractal)
        self.clique = nn.Sequential(*clique)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clique(self.fractal(self.residual(self.extra(self.pool(self.conv(x))))))
'''


_EXIT_HEAD = '''
EXIT_THRESHOLD = EXIT_THRESHOLD_VALUE  # an image leaves a side exit where softmax entropy / ln(classes) is below this


class ExitHead(nn.Module):
    """A BranchyNet side classifier (Teerapittayanon et al. 2016): ConvBN -> global max-pool
    -> linear (no bias) -> logits x 0.125."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvBN(channels, channels)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(channels, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.conv(x)).flatten(1)) * LOGIT_SCALE


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Softmax entropy / ln(classes) of each row, in [0, 1]."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return -(log_p.exp() * log_p).sum(1) / torch.tensor(float(logits.shape[1])).log()
'''

# Methods of `Net` for a network with early exits; `forward` stays the final exit alone.
_EXIT_METHODS = '''

    def forward_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit: the side exits in network order, then the final one."""
        logits = []
        x = self.prep(x)
        for name, stage in (("L1", self.l1), ("L2", self.l2), ("L3", self.l3)):
            x = stage(x)
            if name in self.exits:
                logits.append(self.exits[name](x))
        logits.append(self.head(self.pool(x).flatten(1)) * LOGIT_SCALE)
        return logits

    @torch.no_grad()
    def forward_early_exit(self, x: torch.Tensor,
                           threshold: float = EXIT_THRESHOLD) -> tuple[torch.Tensor, torch.Tensor]:
        """BranchyNet inference (in eval mode): each image leaves at the first side exit whose
        normalized_entropy is below `threshold`, and is not run further; the final exit takes
        the rest. Returns the logits and the exit each image took (side exits from 0, final last)."""
        n = x.shape[0]
        rows = torch.arange(n, device=x.device)
        taken = torch.full((n,), len(self.exits), dtype=torch.long, device=x.device)
        out, k = None, 0
        h = self.prep(x)
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
                return out, taken
        out[rows] = self.head(self.pool(h).flatten(1)) * LOGIT_SCALE
        return out, taken
'''


def _exits_note(arch: ArchConfig) -> str:
    if not arch.exits.stages:
        return ""
    weights = ", ".join(f"{s} {w:g}" for s, w in zip(arch.exits.stages, arch.exits.weights))
    return (f"\nEarly exits (BranchyNet) after {'+'.join(arch.exits.stages)}, trained with loss weights "
            f"{weights} (final 1):\n`model(x)` is the final exit; `model.forward_early_exit(x)` lets images "
            f"leave early\n(threshold {arch.exits.threshold:g}); `model.forward_exits(x)` gives every exit's logits.")


def load_module(source: str, name: str = "nas_exported_model") -> types.ModuleType:
    """Execute generated model.py source as a module (no file needed)."""
    module = types.ModuleType(name)
    module.__file__ = "model.py"
    exec(compile(source, "model.py", "exec"), module.__dict__)  # noqa: S102 - our own generated code
    return module


def check_against_nas(arch: ArchConfig, module: types.ModuleType, weights: dict[str, torch.Tensor] | None) -> float:
    """Load the same weights into the generated `Net` and nas's network; the max |logit
    difference| on a random batch in eval mode. Raises RuntimeError (a bug) if the
    state_dicts differ in keys or shapes or the logits differ by more than CHECK_TOLERANCE."""
    reference = build_model(arch, seed=0).eval()
    if weights is not None:
        reference.load_state_dict(weights)
    else:
        weights = {k: v.detach().clone() for k, v in reference.state_dict().items()}
    exported = module.Net().eval()
    ours = {k: tuple(v.shape) for k, v in exported.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    if ours != theirs:
        missing, extra = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
        raise RuntimeError(f"generated model.py for {arch.short_name()} does not match nas's network: "
                           f"missing {missing[:5]}, unexpected {extra[:5]} (a bug in nas export).")
    exported.load_state_dict(weights)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (exported(x) - reference(x)).abs().max().item()
        if arch.exits.stages:  # every exit's logits, not only the final one
            pairs = zip(exported.forward_exits(x), reference.forward_exits(x))
            diff = max(diff, *((ours - theirs).abs().max().item() for ours, theirs in pairs))
    if not diff <= CHECK_TOLERANCE:
        raise RuntimeError(f"generated model.py for {arch.short_name()} gives logits {diff:.2e} away from "
                           "nas's network (a bug in nas export).")
    return diff


# ----------------------------------------------------------------------------- config.yaml


def render_config(source: ExportSource) -> str:
    """config.yaml: what `nas train --arch config.yaml` reads (arch, recipe, dataset), plus
    where it came from and how well it did."""
    arch = source.arch
    dataset = {k: v for k, v in (source.config.get("dataset") or {}).items() if k not in ("name", "root")}
    data: dict[str, Any] = {
        "arch": arch.to_dict(),
        "hash": arch.hash,
        "short_name": arch.short_name(),
        "recipe": source.config.get("recipe") or {},
        "dataset": dataset,
        "metrics": {**source.metrics, **_weights_info(source)},
        "experiment": source.experiment,
        "code_version": source.code_version,
    }
    header = (
        f"# {arch.short_name()} ({arch.hash}), exported by `nas export` from experiment {source.experiment!r}.\n"
        "# Retrain it: nas train --arch config.yaml  (the data root comes from --data-root or $NAS_DATA_DIR)\n"
        "# metrics: accuracy is val accuracy (test when there is no val split); ci95 is the 95% CI of the\n"
        "# mean over the seeds; weights.pt holds the weights of the most accurate confirm seed.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)


def _weights_info(source: ExportSource) -> dict[str, Any]:
    trial = source.weights_trial
    if trial is None:
        return {}
    return {"weights_seed": trial.seed, "weights_trial": trial.id,
            "weights_val_acc": _num(trial.final_val_acc) if trial.final_val_acc is not None else None,
            "weights_test_acc": _num(trial.final_test_acc) if trial.final_test_acc is not None else None}


# ----------------------------------------------------------------------------- writing


def target_paths(out: Path, formats: tuple[str, ...], *, force: bool) -> dict[str, Path]:
    """Where each format goes, checked before anything is written.

    Raises:
        ConfigError: --out is a file, a target resolves outside --out (a symlink), a
            target is a folder, or a target exists and not `force`.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder; choose a folder.")
    root = out.resolve()
    targets, existing = {}, []
    for fmt in formats:
        path = out / FORMATS[fmt]
        resolved = path.resolve()
        if resolved.parent != root or path.is_symlink():
            raise ConfigError(
                f"refusing to write {path}: it resolves to {resolved}, outside --out {root} "
                "(a symlink?); remove it or choose another --out."
            )
        if path.is_dir():
            raise ConfigError(f"{path} is a folder; remove it or choose another --out.")
        if path.exists():
            existing.append(path.name)
        targets[fmt] = path
    if existing and not force:
        raise ConfigError(
            f"--out {out}: {', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "pass --force to overwrite, or choose another --out."
        )
    return targets


def export(source: ExportSource, out: Path, formats: tuple[str, ...], *, force: bool = False) -> dict[str, Path]:
    """Write the requested files into `out` (created if needed); returns them by format."""
    targets = target_paths(out, formats, force=force)
    note = ""
    if source.weights_trial is not None:
        note = f"Weights: seed {source.weights_trial.seed}, the most accurate confirm seed."
    model_source = render_model(source.arch, experiment=source.experiment, code_version=source.code_version,
                                weights_note=note)
    module = load_module(model_source)
    check_against_nas(source.arch, module, source.weights)
    payloads: dict[str, bytes] = {}  # every file is made before the first is written
    if "py" in targets:
        payloads["py"] = model_source.encode()
    if "pt" in targets:
        buffer = io.BytesIO()
        torch.save(source.weights, buffer)
        payloads["pt"] = buffer.getvalue()
    if "yaml" in targets:
        payloads["yaml"] = render_config(source).encode()
    if "onnx" in targets:
        net = module.Net().eval()
        net.load_state_dict(source.weights)
        payloads["onnx"] = to_onnx(net)
    out.mkdir(parents=True, exist_ok=True)
    for fmt, data in payloads.items():
        _write(targets[fmt], data)
    return targets


def check_onnx_available() -> None:
    """ConfigError unless torch.onnx's exporter can run (it needs onnx and onnxscript)."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"--format onnx needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}: "
            f"pip install {' '.join(missing)}, or leave onnx out of --format."
        )


def to_onnx(net: torch.nn.Module) -> bytes:
    """The network as an ONNX model (opset ONNX_OPSET), input "images" (B, 3, 32, 32), any B."""
    import logging
    import tempfile
    import warnings

    batch = torch.export.Dim("batch", min=1)
    quiet = logging.getLogger("torch.onnx")  # it logs each optional op it skips
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="nas-onnx-") as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(folder, "model.onnx")
        try:
            torch.onnx.export(
                net, (torch.zeros(2, 3, 32, 32),), path, input_names=["images"], output_names=["logits"],
                dynamic_shapes={"x": {0: batch}}, opset_version=ONNX_OPSET, external_data=False,
                dynamo=True, verbose=False,
            )
        finally:
            quiet.setLevel(level)
        with open(path, "rb") as f:
            return f.read()


def _write(path: Path, data: bytes) -> None:
    """Write through a temporary file beside `path`, then rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
