"""The forward process q, its posterior, the three parameterisations (ε, x0, v) and the training loss."""

from __future__ import annotations

from typing import Callable

import torch

from ddpmlab.diffusion.schedule import NoiseSchedule, gather
from ddpmlab.rng import BatchSlice, randint, randn

PREDICTIONS = ("eps", "x0", "v")


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t ~ q(x_t | x_0); Ho et al. (2020) Eq. 4: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε."""
    return gather(schedule.sqrt_alphas_cumprod, t, x0) * x0 + gather(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise


def q_posterior(schedule: NoiseSchedule, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
    """(mean, variance, log variance) of q(x_{t−1} | x_t, x_0); Ho et al. (2020) Eqs. 6–7."""
    mean = gather(schedule.posterior_mean_coef1, t, xt) * x0 + gather(schedule.posterior_mean_coef2, t, xt) * xt
    return mean, gather(schedule.posterior_variance, t, xt), gather(schedule.posterior_log_variance_clipped, t, xt)


def predict_x0_from_eps(schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Eq. 4 solved for x_0: x_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t."""
    return (xt - gather(schedule.sqrt_one_minus_alphas_cumprod, t, xt) * eps) / gather(schedule.sqrt_alphas_cumprod, t, xt)


def predict_eps_from_x0(schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Eq. 4 solved for ε: ε = (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t)."""
    return (xt - gather(schedule.sqrt_alphas_cumprod, t, xt) * x0) / gather(schedule.sqrt_one_minus_alphas_cumprod, t, xt)


def v_from_x0_eps(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Salimans & Ho (2022): v = √ᾱ_t ε − √(1 − ᾱ_t) x_0."""
    return gather(schedule.sqrt_alphas_cumprod, t, x0) * eps - gather(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * x0


def predict_x0_from_v(schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Salimans & Ho (2022): x_0 = √ᾱ_t x_t − √(1 − ᾱ_t) v."""
    return gather(schedule.sqrt_alphas_cumprod, t, xt) * xt - gather(schedule.sqrt_one_minus_alphas_cumprod, t, xt) * v


def predict_eps_from_v(schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Salimans & Ho (2022): ε = √(1 − ᾱ_t) x_t + √ᾱ_t v."""
    return gather(schedule.sqrt_one_minus_alphas_cumprod, t, xt) * xt + gather(schedule.sqrt_alphas_cumprod, t, xt) * v


def x0_and_eps(schedule: NoiseSchedule, prediction: str, xt: torch.Tensor, t: torch.Tensor, output: torch.Tensor):
    """(x_0, ε) implied by a network output under the parameterisation `prediction` (eps|x0|v)."""
    if prediction == "eps":
        return predict_x0_from_eps(schedule, xt, t, output), output
    if prediction == "x0":
        return output, predict_eps_from_x0(schedule, xt, t, output)
    if prediction == "v":
        return predict_x0_from_v(schedule, xt, t, output), predict_eps_from_v(schedule, xt, t, output)
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def training_target(schedule: NoiseSchedule, prediction: str, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
    """What the network regresses on: ε, x_0 or v."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":
        return v_from_x0_eps(schedule, x0, t, noise)
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def min_snr_weight(schedule: NoiseSchedule, prediction: str, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Hang et al. (2023) min-SNR-γ, expressed for the target: ε: min(SNR,γ)/SNR; x0: min(SNR,γ); v: min(SNR,γ)/(SNR+1)."""
    snr = schedule.snr(t)
    clipped = snr.clamp(max=gamma)
    weight = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[prediction]
    return weight.to(torch.float32)


def loss_name(prediction: str, loss_weighting: str = "none", min_snr_gamma: float = 5.0) -> str:
    """What `diffusion_loss` computes, in words: "L_simple (MSE on ε)" for Ho et al.'s loss, else e.g. "MSE on v,
    min-SNR-5 weighted"."""
    target = {"eps": "ε", "x0": "x_0", "v": "v"}.get(prediction, prediction)
    if loss_weighting == "min-snr":
        return f"MSE on {target}, min-SNR-{min_snr_gamma:g} weighted"
    return "L_simple (MSE on ε)" if prediction == "eps" else f"MSE on {target}, unweighted"


def diffusion_loss(
    model: Callable,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    labels: torch.Tensor | None = None,
    prediction: str = "eps",
    loss_weighting: str = "none",
    min_snr_gamma: float = 5.0,
    generator: torch.Generator | None = None,
    rows: BatchSlice | None = None,
) -> torch.Tensor:
    """Ho et al. (2020) L_simple = E_{t,x0,ε} ‖target − net(x_t, t)‖², t ~ U{0..T−1}; a scalar on x0's device.

    `loss_weighting="min-snr"` weights each example by Hang et al.'s min-SNR-γ. t and ε are drawn from
    `generator` on its device (the global CPU generator when None), so a seeded run is reproducible; with the
    generator and the schedule's tables on x0's device, a step waits for nothing on the host. With `rows`, x0 is
    that slice of a batch split over processes, and t and ε are the slice's share of the whole batch's draws.
    """
    schedule = schedule.to(x0.device)
    t = randint(schedule.T, x0.shape[0], generator, x0.device, rows)
    noise = randn(x0.shape, generator, x0.device, x0.dtype, rows)
    xt = q_sample(schedule, x0, t, noise)
    output = model(xt, t, labels=labels)
    target = training_target(schedule, prediction, x0, t, noise)
    per_example = (output.float() - target.float()).pow(2).flatten(1).mean(1)
    if loss_weighting == "min-snr":
        per_example = per_example * min_snr_weight(schedule, prediction, t, min_snr_gamma)
    return per_example.mean()
