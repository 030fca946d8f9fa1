"""First-layer patch whitening (Page, "How to train your ResNet 7: Batch norm does reduce
internal covariate shift", 2018; airbench94's `init_whitening_conv`, Jordan 2024).

A fixed 3x3 conv whose 27 filters are the eigenvectors of the 3x3x3 patch second-moment
matrix of the training images, each divided by sqrt(eigenvalue + eps): its outputs over
those patches are decorrelated with variance lambda / (lambda + eps), about 1. It is fitted
once before training on a sample of training images and never trained; a learnable 1x1
conv-BN-act follows it as the network's prep layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 3  # patch side, pixels
CHANNELS = 3 * PATCH * PATCH  # 27 filters: one per dimension of a patch


def patch_moments(images: torch.Tensor, *, chunk: int = 500) -> torch.Tensor:
    """The 27x27 second-moment matrix E[p p^T] of every 3x3 patch (no padding) of `images`,
    in float64, accumulated `chunk` images at a time (all patches at once would be GBs).
    Uncentred, as Page and airbench: the images are normalised to mean 0 already."""
    total = torch.zeros(CHANNELS, CHANNELS, dtype=torch.float64, device=images.device)
    count = 0
    for start in range(0, len(images), chunk):
        patches = F.unfold(images[start : start + chunk].float(), PATCH)  # (n, 27, positions)
        flat = patches.transpose(1, 2).reshape(-1, CHANNELS).double()
        total += flat.T @ flat
        count += len(flat)
    return total / max(1, count)


def whitening_filters(images: torch.Tensor, eps: float) -> torch.Tensor:
    """(27, 3, 3, 3) conv filters that whiten the patches of `images`, largest eigenvalue first."""
    eigenvalues, eigenvectors = torch.linalg.eigh(patch_moments(images))
    filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + eps)[:, None]
    return filters.flip(0).reshape(CHANNELS, 3, PATCH, PATCH).float()


class PatchWhitening(nn.Module):
    """A fixed 3x3 conv, 3 -> 27 channels, padding 1, no bias; zeros until `fit`."""

    def __init__(self) -> None:
        super().__init__()
        # a parameter that is never trained (not a buffer): the key is `whiten.weight`, as a conv's
        self.weight = nn.Parameter(torch.zeros(CHANNELS, 3, PATCH, PATCH), requires_grad=False)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, eps: float) -> None:
        """Set the filters from `images` (normalised training images, N x 3 x 32 x 32)."""
        self.weight.copy_(whitening_filters(images, eps).to(self.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), padding=PATCH // 2)
