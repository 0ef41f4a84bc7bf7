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
        d = ema_decay_at(step, self.decay)
        for averaged, current in zip(self.shadow.parameters(), model.parameters()):
            averaged.lerp_(current.detach(), 1.0 - d)
        for averaged, current in zip(self.shadow.buffers(), model.buffers()):
            averaged.copy_(current)
