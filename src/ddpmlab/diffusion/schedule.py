"""NoiseSchedule: the β_1..β_T of the forward process and every quantity derived from them, in float64."""

from __future__ import annotations

import math

import torch

from ddpmlab.errors import UserError

MAX_TIMESTEPS = 4000
MAX_BETA = 0.999
HO_BETA_START, HO_BETA_END = 1e-4, 0.02  # Ho et al. (2020) at T = 1000
NEAR_PURE_NOISE = 1e-3  # ᾱ_T above this: x_T still carries the image, yet sampling starts from N(0, I)


def linear_beta_range(T: int) -> tuple[float, float]:
    """Nichol & Dhariwal (2021, improved-diffusion): Ho et al.'s β range scaled by 1000/T (capped below 1),
    so that ᾱ_T is near 0 at every T, as it is at T = 1000."""
    scale = 1000 / T
    return min(HO_BETA_START * scale, MAX_BETA), min(HO_BETA_END * scale, MAX_BETA)


class NoiseSchedule:
    """The variances β_t of q(x_t | x_{t−1}) and the derived float64 buffers (CPU) used everywhere else.

    Index t = 0..T−1 stands for the paper's timestep t+1. Use `gather` to read values for a batch, from
    `schedule.to(device)` where the batch lives on a GPU.
    """

    def __init__(self, betas: torch.Tensor):
        self._copies: dict[torch.device, NoiseSchedule] = {}  # this schedule on other devices, made by `to`
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu().flatten()
        _validate_betas(betas)
        self.betas = betas
        self.T = int(betas.numel())
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        # Ho et al. (2020) Eq. 7: β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # β̃ is 0 at the first step; its log is clipped to the next value, as in Ho et al.'s code.
        first = self.posterior_variance[1:2] if self.T > 1 else self.betas[:1]
        self.posterior_log_variance_clipped = torch.cat([first, self.posterior_variance[1:]]).log()
        # Ho et al. (2020) Eq. 7: μ̃_t = coef1 · x_0 + coef2 · x_t
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1.0 - self.alphas_cumprod)

    @classmethod
    def linear(cls, T: int, beta_start: float | None = None, beta_end: float | None = None) -> "NoiseSchedule":
        """Ho et al. (2020): β_t linear from beta_start to beta_end over T steps; a bound left None is
        `linear_beta_range(T)`'s (1e-4 and 0.02 at T = 1000)."""
        _validate_T(T)
        default_start, default_end = linear_beta_range(T)
        beta_start = default_start if beta_start is None else beta_start
        beta_end = default_end if beta_end is None else beta_end
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @classmethod
    def cosine(cls, T: int, s: float = 0.008, max_beta: float = MAX_BETA) -> "NoiseSchedule":
        """Nichol & Dhariwal (2021) Eq. 17: ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2)."""
        _validate_T(T)
        steps = torch.arange(T + 1, dtype=torch.float64)
        f = torch.cos((steps / T + s) / (1 + s) * math.pi / 2) ** 2
        alphas_cumprod = f / f[0]
        betas = (1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=max_beta)
        return cls(betas)

    @classmethod
    def from_betas(cls, betas) -> "NoiseSchedule":
        """A custom schedule; raises UserError unless betas is a non-empty list of finite values in (0, 1)."""
        try:
            tensor = torch.as_tensor(betas, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise UserError("betas must be a list of numbers in (0, 1)") from None
        return cls(tensor)

    def to(self, device) -> "NoiseSchedule":
        """This schedule with its buffers (still float64) on `device`, so that `gather` for a batch there copies
        nothing between host and device; itself when already there. Made once per device, then reused."""
        device = torch.device(device)
        if device == self.betas.device:
            return self
        if device not in self._copies:
            copy = object.__new__(NoiseSchedule)
            copy.__dict__.update({name: value.to(device) if isinstance(value, torch.Tensor) else value
                                  for name, value in self.__dict__.items()})
            copy._copies = {}
            self._copies[device] = copy
        return self._copies[device]

    @property
    def final_alpha_cumprod(self) -> float:
        """ᾱ_T: how much of the image is left at the last step (samplers start from N(0, I) there)."""
        return float(self.alphas_cumprod[-1])

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) at integer timesteps t (float64, on the schedule's device)."""
        a = self.alphas_cumprod[t.to(self.alphas_cumprod.device)]
        return a / (1.0 - a)

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """Lu et al. (2022)'s λ_t = log(α_t/σ_t) = ½ log(ᾱ_t/(1 − ᾱ_t)) at integer timesteps t (float64, on the
        schedule's device)."""
        return 0.5 * self.snr(t).log()

    def __repr__(self) -> str:
        return f"NoiseSchedule(T={self.T}, beta_1={self.betas[0]:.3g}, beta_T={self.betas[-1]:.3g})"


def gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] as like's dtype and device, shaped (N, 1, 1, ...) to broadcast over a batch like `like`.

    With `values` on like's device (a `NoiseSchedule.to(device)` buffer) nothing is copied between host and device.
    """
    out = values[t.to(values.device)].to(device=like.device, dtype=like.dtype)
    return out.reshape(-1, *([1] * (like.dim() - 1)))


def _validate_T(T: int) -> None:
    if not isinstance(T, int) or not 1 <= T <= MAX_TIMESTEPS:
        raise UserError(f"number of timesteps T={T!r} must be an integer in 1..{MAX_TIMESTEPS}")


def _validate_betas(betas: torch.Tensor) -> None:
    if betas.numel() == 0:
        raise UserError("betas must not be empty")
    _validate_T(int(betas.numel()))
    if not torch.isfinite(betas).all():
        raise UserError("betas must be finite")
    if not ((betas > 0) & (betas < 1)).all():
        raise UserError("every beta must lie strictly between 0 and 1")
