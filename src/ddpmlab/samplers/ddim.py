"""DDIM, Song et al. (2021) Eq. 12, over a uniform subsequence of the T timesteps."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ddpmlab.devices import randn
from ddpmlab.samplers.common import Denoiser


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Song et al.'s uniform subsequence τ_i = ⌊i·T/S⌋, i = 0..S−1 (all T timesteps when S = T)."""
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM steps must be in 1..T={T}, got {steps}")
    return [math.floor(i * T / steps) for i in range(steps)]


def ddim_sigma(alpha_bar: float, alpha_bar_prev: float, eta: float) -> float:
    """Song et al. (2021) Eq. 16: σ = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)."""
    return eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * math.sqrt(1 - alpha_bar / alpha_bar_prev)


def ddim_sample(denoiser: Denoiser, x: torch.Tensor, steps: int, eta: float = 0.0,
                generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Run x_T -> x_0 over `steps` timesteps; eta=0 is deterministic, eta=1 matches DDPM's variance."""
    alphas_cumprod = denoiser.schedule.alphas_cumprod
    timesteps = ddim_timesteps(denoiser.schedule.T, steps)
    for i in tqdm(range(len(timesteps) - 1, -1, -1), desc="ddim", disable=not progress, leave=False):
        t = timesteps[i]
        a, a_prev = alphas_cumprod[t].item(), (alphas_cumprod[timesteps[i - 1]].item() if i > 0 else 1.0)
        x0, eps = denoiser.x0_eps(x, t)
        sigma = ddim_sigma(a, a_prev, eta)
        # Eq. 12: x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * randn(x.shape, generator, x.device)
    return x
