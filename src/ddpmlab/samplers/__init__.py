"""Samplers: one file each; `sample` picks one by name."""

from __future__ import annotations

import numbers
from typing import Callable

import torch
from torch import nn

from ddpmlab.devices import BatchSlice, model_device, randn
from ddpmlab.diffusion import NoiseSchedule
from ddpmlab.errors import UserError
from ddpmlab.samplers import ddim, ddpm, dpm_solver, heun
from ddpmlab.samplers.common import Denoiser
from ddpmlab.samplers.ddim import ddim_sample, ddim_timesteps
from ddpmlab.samplers.ddpm import ddpm_sample, respaced_schedule
from ddpmlab.samplers.dpm_solver import dpm_solver_sample, dpm_solver_timesteps
from ddpmlab.samplers.heun import heun_sample, heun_timesteps

SAMPLERS = ("ddpm", "ddim", "dpm-solver++", "sde-dpm-solver++", "heun")
# Each method's timestep spacings and its default (see each module).
SPACINGS = {"ddpm": ddpm.SPACINGS, "ddim": ddim.SPACINGS, "dpm-solver++": dpm_solver.SPACINGS,
            "sde-dpm-solver++": dpm_solver.SPACINGS, "heun": heun.SPACINGS}
DEFAULT_SPACINGS = {"ddpm": "linspace", "ddim": "leading", "dpm-solver++": dpm_solver.DEFAULT_SPACING,
                    "sde-dpm-solver++": dpm_solver.DEFAULT_SPACING, "heun": "karras"}
# Steps when none are given: every timestep for the ancestral chain and DDIM (as before); the few that
# the ODE solvers are for otherwise (Karras et al. use 18 Heun steps = 35 evaluations on CIFAR-10).
DEFAULT_STEPS = {"dpm-solver++": 20, "sde-dpm-solver++": 20, "heun": 18}


def resolve_steps(method: str, steps: int | None, T: int) -> int:
    """`steps`, or the method's default (capped at T); UserError unless it is an integer in 1..T."""
    if method not in SAMPLERS:
        raise ValueError(f"method must be one of {SAMPLERS}, got {method!r}")
    if steps is None:
        return min(DEFAULT_STEPS.get(method, T), T)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= T:
        raise UserError(f"{method} steps={steps!r} must be an integer in 1..{T} (the model's T timesteps)")
    return int(steps)


def resolve_spacing(method: str, spacing: str | None) -> str:
    """`spacing`, or the method's default; UserError unless it is one of SPACINGS[method]."""
    if spacing is None:
        return DEFAULT_SPACINGS[method]
    if spacing not in SPACINGS[method]:
        raise UserError(f"{method} spacing {spacing!r} is not one of {', '.join(SPACINGS[method])}")
    return spacing


def network_evaluations(method: str, steps: int | None, T: int) -> int:
    """Network evaluations (NFE) of one `sample` call: `steps` for ddpm, ddim and the dpm-solvers, 2·steps − 1 for heun.

    Classifier-free guidance doubles the batch of each evaluation, not their number.
    """
    steps = resolve_steps(method, steps, T)
    return 2 * steps - 1 if method == "heun" else steps


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
    spacing: str | None = None,
    rows: BatchSlice | None = None,
) -> torch.Tensor:
    """Generate a batch x_0 of `shape` (N, C, H, W) from `model(x_t, t, labels=None)`; float32 on `device`.

    method: "ddpm" (ancestral, σ² = β̃ or β by `variance`, respaced when steps < T), "ddim" (`eta` in [0, 1]),
    "dpm-solver++" (DPM-Solver++(2M)), "sde-dpm-solver++" (its SDE variant, fresh noise from `generator` each
    step) or "heun" (EDM Algorithm 1, 2·steps − 1 evaluations). steps: None is T for ddpm and ddim, 20 for
    the dpm-solvers, 18 for heun. spacing picks the timesteps, per method (see
    SPACINGS; None: the method's default). noise fixes x_T; otherwise it is drawn from `generator`.
    `prediction` (eps|x0|v) defaults to `model.prediction`, else "eps". Values are in [−1, 1] when
    clip_denoised. An nn.Module is put in eval mode while sampling and restored after. UserError for
    steps outside 1..T, an unknown spacing or eta outside [0, 1]. With `rows`, `shape` is that slice of a batch
    split over processes (labels and noise the slice's) and every draw the slice's share of the whole batch's.
    """
    steps = resolve_steps(method, steps, schedule.T)
    spacing = resolve_spacing(method, spacing)
    if method == "ddim" and not 0.0 <= eta <= 1.0:
        raise UserError(f"ddim eta={eta!r} must be in [0, 1] (0: deterministic, 1: DDPM's variance)")
    device = torch.device(device) if device is not None else model_device(model)
    x = noise.to(device=device, dtype=torch.float32) if noise is not None else randn(tuple(shape), generator, device, rows=rows)
    if labels is not None:
        labels = labels.to(device)
    denoiser = Denoiser(model, schedule, prediction, labels, guidance_scale, clip_denoised)
    was_training = isinstance(model, nn.Module) and model.training
    if was_training:
        model.eval()
    try:
        if method == "ddpm":
            return ddpm_sample(denoiser, x, variance, generator, progress, steps, spacing, rows)
        if method == "ddim":
            return ddim_sample(denoiser, x, steps, eta, generator, progress, spacing, rows)
        if method in ("dpm-solver++", "sde-dpm-solver++"):
            return dpm_solver_sample(denoiser, x, steps, spacing, progress, method == "sde-dpm-solver++", generator, rows)
        return heun_sample(denoiser, x, steps, progress)
    finally:
        if was_training:
            model.train()


__all__ = [
    "sample", "SAMPLERS", "SPACINGS", "DEFAULT_SPACINGS", "DEFAULT_STEPS", "network_evaluations",
    "resolve_steps", "resolve_spacing", "Denoiser", "ddpm_sample", "respaced_schedule", "ddim_sample",
    "ddim_timesteps", "dpm_solver_sample", "dpm_solver_timesteps", "heun_sample", "heun_timesteps", "randn",
]
