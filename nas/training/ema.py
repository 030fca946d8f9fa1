"""Averages of the weights during training: the EMA that is evaluated (Page, "How to train
your ResNet 8: Bag of tricks", 2018) and lookahead (Zhang et al., NeurIPS 2019, as
airbench94 uses it). Both act on every floating entry of the state_dict (parameters and BN
running statistics), updated in place with one foreach call per update, so they cost one
pass over the weights per step and nothing when off.
"""

from __future__ import annotations

import torch
from torch import nn


def _floats(model: nn.Module) -> list[torch.Tensor]:
    """The floating state of `model`, in state_dict order (views of its own tensors)."""
    return [t for t in model.state_dict().values() if t.is_floating_point()]


class WeightEMA:
    """An exponential moving average of `model`'s weights held in `average` (a network of the
    same architecture, which evaluation uses): after each step,

        average <- decay * average + (1 - decay) * weights       (from `start_step` on)
        average <- weights                                        (before it)

    BN running statistics are averaged like the weights; counters are copied.

    Args:
        model: the network trained.
        average: the network evaluated, same architecture; set to `model`'s weights here.
        decay: per step, in (0, 1).
        start_step: the first step whose update averages.
    """

    def __init__(self, model: nn.Module, average: nn.Module, decay: float, start_step: int = 0) -> None:
        average.load_state_dict(model.state_dict())
        average.requires_grad_(False)
        self.average = average
        self.decay = decay
        self.start_step = start_step
        self._live, self._avg = _floats(model), _floats(average)
        self._live_other = [t for t in model.state_dict().values() if not t.is_floating_point()]
        self._avg_other = [t for t in average.state_dict().values() if not t.is_floating_point()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimiser step `step` (from 0)."""
        weight = 1.0 - self.decay if step >= self.start_step else 1.0
        torch._foreach_lerp_(self._avg, self._live, weight)
        for avg, live in zip(self._avg_other, self._live_other):
            avg.copy_(live)


class Lookahead:
    """Lookahead as airbench94 runs it: every `every` steps the slow weights move towards the
    fast (trained) ones and the fast ones restart from them,

        slow <- d * slow + (1 - d) * fast;  fast <- slow,  d = decay * (step / total_steps) ** 3,

    so the averaging ramps up cubically (hardly any early, when the weights move far; `decay`
    at the end), and the network ends with the slow weights (`finish`).
    """

    def __init__(self, model: nn.Module, decay: float, every: int, total_steps: int) -> None:
        self.decay = decay
        self.every = every
        self.total_steps = max(1, total_steps)
        self._fast = _floats(model)
        self._slow = [t.detach().clone() for t in self._fast]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimiser step `step` (from 0): a sync every `every` steps."""
        done = step + 1
        if done % self.every == 0:
            self._sync(self.decay * min(1.0, done / self.total_steps) ** 3)

    @torch.no_grad()
    def finish(self) -> None:
        """The network takes the slow weights (airbench94's last update, at decay 1)."""
        self._sync(1.0)

    def _sync(self, decay: float) -> None:
        torch._foreach_lerp_(self._slow, self._fast, 1.0 - decay)
        torch._foreach_copy_(self._fast, self._slow)
