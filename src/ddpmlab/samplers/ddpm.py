"""Ancestral sampling, Ho et al. (2020) Algorithm 2, on all T timesteps or a respaced subsequence of them."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ddpmlab.diffusion import NoiseSchedule, q_posterior
from ddpmlab.rng import BatchSlice, randn
from ddpmlab.samplers.common import Denoiser, Sampler
from ddpmlab.samplers.ddim import ddim_timesteps

SPACINGS = ("linspace", "leading", "trailing")


def respaced_schedule(schedule: NoiseSchedule, timesteps: list[int]) -> NoiseSchedule:
    """Nichol & Dhariwal (2021) §4: β_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}} (ᾱ_{τ_{−1}} = 1) over the ascending subsequence τ.

    Its ᾱ_i equal the original ᾱ_{τ_i}, so the same network serves it; all T timesteps give `schedule` itself.
    """
    if len(timesteps) == schedule.T:
        return schedule
    alphas_cumprod = schedule.alphas_cumprod[timesteps]
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    return NoiseSchedule(1.0 - alphas_cumprod / previous)


def ddpm_sample(denoiser: Denoiser, x: torch.Tensor, variance: str = "posterior",
                generator: torch.Generator | None = None, progress: bool = False,
                steps: int | None = None, spacing: str = "linspace", rows: BatchSlice | None = None) -> torch.Tensor:
    """Run x_T -> x_0 over `steps` timesteps (all T by default); σ_i² = β̃_i (variance="posterior") or β_i ("beta").

    With steps < T the chain runs on the respaced process of `ddim_timesteps(T, steps, spacing)`;
    "linspace" is Nichol & Dhariwal's evenly strided subsequence, from 0 to T−1. With `rows`, x is that slice of
    a batch split over processes, and each step's noise the slice's share of the whole batch's draw.
    """
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    timesteps = ddim_timesteps(denoiser.schedule.T, steps or denoiser.schedule.T, spacing)
    schedule = respaced_schedule(denoiser.schedule, timesteps)
    sigmas = (schedule.posterior_variance if variance == "posterior" else schedule.betas).sqrt().tolist()
    schedule = schedule.to(x.device)  # its tables beside x: the loop copies nothing between host and device
    for i in tqdm(range(schedule.T - 1, -1, -1), desc="ddpm", disable=not progress, leave=False):
        x0, _ = denoiser.x0_eps(x, timesteps[i])
        index = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        mean, _, _ = q_posterior(schedule, x0, x, index)  # μ_θ(x_t, t) = μ̃_t(x̂_0(x_t), x_t) of the respaced process
        x = mean + sigmas[i] * randn(x.shape, generator, x.device, rows=rows) if i > 0 else mean
    return x


def run(denoiser: Denoiser, x: torch.Tensor, settings, generator, progress: bool, rows: BatchSlice | None):
    return ddpm_sample(denoiser, x, settings.variance, generator, progress, settings.steps, settings.spacing, rows)


SAMPLER = Sampler("ddpm", run, SPACINGS, default_spacing="linspace", default_steps=None)
