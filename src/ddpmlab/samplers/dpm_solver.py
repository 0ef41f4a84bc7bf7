"""DPM-Solver++(2M), Lu et al. (2022b) "DPM-Solver++" Algorithm 2: second-order multistep in the data prediction x̂_0,
and its SDE variant SDE-DPM-Solver++(2M) (diffusers' algorithm_type="sde-dpmsolver++", solver_type="midpoint").

Time grids from DPM-Solver (Lu et al. 2022a, §3.3).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from ddpmlab.diffusion import NoiseSchedule
from ddpmlab.rng import BatchSlice, randn
from ddpmlab.samplers.common import Denoiser, Sampler, distinct_timesteps, nearest_timesteps

SPACINGS = ("time-quadratic", "logSNR", "time-uniform")
# Measured against the exact probability-flow solution at 10 and 20 NFE (Gaussian and two-mode data; linear
# T=1000 and 4000, cosine T=1000 and 300): time-quadratic was best in 11 of 16 cases and within 4.5x of the
# best (logSNR, on linear T=1000) in the others; logSNR spends its steps at the pure-noise end wherever λ_{T−1}
# is very negative (cosine, T=4000), and time-uniform is barely better than DDIM.
DEFAULT_SPACING = "time-quadratic"


def dpm_solver_timesteps(schedule: NoiseSchedule, steps: int, spacing: str = DEFAULT_SPACING) -> list[int]:
    """The `steps` trained timesteps t_0 = T−1 > t_1 > … > t_{N−1} ≥ 0 where the model is evaluated, as a list.

    The step after t_{N−1} goes to the data (ᾱ = 1, σ = 0, λ = +∞). Grids (Lu et al. 2022a §3.3): uniform in
    t over [−1, T−1], t = −1 being the data (= diffusers' "trailing"); quadratic, t_i = T (1 − i/N)² − 1, denser
    near the data;
    uniform in λ from λ_{T−1} to λ_0 over N + 1 points, whose last point, σ_0 ≈ 0.01, becomes the data.

    The network was trained only at integer timesteps, so every grid point moves to the nearest trained
    timestep (in t, or in λ for logSNR) and the solver uses that timestep's exact ᾱ; the steps h_i come out
    slightly unequal, which Algorithm 2 handles exactly through r_i = h_{i−1}/h_i. Interpolating λ to
    fractional timesteps instead would evaluate the network at times it never saw.
    """
    T = schedule.T
    if not 1 <= steps <= T:
        raise ValueError(f"DPM-Solver++ steps must be in 1..T={T}, got {steps}")
    i = np.arange(steps)
    if spacing == "time-uniform":
        timesteps = (np.round(T - i * (T / steps)) - 1).astype(np.int64).tolist()
    elif spacing == "time-quadratic":
        timesteps = (np.round(T * (1 - i / steps) ** 2) - 1).astype(np.int64).tolist()
    elif spacing == "logSNR":
        table = schedule.log_snr(torch.arange(T))
        targets = torch.linspace(table[-1].item(), table[0].item(), steps + 1, dtype=torch.float64)[:-1]
        timesteps = nearest_timesteps(targets, table)
    else:
        raise ValueError(f"DPM-Solver++ spacing must be one of {SPACINGS}, got {spacing!r}")
    return distinct_timesteps(timesteps)


def first_order_update(x: torch.Tensor, data: torch.Tensor, sigma: float, sigma_next: float, alpha_next: float,
                       h: float) -> torch.Tensor:
    """DPM-Solver++(1) (Lu et al. 2022b §4.1, = DDIM): x_t = (σ_t/σ_s) x_s − α_t (e^{−h} − 1) D, h = λ_t − λ_s."""
    return (sigma_next / sigma) * x - (alpha_next * math.expm1(-h)) * data


def sde_update(x: torch.Tensor, data: torch.Tensor, sigma: float, sigma_next: float, alpha_next: float, h: float,
               noise: torch.Tensor | None) -> torch.Tensor:
    """SDE-DPM-Solver++ step: x_t = (σ_t/σ_s) e^{−h} x_s + α_t (1 − e^{−2h}) D + σ_t √(1 − e^{−2h}) z.

    With D = x̂_0 it is exactly DDPM's ancestral step from s to t: the posterior q(x_t | x_s, x̂_0)'s mean and
    variance σ_t² β_{s|t}/σ_s² (tests/samplers/test_dpm_solver.py derives both); `noise` may be None when σ_t = 0.
    """
    decay = math.exp(-h)
    x = (sigma_next / sigma * decay) * x + (alpha_next * -math.expm1(-2 * h)) * data
    return x if sigma_next == 0 else x + (sigma_next * math.sqrt(-math.expm1(-2 * h))) * noise


def multistep_data(x0: torch.Tensor, x0_prev: torch.Tensor, r: float) -> torch.Tensor:
    """Algorithm 2: D_i = (1 + 1/(2r_i)) x̂_0(t_{i−1}) − 1/(2r_i) x̂_0(t_{i−2}), r_i = h_{i−1}/h_i."""
    return (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev


def dpm_solver_sample(denoiser: Denoiser, x: torch.Tensor, steps: int, spacing: str = DEFAULT_SPACING,
                      progress: bool = False, sde: bool = False, generator: torch.Generator | None = None,
                      rows: BatchSlice | None = None) -> torch.Tensor:
    """Run x_T -> x_0 with `steps` network evaluations; same dtype and device as x. Deterministic (the ODE
    solver) unless `sde`: then each step but the last, to σ = 0, adds fresh noise drawn from `generator`.

    The first step is first order (no history yet) and so is the last, to σ = 0, where h = ∞ makes the
    second-order correction undefined (diffusers' lower_order_final).
    """
    timesteps = dpm_solver_timesteps(denoiser.schedule, steps, spacing)
    alphas_cumprod = denoiser.schedule.alphas_cumprod[timesteps].tolist() + [1.0]
    alphas = [math.sqrt(a) for a in alphas_cumprod]
    sigmas = [math.sqrt(1 - a) for a in alphas_cumprod]
    lambdas = [math.log(a / s) if s > 0 else math.inf for a, s in zip(alphas, sigmas)]
    x0_prev = h_prev = None
    name = "sde-dpm-solver++" if sde else "dpm-solver++"
    for i, t in enumerate(tqdm(timesteps, desc=name, disable=not progress, leave=False)):
        x0, _ = denoiser.x0_eps(x, t)
        h = lambdas[i + 1] - lambdas[i]
        last = i == len(timesteps) - 1
        data = x0 if x0_prev is None or last else multistep_data(x0, x0_prev, h_prev / h)
        if sde:
            noise = None if last else randn(x.shape, generator, x.device, rows=rows)
            x = sde_update(x, data, sigmas[i], sigmas[i + 1], alphas[i + 1], h, noise)
        else:
            x = first_order_update(x, data, sigmas[i], sigmas[i + 1], alphas[i + 1], h)
        x0_prev, h_prev = x0, h
    return x


def run(denoiser: Denoiser, x: torch.Tensor, settings, generator, progress: bool, rows: BatchSlice | None):
    return dpm_solver_sample(denoiser, x, settings.steps, settings.spacing, progress, False, generator, rows)


def run_sde(denoiser: Denoiser, x: torch.Tensor, settings, generator, progress: bool, rows: BatchSlice | None):
    return dpm_solver_sample(denoiser, x, settings.steps, settings.spacing, progress, True, generator, rows)


SAMPLER = Sampler("dpm-solver++", run, SPACINGS, DEFAULT_SPACING, default_steps=20)
SDE_SAMPLER = Sampler("sde-dpm-solver++", run_sde, SPACINGS, DEFAULT_SPACING, default_steps=20)
