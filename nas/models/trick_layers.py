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


def ghost_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, virtual_batch: int) -> torch.Tensor:
    """BatchNorm in training with each group of `virtual_batch` images normalised by its own
    statistics (Page post 6, after Hoffer et al. 2017). The groups are folded into channels,
    so one batch_norm call does it; the running statistics move by the mean of the groups'.
    """
    n, c, h, w = x.shape
    groups = n // virtual_batch
    if groups * virtual_batch != n:
        raise ValueError(f"ghost batch norm: the virtual batch ({virtual_batch} images) must divide the batch, "
                         f"but got a batch of {n}.")
    folded = x.reshape(groups, virtual_batch, c, h, w).transpose(0, 1).reshape(virtual_batch, groups * c, h, w)
    mean, var = bn.running_mean.repeat(groups), bn.running_var.repeat(groups)
    weight = None if bn.weight is None else bn.weight.repeat(groups)
    bias = None if bn.bias is None else bn.bias.repeat(groups)
    out = F.batch_norm(folded, mean, var, weight, bias, True, bn.momentum, bn.eps)
    with torch.no_grad():
        bn.running_mean.copy_(mean.view(groups, c).mean(0))
        bn.running_var.copy_(var.view(groups, c).mean(0))
        bn.num_batches_tracked += 1
    return out.reshape(virtual_batch, groups, c, h, w).transpose(0, 1).reshape(n, c, h, w)


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
