"""Samplers: one file each; `sample` picks one by name."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ddpmlab.devices import model_device, randn
from ddpmlab.diffusion import NoiseSchedule
from ddpmlab.samplers.common import Denoiser
from ddpmlab.samplers.ddim import ddim_sample, ddim_timesteps
from ddpmlab.samplers.ddpm import ddpm_sample

SAMPLERS = ("ddpm", "ddim")


@torch.no_grad()
def sample(
    model: Callable,
    schedule: NoiseSchedule,
    shape,
    method: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
    guidance_scale: float | None = None,
    clip_denoised: bool = True,
    device=None,
    progress: bool = False,
    variance: str = "posterior",
    prediction: str | None = None,
) -> torch.Tensor:
    """Generate a batch x_0 of `shape` (N, C, H, W) from `model(x_t, t, labels=None)`; float32 on `device`.

    method: "ddpm" (all T steps, σ² = β̃ or β by `variance`) or "ddim" (`steps` of them, `eta` in [0, 1]).
    noise fixes x_T; otherwise it is drawn from `generator`. `prediction` (eps|x0|v) defaults to
    `model.prediction`, else "eps". Values are in [−1, 1] when clip_denoised. An nn.Module is put in
    eval mode while sampling and restored after.
    """
    if method not in SAMPLERS:
        raise ValueError(f"method must be one of {SAMPLERS}, got {method!r}")
    device = torch.device(device) if device is not None else model_device(model)
    x = noise.to(device=device, dtype=torch.float32) if noise is not None else randn(tuple(shape), generator, device)
    if labels is not None:
        labels = labels.to(device)
    denoiser = Denoiser(model, schedule, prediction, labels, guidance_scale, clip_denoised)
    was_training = isinstance(model, nn.Module) and model.training
    if was_training:
        model.eval()
    try:
        if method == "ddpm":
            return ddpm_sample(denoiser, x, variance, generator, progress)
        return ddim_sample(denoiser, x, steps or schedule.T, eta, generator, progress)
    finally:
        if was_training:
            model.train()


__all__ = ["sample", "SAMPLERS", "Denoiser", "ddpm_sample", "ddim_sample", "ddim_timesteps", "randn"]
