"""Samplers: one file each, registered below by one line; `sample` runs one by its SamplingSettings."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from ddpmlab.diffusion import NoiseSchedule
from ddpmlab.errors import UserError
from ddpmlab.rng import BatchSlice, model_device, randn
from ddpmlab.samplers import ddim, ddpm, dpm_solver, heun
from ddpmlab.samplers.common import Denoiser, Sampler

# The registry: the command line's choices and help, the config's checks and every default come from it.
SAMPLERS: dict[str, Sampler] = {s.name: s for s in (ddpm.SAMPLER, ddim.SAMPLER, dpm_solver.SAMPLER,
                                                     dpm_solver.SDE_SAMPLER, heun.SAMPLER)}
VARIANCES = ("posterior", "beta")  # ddpm's σ² = β̃ (Ho et al.'s "posterior") or β
EVALUATION_STEPS = 50  # `ddpmlab eval`'s DDIM steps (capped at T) when none are given: the same for every run


def sampler(name: str) -> Sampler:
    """The registered sampler `name`; UserError naming the others."""
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; samplers: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def default_spacing(name: str) -> str | None:
    """The default timestep spacing of sampler `name`, None for an unknown name (a single-pass method's)."""
    return SAMPLERS[name].default_spacing if name in SAMPLERS else None


def resolve_steps(name: str, steps: int | None, T: int) -> int:
    """`steps`, or the sampler's default (capped at T; all T when it has none); UserError unless in 1..T."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {tuple(SAMPLERS)}, got {name!r}")
    if steps is None:
        return min(SAMPLERS[name].default_steps or T, T)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= T:
        raise UserError(f"{name} steps={steps!r} must be an integer in 1..{T} (the model's T timesteps)")
    return int(steps)


def resolve_spacing(name: str, spacing: str | None) -> str:
    """`spacing`, or the sampler's default; UserError unless it is one of the sampler's spacings."""
    record = SAMPLERS[name]
    if spacing is None:
        return record.default_spacing
    if spacing not in record.spacings:
        raise UserError(f"{name} spacing {spacing!r} is not one of {', '.join(record.spacings)}")
    return spacing


def network_evaluations(name: str, steps: int | None, T: int, autoguided: bool = False) -> int:
    """Network evaluations (NFE) of one `sample` call. Classifier-free guidance doubles the batch of each
    evaluation, not their number; autoguidance calls a second network (the guide) at each, doubling their number
    (at those of a guidance interval only: SamplingSettings.nfe)."""
    steps = resolve_steps(name, steps, T)
    return SAMPLERS[name].evaluations(steps) * (2 if autoguided else 1)


def default_steps_text() -> str:
    """Each sampler's default steps, for --help: "T for ddpm, T for ddim, 20 for dpm-solver++, ..."."""
    return ", ".join(f"{s.default_steps or 'T'} for {s.name}" for s in SAMPLERS.values())


def spacings_text() -> str:
    """Each sampler's timestep spacings, its default first, for --help: "ddpm linspace|leading|trailing, ..."."""
    return ", ".join(f"{s.name} {'|'.join([s.default_spacing, *(x for x in s.spacings if x != s.default_spacing)])}"
                     for s in SAMPLERS.values())


@dataclass(frozen=True)
class SamplingSettings:
    """How a diffusion model draws samples: the one object every command, method and sampler passes along.

    steps None: the sampler's default (all T for ddpm and ddim, 20 for the dpm-solvers, 18 for heun); spacing None:
    its default; eta for DDIM only; variance for ddpm only (None: "posterior"); guidance w for a conditional model
    with labels (classifier-free) or, with a `guide` network passed to `sample`, autoguidance; guidance_interval
    (σ_lo, σ_hi): guide only the evaluations at noise levels σ_t in (σ_lo, σ_hi] (Denoiser), None: all of them;
    prediction None: the model's own parameterisation.
    """

    sampler: str = "ddim"
    steps: int | None = None
    spacing: str | None = None
    eta: float = 0.0
    guidance: float | None = None
    clip_denoised: bool = True
    prediction: str | None = None
    variance: str | None = None
    guidance_interval: tuple[float, float] | None = None

    def resolved(self, T: int) -> "SamplingSettings":
        """These settings with steps and spacing filled in; UserError for values the sampler does not take."""
        steps = resolve_steps(sampler(self.sampler).name, self.steps, T)
        if self.sampler == "ddim" and not 0.0 <= self.eta <= 1.0:
            raise UserError(f"ddim eta={self.eta!r} must be in [0, 1] (0: deterministic, 1: DDPM's variance)")
        variance = self.variance or VARIANCES[0]
        if variance not in VARIANCES:
            raise UserError(f"variance {variance!r} is not one of {', '.join(VARIANCES)}")
        interval = parse_guidance_interval(self.guidance_interval) if self.guidance_interval else None  # (): none
        return replace(self, steps=steps, spacing=resolve_spacing(self.sampler, self.spacing), variance=variance,
                       guidance_interval=interval)

    def nfe(self, T: int, autoguided: bool = False, schedule: NoiseSchedule | None = None) -> int:
        """Network evaluations of one run of these settings, by a model with an autoguidance guide (`autoguided`:
        a non-zero guidance w then calls it beside the model at each guided evaluation) or without. With a
        guidance_interval an autoguided count needs the model's `schedule` (guided_evaluations)."""
        if not (autoguided and self.guidance and self.guidance_interval):
            return network_evaluations(self.sampler, self.steps, T,
                                       autoguided=autoguided and bool(self.guidance))
        if schedule is None:
            raise ValueError("the network evaluations of an autoguided run with a guidance interval need its schedule")
        return network_evaluations(self.sampler, self.steps, T) + guided_evaluations(schedule, self)

    @classmethod
    def of_run(cls, sample_cfg, T: int, sampler: str | None = None, steps: int | None = None, **given) -> "SamplingSettings":
        """A run's sample.* settings (a SampleConfig) with what the user gave on top. The run's sample.steps apply
        to its own sampler and to ddim (capped at T); any other sampler, and ddpm always, takes its own default."""
        name = sampler or sample_cfg.sampler
        if steps is None and name in (sample_cfg.sampler, "ddim") and name != "ddpm":
            steps = min(sample_cfg.steps, T)
        given = {key: value for key, value in given.items() if value is not None}
        interval = sample_cfg.guidance_interval
        return cls(name, steps, eta=sample_cfg.eta, guidance=sample_cfg.guidance,
                   clip_denoised=sample_cfg.clip_denoised, variance=sample_cfg.variance,
                   guidance_interval=tuple(interval) if interval is not None else None).with_(**given)

    def for_evaluation(self, T: int) -> "SamplingSettings":
        """These settings under `ddpmlab eval`'s protocol, the same for every run: DDIM without steps runs
        EVALUATION_STEPS (capped at T); any other sampler without steps its own default."""
        if self.steps is None and self.sampler == "ddim":
            return self.with_(steps=min(EVALUATION_STEPS, T))
        return self

    def with_(self, **changes) -> "SamplingSettings":
        """A copy with `changes`."""
        return replace(self, **changes)


@torch.no_grad()
def sample(model: Callable, schedule: NoiseSchedule, shape, settings: SamplingSettings | None = None, *,
           noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
           labels: torch.Tensor | None = None, device=None, progress: bool = False, rows: BatchSlice | None = None,
           guide: Callable | None = None, **fields) -> torch.Tensor:
    """Generate a batch x_0 of `shape` (N, C, H, W) from `model(x_t, t, labels=None)`; float32 on `device`.

    `settings` (default SamplingSettings()) with any of its fields given as keywords on top (sampler="heun",
    steps=10, ...). noise fixes x_T; otherwise it is drawn from `generator`. Values are in [−1, 1] when
    clip_denoised. An nn.Module is put in eval mode while sampling and restored after. UserError for steps outside
    1..T, an unknown spacing or eta outside [0, 1]. With `rows`, `shape` is that slice of a batch split over
    processes (labels and noise the slice's) and every draw the slice's share of the whole batch's. A `guide`
    network (autoguidance, see Denoiser) is called beside the model at each guided evaluation (all of them, or those
    in settings.guidance_interval) when settings.guidance is non-zero (SamplingSettings.nfe, autoguided).
    """
    settings = (settings or SamplingSettings()).with_(**fields).resolved(schedule.T)
    device = torch.device(device) if device is not None else model_device(model)
    x = noise.to(device=device, dtype=torch.float32) if noise is not None else randn(tuple(shape), generator, device, rows=rows)
    if labels is not None:
        labels = labels.to(device)
    denoiser = Denoiser(model, schedule, settings.prediction, labels, settings.guidance, settings.clip_denoised, guide,
                        settings.guidance_interval)
    training = [net for net in (model, guide) if isinstance(net, nn.Module) and net.training]
    for net in training:
        net.eval()
    try:
        return SAMPLERS[settings.sampler].run(denoiser, x, settings, generator, progress, rows)
    finally:
        for net in training:
            net.train()


def parse_guidance_interval(value) -> tuple[float, float]:
    """(σ_lo, σ_hi) from two finite numbers with 0 ≤ σ_lo < σ_hi; UserError otherwise."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"guidance interval {value!r} must be two noise levels σ_lo, σ_hi") from None
    if not 0.0 <= low < high < math.inf:
        raise UserError(f"guidance interval ({low!r}, {high!r}] must have 0 <= σ_lo < σ_hi, both finite")
    return low, high


def guided_evaluations(schedule: NoiseSchedule, settings: SamplingSettings) -> int:
    """How many of one run's network evaluations `settings` guide: those at σ_t in its guidance_interval (all with
    none), counted by running the sampler on one number with a stand-in network that predicts zeros."""
    settings = settings.resolved(schedule.T)
    if not settings.guidance:
        return 0
    zeros = lambda x, t, labels=None: torch.zeros_like(x)  # noqa: E731
    denoiser = Denoiser(zeros, schedule.to("cpu"), prediction="eps", guidance_scale=settings.guidance,
                        clip_denoised=False, guide=zeros, guidance_interval=settings.guidance_interval)
    SAMPLERS[settings.sampler].run(denoiser, torch.zeros(1, 1, 1, 1), settings, torch.Generator().manual_seed(0),
                                   False, None)
    return denoiser.guided


__all__ = ["sample", "parse_guidance_interval", "guided_evaluations",
           "SAMPLERS", "Sampler", "SamplingSettings", "sampler", "default_spacing", "network_evaluations",
           "resolve_steps", "resolve_spacing", "default_steps_text", "spacings_text", "Denoiser", "VARIANCES", "EVALUATION_STEPS"]
