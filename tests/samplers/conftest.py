"""The problem the solver tests share: Gaussian data N(m, s²), its exact ε-predictor and its exact ODE solution."""

import math

import pytest
import torch

from ddpmlab.diffusion import NoiseSchedule, gather

MEAN, STD = 0.1, 0.3


class GaussianData:
    """x_0 ~ N(m, s²) elementwise under `schedule`: E[ε | x_t] in closed form, and where the probability-flow ODE ends."""

    def __init__(self, schedule: NoiseSchedule, m: float = MEAN, s: float = STD):
        self.schedule, self.m, self.s = schedule, m, s

    def __call__(self, xt, t, labels=None):
        """ε*(x_t, t) = √(1−ᾱ_t) / (ᾱ_t s² + 1 − ᾱ_t) · (x_t − √ᾱ_t m)."""
        a = gather(self.schedule.alphas_cumprod, t, xt)
        return (1 - a).sqrt() / (a * self.s**2 + 1 - a) * (xt - a.sqrt() * self.m)

    def ode_solution(self, x_T: torch.Tensor) -> torch.Tensor:
        """x_0 = m + s (x_T − √ᾱ_T m) / √(ᾱ_T s² + 1 − ᾱ_T), ᾱ_T the last trained ᾱ: the flow keeps (x̃ − m)/√(s² + σ²)."""
        a = self.schedule.alphas_cumprod[-1].item()
        return self.m + self.s * (x_T.double() - math.sqrt(a) * self.m) / math.sqrt(a * self.s**2 + 1 - a)

    def ode_error(self, x0: torch.Tensor, x_T: torch.Tensor) -> float:
        """Mean absolute difference between a solver's x_0 and the exact one."""
        return (x0.double() - self.ode_solution(x_T)).abs().mean().item()


@pytest.fixture(scope="session")
def linear_schedule():
    return NoiseSchedule.linear(1000)


@pytest.fixture(scope="session")
def gaussian_data():
    """The class itself, for tests that need Gaussian data under another schedule."""
    return GaussianData


@pytest.fixture(scope="session")
def gaussian(linear_schedule):
    return GaussianData(linear_schedule)


@pytest.fixture(scope="session")
def x_T():
    """16_384 values of x_T ~ N(0, I), fixed."""
    return torch.randn(4096, 1, 2, 2, generator=torch.Generator().manual_seed(0))
