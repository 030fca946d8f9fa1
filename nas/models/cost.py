"""Hardware-free costs of a network: parameters and forward FLOPs per image."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

INPUT_SHAPE = (3, 32, 32)  # one CIFAR-10 image


def count_params(model: nn.Module) -> int:
    """Trainable and frozen parameters (BN running statistics are buffers, not counted).

    A weight used more than once (a clique block's stage II reruns stage I's convs) is one
    parameter, counted once: `parameters()` yields each only once. `count_flops` counts
    every run.
    """
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module) -> int:
    """Forward FLOPs for one image, as `FlopCounterMode` counts them (a multiply-add is 2).

    Runs in eval mode on a copy-free forward pass; BN, ReLU and pooling count as 0, as in
    the usual convention of counting only matmul-like ops.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(1, *INPUT_SHAPE, device=device)
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_call_flops(fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
    """``fn(*args)`` without gradients under `FlopCounterMode`: its result and the FLOPs counted.

    For costs of a part of a network (the segments up to an early exit); same conventions
    as `count_flops`. The caller puts the modules in eval mode.
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        result = fn(*args)
    return result, int(counter.get_total_flops())
