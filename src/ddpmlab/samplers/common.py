"""What every sampler shares: its registry record, calling the model (with guidance), the x_0 / ε it implies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ddpmlab.diffusion import NoiseSchedule, x0_and_eps


@dataclass(frozen=True)
class Sampler:
    """One sampler, as the registry (ddpmlab.samplers.SAMPLERS) and the command line know it.

    `run(denoiser, x_T, settings, generator, progress, rows)` returns x_0; `settings` is a resolved
    ddpmlab.samplers.SamplingSettings (steps and spacing filled in). `default_steps` None means all T timesteps;
    `evaluations(steps)` is the number of network evaluations (NFE) of one run.
    """

    name: str
    run: Callable[..., torch.Tensor]
    spacings: tuple[str, ...]
    default_spacing: str
    default_steps: int | None
    evaluations: Callable[[int], int] = lambda steps: steps


class Denoiser:
    """Wraps any `model(x_t, t, labels=None)` callable into (x_0, ε) predictions for a sampler.

    Classifier-free guidance (Ho & Salimans 2022): out = (1 + w)·out(x, c) − w·out(x, ∅), applied to the
    raw output (every parameterisation is affine in it, so this equals guiding ε). With a `guide` network instead,
    autoguidance (Karras et al. 2024): out = (1 + w)·out(x, c) − w·guide(x, c), the guide a weaker model of the
    same data, called with the same labels.

    `guidance_interval` (σ_lo, σ_hi) guides only the evaluations whose noise level σ_t = √((1 − ᾱ_t)/ᾱ_t) lies in
    (σ_lo, σ_hi] (Kynkäänniemi et al. 2024); the others call the model alone, with its labels. `guided` counts
    the guided evaluations made so far (samplers.guided_evaluations reads it).
    """

    def __init__(self, model: Callable, schedule: NoiseSchedule, prediction: str | None = None,
                 labels: torch.Tensor | None = None, guidance_scale: float | None = None, clip_denoised: bool = True,
                 guide: Callable | None = None, guidance_interval: tuple[float, float] | None = None):
        self.model = model
        self.guide = guide if guidance_scale else None  # w 0 or None: unguided, one call a step
        self.schedule = schedule
        # per-step coefficients as host numbers, read once: a sampler's loop then waits for nothing on the host
        self.sqrt_alphas_cumprod = schedule.sqrt_alphas_cumprod.tolist()
        self.sqrt_one_minus_alphas_cumprod = schedule.sqrt_one_minus_alphas_cumprod.tolist()
        self.guidance_interval = guidance_interval
        self.guided = 0
        self.prediction = prediction or getattr(model, "prediction", "eps")
        self.labels = labels
        self.guidance_scale = guidance_scale
        self.clip_denoised = clip_denoised
        if guidance_scale is not None and labels is not None and self.guide is None:
            null = getattr(model, "null_label", None)
            if null is None:
                raise ValueError("classifier-free guidance needs a model with a `null_label` attribute")
            self.null_labels = torch.full_like(labels, null)

    def guides_at(self, t_index: int) -> bool:
        """Whether the evaluation at timestep t_index is guided (by a guide at a non-zero w, or classifier-free at any
        given w with labels) with σ_t inside the guidance interval, if one is set."""
        if self.guide is None and (self.guidance_scale is None or self.labels is None):
            return False
        if not self.guidance_interval:
            return True
        sigma = self.sqrt_one_minus_alphas_cumprod[t_index] / self.sqrt_alphas_cumprod[t_index]
        low, high = self.guidance_interval
        return low < sigma <= high

    def output(self, xt: torch.Tensor, t_index: int) -> torch.Tensor:
        """The model's raw output at integer timestep t_index for the whole batch."""
        t = torch.full((xt.shape[0],), t_index, device=xt.device, dtype=torch.long)
        guided = self.guides_at(t_index)
        self.guided += guided
        if not guided:
            return self.model(xt, t, labels=self.labels)
        if self.guide is not None:
            w = self.guidance_scale
            return (1 + w) * self.model(xt, t, labels=self.labels) - w * self.guide(xt, t, labels=self.labels)
        both = self.model(torch.cat([xt, xt]), torch.cat([t, t]), labels=torch.cat([self.labels, self.null_labels]))
        conditional, unconditional = both.chunk(2)
        w = self.guidance_scale
        return (1 + w) * conditional - w * unconditional

    def x0_eps(self, xt: torch.Tensor, t_index: int):
        """(x̂_0, ε̂) at timestep t_index; x̂_0 clipped to [−1, 1] (and ε̂ made consistent) if clip_denoised."""
        t = torch.full((xt.shape[0],), t_index, device=xt.device, dtype=torch.long)
        output = self.output(xt, t_index).to(xt.dtype)
        x0, eps = x0_and_eps(self.schedule.to(xt.device), self.prediction, xt, t, output)
        if self.clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (xt - self.sqrt_alphas_cumprod[t_index] * x0) / self.sqrt_one_minus_alphas_cumprod[t_index]
        return x0, eps


def nearest_timesteps(targets, table: torch.Tensor) -> list[int]:
    """For each target value, the timestep t in 0..T−1 whose table[t] is nearest; table (λ_t, log σ_t) monotone in t."""
    targets = torch.as_tensor(targets, dtype=torch.float64)
    T = len(table)
    if T == 1:
        return [0] * len(targets)
    descending = bool(table[-1] < table[0])
    ascending_table = table.flip(0) if descending else table
    above = torch.searchsorted(ascending_table, targets).clamp(1, T - 1)
    below = above - 1
    nearer_below = (targets - ascending_table[below]).abs() <= (ascending_table[above] - targets).abs()
    nearest = torch.where(nearer_below, below, above)
    return (T - 1 - nearest if descending else nearest).tolist()


def distinct_timesteps(timesteps) -> list[int]:
    """A non-increasing list of N ≤ T timesteps in 0..T−1 made strictly decreasing with the least movement.

    Rounding a dense grid to trained timesteps can land two points on one timestep (a step of length 0
    that still costs an evaluation); each repeat moves one timestep down, and near t = 0 up, so the
    solver keeps exactly N distinct evaluations.
    """
    n, moved = len(timesteps), []
    for i, t in enumerate(timesteps):
        moved.append(min(int(t), moved[-1] - 1) if moved else int(t))
    return [max(t, n - 1 - i) for i, t in enumerate(moved)]
