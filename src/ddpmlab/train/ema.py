"""Exponential moving average of a network's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ddpmlab.config import TrainConfig


def ema_decay_at(step: int, decay: float, warmup: float = TrainConfig.ema_warmup) -> float:
    """The decay used after `step` updates: min(decay, (1 + step) / (warmup + step)), so early averages forget the
    init (warmup 10: diffusers' EMAModel). Until `decay` binds, the average weighs update i of s roughly as
    (i/s)^(warmup − 2), the power-function EMA of Karras et al. (2024, EDM2) with γ ≈ warmup − 2: a smaller
    warmup, a longer average; warmup 1 is a plain EMA from the first update."""
    return min(decay, (1 + step) / (warmup + step))


class EMA:
    """Keeps `shadow`, a frozen copy of `model` whose parameters follow θ̄ ← d·θ̄ + (1 − d)·θ; buffers are copied, and
    so are the parameters whose names start with one of the model's EMA_COPIES, if it has any (an LDM's autoencoder,
    whose latents the averaged denoiser was trained on). Parameters that need no gradient (an LDM's frozen
    autoguidance guide, which its owner sets in both networks at once) are left alone, and so are, at each update,
    those whose names start with one of the model's `ema_held` prefixes then (an LDM's denoiser in its guide
    stage, which trains the guide alone)."""

    def __init__(self, model: nn.Module, decay: float, warmup: float = TrainConfig.ema_warmup):
        self.decay, self.warmup = decay, warmup
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        copied = tuple(getattr(model, "EMA_COPIES", ()))
        roles = ["frozen" if not p.requires_grad else "copied" if name.startswith(copied) else "averaged"
                 for name, p in model.named_parameters()]
        self.roles = None if set(roles) <= {"averaged"} else roles  # None: every parameter averaged
        self.names = [name for name, _ in model.named_parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """One averaging step after `step` updates of `model`, all parameters at once (torch._foreach_lerp_: one
        kernel launch per few tensors on a GPU, θ̄ + (1 − d)(θ − θ̄) per tensor as before on the CPU)."""
        d = ema_decay_at(step, self.decay, self.warmup)
        averaged, current = list(self.shadow.parameters()), list(model.parameters())
        roles, held = self.roles, tuple(getattr(model, "ema_held", ()))
        if held:
            roles = ["held" if name.startswith(held) else role
                     for name, role in zip(self.names, roles or ["averaged"] * len(self.names))]
        if roles is not None:
            for role, shadow, value in zip(roles, averaged, current):
                if role == "copied":
                    shadow.copy_(value)
            averaged = [shadow for role, shadow in zip(roles, averaged) if role == "averaged"]
            current = [value for role, value in zip(roles, current) if role == "averaged"]
        torch._foreach_lerp_(averaged, current, 1.0 - d)
        for averaged, current in zip(self.shadow.buffers(), model.buffers()):
            averaged.copy_(current)
