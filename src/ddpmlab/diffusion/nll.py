"""The variational bound on −log p_θ(x_0) of Ho et al. (2020) Eq. 5, in bits per dimension on 8-bit images."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ddpmlab.diffusion.process import q_posterior, q_sample, x0_and_eps
from ddpmlab.diffusion.schedule import NoiseSchedule, gather
from ddpmlab.errors import UserError
from ddpmlab.images import uint8_to_model
from ddpmlab.rng import model_device, randn

VARIANCES = ("posterior", "beta")


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats; arguments broadcast."""
    # KL of two Gaussians: ½ (log σ₂²/σ₁² + σ₁²/σ₂² + (μ₁ − μ₂)²/σ₂² − 1)
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x), exactly (Ho et al.'s code uses a tanh approximation instead)."""
    # Φ(x) = ½ (1 + erf(x / √2))
    return torch.special.ndtr(x)


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor,
                                        log_scales: torch.Tensor) -> torch.Tensor:
    """log p(x) elementwise, in nats, for x on the 8-bit grid in [−1, 1]; same dtype and device as x.

    Ho et al. (2020) Eq. 13: the mass of N(mean, e^{2·log_scale}) in x's bin [x − 1/255, x + 1/255], the
    edge bins reaching −∞ and +∞; probabilities are floored at 1e-12 as in Ho et al.'s code.
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_min = (1.0 - cdf_min).clamp(min=1e-12).log()
    log_cdf_delta = (cdf_plus - cdf_min).clamp(min=1e-12).log()
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def prior_bpd(schedule: NoiseSchedule, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) ‖ N(0, I)) per image in bits/dim (N values, x0's dtype and device)."""
    # Eq. 5's L_T with q(x_T | x_0) = N(√ᾱ_T x_0, (1 − ᾱ_T) I), Eq. 4
    t = torch.full((x0.shape[0],), schedule.T - 1, dtype=torch.long)
    mean = gather(schedule.sqrt_alphas_cumprod, t, x0) * x0
    logvar = gather((1.0 - schedule.alphas_cumprod).log(), t, x0)
    return _bits_per_dim(normal_kl(mean, logvar, torch.zeros_like(mean), torch.zeros_like(mean)))


