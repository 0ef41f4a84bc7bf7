"""Ancestral sampling, Ho et al. (2020) Algorithm 2."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ddpmlab.diffusion import q_posterior
from ddpmlab.devices import randn
from ddpmlab.samplers.common import Denoiser


def ddpm_sample(denoiser: Denoiser, x: torch.Tensor, variance: str = "posterior",
                generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Run x_T -> x_0 over all T steps; σ_t² = β̃_t (variance="posterior") or β_t ("beta")."""
    schedule = denoiser.schedule
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    sigmas = (schedule.posterior_variance if variance == "posterior" else schedule.betas).sqrt()
    for t_index in tqdm(range(schedule.T - 1, -1, -1), desc="ddpm", disable=not progress, leave=False):
        x0, _ = denoiser.x0_eps(x, t_index)
        t = torch.full((x.shape[0],), t_index, device=x.device, dtype=torch.long)
        mean, _, _ = q_posterior(schedule, x0, x, t)  # μ_θ(x_t, t) = μ̃_t(x̂_0(x_t), x_t)
        x = mean + sigmas[t_index].item() * randn(x.shape, generator, x.device) if t_index > 0 else mean
    return x
