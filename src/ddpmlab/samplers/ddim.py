"""DDIM, Song et al. (2021) Eq. 12, over a subsequence of the T timesteps."""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from ddpmlab.rng import BatchSlice, randn
from ddpmlab.samplers.common import Denoiser, Sampler

SPACINGS = ("leading", "trailing", "linspace")


def ddim_timesteps(T: int, steps: int, spacing: str = "leading") -> list[int]:
    """`steps` distinct timesteps in 0..T−1, ascending; all T of them when steps = T, whatever the spacing.

    As diffusers' DDIMScheduler names them (Lin et al. 2024, Table 2):
    "leading": Song et al.'s τ_i = ⌊i·T/S⌋, i = 0..S−1 (diffusers uses i·⌊T/S⌋; the two agree when S divides T);
    "trailing": round(T − i·T/S) − 1, i = 0..S−1, so it starts at T−1 (diffusers' arange(T, 0, −T/S), which
    for some T, S such as 300, 7 also yields an extra −1; this takes its first S);
    "linspace": round(linspace(0, T−1, S)), from 0 to T−1.
    """
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM steps must be in 1..T={T}, got {steps}")
    if spacing == "leading":
        return [math.floor(i * T / steps) for i in range(steps)]
    if spacing == "trailing":
        return (np.round(T - np.arange(steps) * (T / steps)) - 1).astype(np.int64)[::-1].tolist()
    if spacing == "linspace":
        return np.linspace(0, T - 1, steps).round().astype(np.int64).tolist()
    raise ValueError(f"DDIM spacing must be one of {SPACINGS}, got {spacing!r}")


def ddim_sigma(alpha_bar: float, alpha_bar_prev: float, eta: float) -> float:
    """Song et al. (2021) Eq. 16: σ = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)."""
    return eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * math.sqrt(1 - alpha_bar / alpha_bar_prev)


def ddim_sample(denoiser: Denoiser, x: torch.Tensor, steps: int, eta: float = 0.0,
                generator: torch.Generator | None = None, progress: bool = False,
                spacing: str = "leading", rows: BatchSlice | None = None) -> torch.Tensor:
    """Run x_T -> x_0 over `steps` timesteps chosen by `spacing`; eta=0 is deterministic, eta=1 matches DDPM's variance.

    Each step goes to the next timestep of the list (diffusers' DDIMScheduler goes to t − ⌊T/S⌋ instead,
    which for "trailing" and "linspace" is not always the next one it evaluates). With `rows`, x is that slice of a
    batch split over processes, and z the slice's share of the whole batch's draw.
    """
    alphas_cumprod = denoiser.schedule.alphas_cumprod.tolist()  # host numbers: no per-step reads
    timesteps = ddim_timesteps(denoiser.schedule.T, steps, spacing)
    for i in tqdm(range(len(timesteps) - 1, -1, -1), desc="ddim", disable=not progress, leave=False):
        t = timesteps[i]
        a, a_prev = alphas_cumprod[t], (alphas_cumprod[timesteps[i - 1]] if i > 0 else 1.0)
        x0, eps = denoiser.x0_eps(x, t)
        sigma = ddim_sigma(a, a_prev, eta)
        # Eq. 12: x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * randn(x.shape, generator, x.device, rows=rows)
    return x


def run(denoiser: Denoiser, x: torch.Tensor, settings, generator, progress: bool, rows: BatchSlice | None):
    return ddim_sample(denoiser, x, settings.steps, settings.eta, generator, progress, settings.spacing, rows)


SAMPLER = Sampler("ddim", run, SPACINGS, default_spacing="leading", default_steps=None)
