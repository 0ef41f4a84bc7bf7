"""Exponential moving average of a network's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(step: int, decay: float) -> float:
    """The decay used after `step` updates: min(decay, (1 + step) / (10 + step)), so early averages forget the init."""
    return min(decay, (1 + step) / (10 + step))


class EMA:
    """Keeps `shadow`, a frozen copy of `model` whose parameters follow θ̄ ← d·θ̄ + (1 − d)·θ; buffers are copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """One averaging step after `step` updates of `model`, all parameters at once (torch._foreach_lerp_: one
        kernel launch per few tensors on a GPU, θ̄ + (1 − d)(θ − θ̄) per tensor as before on the CPU)."""
        d = ema_decay_at(step, self.decay)
        torch._foreach_lerp_(list(self.shadow.parameters()), list(model.parameters()), 1.0 - d)
        for averaged, current in zip(self.shadow.buffers(), model.buffers()):
            averaged.copy_(current)