def model_log_variance(schedule: NoiseSchedule, variance: str = "posterior") -> torch.Tensor:
    """log σ_t² of p_θ(x_{t−1} | x_t) for t = 0..T−1 (float64, CPU): β̃_t ("posterior") or β_t ("beta").

    Both start at the clipped log β̃ of the first step (Ho et al.'s code), which sets the decoder's scale.
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    if variance == "posterior":
        return schedule.posterior_log_variance_clipped
    return torch.cat([schedule.posterior_log_variance_clipped[:1], schedule.betas[1:].log()])


def bound_term_bpd(schedule: NoiseSchedule, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                   x0_predicted: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """One term of Eq. 5 per image in bits/dim (x0's dtype and device): L_t where t ≥ 1, the decoder L_0 where t = 0.

    t holds one timestep index per image; x0_predicted is x̂_0(x_t); log_variance is `model_log_variance(...)`.
    """
    true_mean, _, true_logvar = q_posterior(schedule, x0, xt, t)
    # μ_θ(x_t, t) = μ̃_t(x̂_0(x_t), x_t), Ho et al. (2020) Eq. 11 written for any parameterisation
    model_mean, _, _ = q_posterior(schedule, x0_predicted, xt, t)
    model_logvar = gather(log_variance, t, x0)
    # L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)), Eq. 5 (the paper's t is our index + 1)
    kl = _bits_per_dim(normal_kl(true_mean, true_logvar, model_mean, model_logvar))
    # L_0 = −log p_θ(x_0 | x_1), Eq. 13 with scale σ_1
    decoder_nll = _bits_per_dim(-discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar))
    return torch.where(t.to(kl.device) == 0, decoder_nll, kl)


@torch.no_grad()
def bound_terms_bits_per_dim(
    model: Callable,
    schedule: NoiseSchedule,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch_size: int = 256,
    prediction: str | None = None,
    clip_denoised: bool = False,
    t_indices: Sequence[int] | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    progress: bool = False,
    variance: str = "posterior",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(terms, prior): the terms of Eq. 5 per image in bits/dim, float64 on the CPU.

    terms is N×K: column j holds L_t for t = t_indices[j] (K indices shared by all images; all T by default, so that
    terms.sum(1) + prior is the bound) or for t = t_indices[i, j] (an N×K tensor: indices per image), with one
    x_t ~ q(x_t | x_0) per image and column; t = 0 is the decoder −log p_θ(x_0 | x_1). prior is L_T (N values).
    See `nll_bits_per_dim` for the other arguments.
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    images = _as_batch(images)
    n = images.shape[0]
    t_table = torch.arange(schedule.T) if t_indices is None else torch.as_tensor(t_indices, dtype=torch.long).cpu()
    t_table = t_table.expand(n, -1) if t_table.dim() == 1 else t_table
    if t_table.dim() != 2 or t_table.shape[0] != n:
        raise UserError(f"t_indices must be K indices or an N×K table with N={n}, got shape {tuple(t_table.shape)}")
    if t_table.numel() and not (0 <= int(t_table.min()) and int(t_table.max()) < schedule.T):
        raise UserError(f"timestep indices must lie in 0..{schedule.T - 1}")
    device = torch.device(device) if device is not None else model_device(model)
    prediction = prediction or getattr(model, "prediction", "eps")
    log_variance = model_log_variance(schedule, variance)
    terms = torch.empty(n, t_table.shape[1], dtype=torch.float64)
    prior = torch.empty(n, dtype=torch.float64)
    was_training = isinstance(model, nn.Module) and model.training
    if was_training:
        model.eval()
    bar = tqdm(total=math.ceil(n / batch_size) * t_table.shape[1], desc="nll", disable=not progress, leave=False)
    try:
        for start in range(0, n, batch_size):
            x0 = _as_model_range(images[start:start + batch_size]).to(device=device, dtype=torch.float64)
            batch_labels = labels[start:start + batch_size].to(device) if labels is not None else None
            for j in range(t_table.shape[1]):
                t = t_table[start:start + x0.shape[0], j].to(device)
                xt = q_sample(schedule, x0, t, randn(x0.shape, generator, device, torch.float64)).float()
                output = model(xt, t, labels=batch_labels)
                xt = xt.double()  # the maths uses exactly the x_t the model saw
                x0_predicted, _ = x0_and_eps(schedule, prediction, xt, t, output.double())
                if clip_denoised:
                    x0_predicted = x0_predicted.clamp(-1.0, 1.0)
                term = bound_term_bpd(schedule, x0, xt, t, x0_predicted, log_variance)
                terms[start:start + x0.shape[0], j] = term.cpu()
                bar.update()
            prior[start:start + x0.shape[0]] = prior_bpd(schedule, x0).cpu()
    finally:
        bar.close()
        if was_training:
            model.train()
    return terms, prior


def stratified_timesteps(T: int, timesteps: int | None, n: int,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_indices N×S, weights S) so that terms @ weights estimates the sum of all T terms of Eq. 5 per image.

    timesteps=None (or ≥ T): every t, weight 1, exact. Otherwise column 0 is the decoder t = 0 (weight 1) and
    column k ≥ 1 draws, per image, one t uniformly from the k-th of S − 1 contiguous groups of 1..T−1, weighted
    by the group's size (stratified sampling: unbiased, with more variance per image).
    """
    if timesteps is None or timesteps >= T:
        return torch.arange(T).expand(n, -1), torch.ones(T, dtype=torch.float64)
    if timesteps < 2:
        raise UserError(f"timesteps must be at least 2 (the decoder and one KL term), got {timesteps}")
    groups = timesteps - 1
    edges = torch.tensor([1 + i * (T - 1) // groups for i in range(groups + 1)])
    starts, sizes = edges[:-1], edges[1:] - edges[:-1]
    source = generator.device if generator is not None else torch.device("cpu")
    offsets = (torch.rand(n, groups, generator=generator, device=source, dtype=torch.float64).cpu() * sizes).long()
    t_indices = torch.cat([torch.zeros(n, 1, dtype=torch.long), starts + offsets], dim=1)
    return t_indices, torch.cat([torch.ones(1, dtype=torch.long), sizes]).to(torch.float64)


def nll_bits_per_dim(
    model: Callable,
    schedule: NoiseSchedule,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch_size: int = 256,
    prediction: str | None = None,
    clip_denoised: bool = False,
    timesteps: int | None = None,
    generator: torch.Generator | None = None,
    device=None,
    progress: bool = False,
    variance: str = "posterior",
) -> tuple[float, float]:
    """(mean, standard error) over images of Ho et al. (2020)'s bound Eq. 5 on −log p_θ(x_0), in bits/dim.

    images: uint8 N×C×H×W, or floats already in [−1, 1] on the 8-bit grid (x = 2k/255 − 1). Per image the bound
    sums L_T, every L_{t−1} (one x_t ~ q(x_t | x_0) each, so the mean is an unbiased estimate of the expected
    bound) and the discretized decoder L_0; p_θ(x_{t−1} | x_t) has mean μ̃_t(x̂_0, x_t) and variance β̃_t
    (variance="posterior") or β_t ("beta", the "fixedlarge" of Ho et al.'s CIFAR-10 script; often the tighter bound
    when the data spread far beyond the early noise levels). `prediction` (eps|x0|v) defaults to
    `model.prediction`, else "eps"; clip_denoised clamps x̂_0 to [−1, 1]. timesteps=S < T evaluates S terms per
    image instead of T (L_0 and one random t from each of S − 1 strides of 1..T−1, counted for the whole stride,
    see `stratified_timesteps`): about T/S times faster, still an unbiased estimate of the expected bound, but with
    a larger standard error, and no longer a bound image by image. Noise comes from `generator` (CPU by
    default), so a seeded run repeats.
    The model runs on `device` (default: its own) under no_grad; an nn.Module is put in eval mode and restored.
    The standard error is std/√N over images (NaN for one image).
    """
    images = _as_batch(images)
    t_indices, weights = stratified_timesteps(schedule.T, timesteps, images.shape[0], generator)
    terms, prior = bound_terms_bits_per_dim(model, schedule, images, labels, batch_size, prediction, clip_denoised,
                                            t_indices, generator, device, progress, variance)
    per_image = terms @ weights + prior
    n = per_image.numel()
    standard_error = per_image.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return per_image.mean().item(), standard_error


def _bits_per_dim(nats: torch.Tensor) -> torch.Tensor:
    """Elementwise nats summed over each image, divided by D·ln 2."""
    return nats.flatten(1).sum(1) / (nats[0].numel() * math.log(2.0))


def _as_batch(images) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.dim() < 2 or images.shape[0] == 0:
        raise UserError(f"images must be a non-empty N×C×H×W batch, got shape {tuple(images.shape)}")
    return images


def _as_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> [−1, 1]; float images checked to be in [−1, 1] and on the 8-bit grid."""
    if images.dtype == torch.uint8:
        return uint8_to_model(images)
    if not images.is_floating_point():
        raise UserError(f"images must be uint8 in [0, 255] or floats in [−1, 1], got {images.dtype}")
    levels = (images.double() + 1.0) * 127.5
    if images.min() < -1.0 or images.max() > 1.0 or (levels - levels.round()).abs().max() > 1e-3:
        raise UserError("float images must lie in [−1, 1] on the 8-bit grid (2k/255 − 1); "
                        "pass uint8 images or convert them with ddpmlab.images.uint8_to_model")
    return images
