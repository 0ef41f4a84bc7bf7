"""Karras et al. (2022, EDM) Algorithm 1: deterministic second-order Heun on the probability-flow ODE, in σ.

The VP process x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, rescaled to x̃ = x/√ᾱ_t, is x̃ = x_0 + σ_t ε with
σ_t = √((1 − ᾱ_t)/ᾱ_t): EDM's s(t) = 1, σ(t) = t form, whose ODE is dx̃/dσ = (x̃ − D(x̃; σ))/σ.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ddpmlab.diffusion import NoiseSchedule
from ddpmlab.samplers.common import Denoiser, Sampler, distinct_timesteps, nearest_timesteps

SPACINGS = ("karras",)
RHO = 7.0


def vp_sigmas(schedule: NoiseSchedule) -> torch.Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) at every trained timestep, float64 on the CPU (about 0.0100 … 157.4 for linear T=1000)."""
    return ((1 - schedule.alphas_cumprod) / schedule.alphas_cumprod).sqrt()


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = RHO) -> torch.Tensor:
    """EDM Eq. 5: σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i = 0..N−1 (float64)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def heun_timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """The `steps` trained timesteps T−1 = t_0 > … > t_{N−1} = 0 nearest (in log σ) to EDM's ρ = 7 grid.

    The discrete-time network only knows its T noise levels, so each σ_i becomes the nearest trained one
    and the solver steps between those exact σ's.
    """
    T = schedule.T
    if not 1 <= steps <= T:
        raise ValueError(f"Heun steps must be in 1..T={T}, got {steps}")
    log_sigmas = vp_sigmas(schedule).log()
    targets = karras_sigmas(log_sigmas[0].exp().item(), log_sigmas[-1].exp().item(), steps).log()
    return distinct_timesteps(nearest_timesteps(targets, log_sigmas))


def ode_derivative(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
    """EDM Eq. 4 with s(t) = 1, σ(t) = t: dx̃/dσ = (x̃ − D(x̃; σ))/σ."""
    return (x - denoised) / sigma


def heun_sample(denoiser: Denoiser, x: torch.Tensor, steps: int, progress: bool = False) -> torch.Tensor:
    """Run x_T -> x_0 in `steps` Heun steps, the last one Euler to σ = 0: 2·steps − 1 network evaluations.

    x is x_T ~ N(0, I) at timestep T−1, as for the other samplers; deterministic; same dtype and device as x.
    """
    timesteps = heun_timesteps(denoiser.schedule, steps)
    sigmas = vp_sigmas(denoiser.schedule)[timesteps].tolist() + [0.0]
    scales = denoiser.schedule.sqrt_alphas_cumprod[timesteps].tolist()

    def denoise(x_scaled: torch.Tensor, i: int) -> torch.Tensor:
        """D(x̃; σ_i): the model's x̂_0 at timestep t_i, fed x = √ᾱ x̃."""
        return denoiser.x0_eps(scales[i] * x_scaled, timesteps[i])[0]

    x = x / scales[0]
    for i in tqdm(range(len(timesteps)), desc="heun", disable=not progress, leave=False):
        d = ode_derivative(x, denoise(x, i), sigmas[i])
        x_next = x + (sigmas[i + 1] - sigmas[i]) * d  # Algorithm 1 line 5: Euler step
        if sigmas[i + 1] != 0:  # lines 7–8: second-order correction, except on the last step to σ = 0
            d_next = ode_derivative(x_next, denoise(x_next, i + 1), sigmas[i + 1])
            x_next = x + (sigmas[i + 1] - sigmas[i]) * (0.5 * d + 0.5 * d_next)
        x = x_next
    return x


def run(denoiser: Denoiser, x: torch.Tensor, settings, generator, progress: bool, rows=None):
    return heun_sample(denoiser, x, settings.steps, progress)


# Karras et al. use 18 Heun steps = 35 evaluations on CIFAR-10
SAMPLER = Sampler("heun", run, SPACINGS, default_spacing="karras", default_steps=18,
                  evaluations=lambda steps: 2 * steps - 1)
