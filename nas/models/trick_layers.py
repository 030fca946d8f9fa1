"""The network side of the training tricks (`nas.models.tricks`): activation, ghost batch
norm, frozen BN scales. The pool order is the stage's (`nas.models.blocks.Stage`), the patch
whitening its own module (`nas.models.whitening`).

The builder makes the plain network, then `apply_tricks` swaps its layers: every ReLU for
the activation, every BatchNorm for a ghost one, and freezes the BN scales. Activations
have no weights and a ghost BatchNorm has a BatchNorm's, so the state_dict keys stay the
plain network's, and every block (clique, fractal, exits) gets the trick alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.models.tricks import TricksConfig


def make_activation(tricks: TricksConfig) -> nn.Module:
    """The activation `tricks` names: ReLU, CELU(alpha) (Page post 6) or GELU (airbench94)."""
    if tricks.activation == "celu":
        return nn.CELU(tricks.celu_alpha, inplace=True)
    if tricks.activation == "gelu":
        return nn.GELU()
    return nn.ReLU(inplace=True)


def _grouped_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, size: int):
    """`x` (a multiple of `size` images) normalised in groups of `size`, folded into channels
    so that one batch_norm call does it; with each group's updated running mean and var, (groups, C)."""
    n, c, h, w = x.shape
    groups = n // size
    folded = x.reshape(groups, size, c, h, w).transpose(0, 1).reshape(size, groups * c, h, w)
    mean, var = bn.running_mean.repeat(groups), bn.running_var.repeat(groups)
    weight = None if bn.weight is None else bn.weight.repeat(groups)
    bias = None if bn.bias is None else bn.bias.repeat(groups)
    out = F.batch_norm(folded, mean, var, weight, bias, True, bn.momentum, bn.eps)
    return out.reshape(size, groups, c, h, w).transpose(0, 1).reshape(n, c, h, w), mean.view(groups, c), var.view(groups, c)


def ghost_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, virtual_batch: int) -> torch.Tensor:
    """BatchNorm in training with each group of `virtual_batch` images normalised by its own
    statistics (Page post 6, after Hoffer et al. 2017); the running statistics move by the mean
    of the groups'. A batch the groups do not divide (the images a per-sample drop kind keeps in
    a branch: stochastic depth, depth dropout, drop-path) ends in one smaller group of its own.
    """
    whole = len(x) - len(x) % virtual_batch
    parts = [(x[:whole], virtual_batch), (x[whole:], len(x) - whole)]
    outs, means, variances = zip(*(_grouped_batch_norm(bn, part, size) for part, size in parts if len(part)))
    with torch.no_grad():
        bn.running_mean.copy_(torch.cat(means).mean(0))
        bn.running_var.copy_(torch.cat(variances).mean(0))
        bn.num_batches_tracked += 1
    return outs[0] if len(outs) == 1 else torch.cat(outs)


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training batches are normalised in groups (`ghost_batch_norm`);
    in eval mode it is BatchNorm2d, running statistics and all."""

    def __init__(self, num_features: int, virtual_batch: int) -> None:
        super().__init__(num_features)
        self.virtual_batch = virtual_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or len(x) == self.virtual_batch:
            return super().forward(x)
        return ghost_batch_norm(self, x, self.virtual_batch)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, virtual_batch={self.virtual_batch}"


def apply_tricks(model: nn.Module, tricks: TricksConfig) -> nn.Module:
    """`model` with its layers swapped as `tricks` says (in place; returned for chaining).
    Nothing changes when every network trick is off."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.ReLU and tricks.activation != "relu":
                setattr(parent, name, make_activation(tricks))
            elif type(child) is nn.BatchNorm2d and tricks.ghost_batch:
                ghost = GhostBatchNorm2d(child.num_features, tricks.ghost_batch)
                ghost.load_state_dict(child.state_dict())
                setattr(parent, name, ghost)
    if tricks.freeze_bn_scale:  # Page post 6 / airbench: the scales stay at 1, not trained
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.requires_grad_(False)
    return model
