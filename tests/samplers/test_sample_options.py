"""`sample`'s options for every method: validation (UserError), network evaluations, classifier-free guidance."""

import re

import pytest
import torch

from ddpmlab import UserError
from ddpmlab.diffusion import NoiseSchedule, gather
from ddpmlab.samplers import SAMPLERS, network_evaluations, sample

SMALL = NoiseSchedule.linear(100)


@pytest.mark.parametrize("method", SAMPLERS)
@pytest.mark.parametrize("steps", [0, -3, 101, 2.5])
def test_steps_outside_1_to_T_are_user_errors(method, steps):
    with pytest.raises(UserError, match=rf"steps={steps}.*1\.\.100"):
        sample(lambda x, t, labels=None: x, SMALL, (1, 1, 2, 2), sampler=method, steps=steps)


@pytest.mark.parametrize("method,spacing", [("ddpm", "logSNR"), ("ddim", "time-uniform"), ("dpm-solver++", "trailing"),
                                            ("heun", "leading"), ("ddim", "Leading")])
def test_an_unknown_spacing_is_a_user_error_naming_the_valid_ones(method, spacing):
    with pytest.raises(UserError, match=re.escape(f"{method} spacing '{spacing}' is not one of")):
        sample(lambda x, t, labels=None: x, SMALL, (1, 1, 2, 2), sampler=method, steps=5, spacing=spacing)


@pytest.mark.parametrize("eta", [-0.1, 1.5])
def test_ddim_eta_outside_0_1_is_a_user_error(eta):
    with pytest.raises(UserError, match=rf"eta={eta}.*\[0, 1\]"):
        sample(lambda x, t, labels=None: x, SMALL, (1, 1, 2, 2), sampler="ddim", steps=5, eta=eta)


@pytest.mark.parametrize("method,steps,expected", [
    ("ddpm", None, 100), ("ddpm", 10, 10), ("ddim", None, 100), ("ddim", 7, 7),
    ("dpm-solver++", None, 20), ("dpm-solver++", 10, 10), ("heun", None, 35), ("heun", 10, 19), ("heun", 1, 1),
])
def test_network_evaluations_count_the_model_calls(method, steps, expected):
    calls = []

    def model(xt, t, labels=None):
        calls.append(len(xt))
        return torch.zeros_like(xt)

    assert network_evaluations(method, steps, 100) == expected
    sample(model, SMALL, (3, 1, 2, 2), sampler=method, steps=steps, generator=torch.Generator().manual_seed(0))
    assert calls == [3] * expected


def test_network_evaluations_rejects_what_sample_rejects():
    assert network_evaluations("dpm-solver++", None, 10) == 10  # the default 20 steps, capped at T
    with pytest.raises(UserError):
        network_evaluations("heun", 0, 100)
    with pytest.raises(ValueError):
        network_evaluations("euler", 10, 100)


class GaussianClasses:
    """Class c's data is N(means[c], s²); `null_label` is the unconditional N(means[null], s²). Exact ε for each."""

    null_label = 2

    def __init__(self, schedule, means=(0.1, -0.2, 0.0), s=0.3):
        self.schedule, self.means, self.s = schedule, torch.tensor(means), s

    def __call__(self, xt, t, labels=None):
        a = gather(self.schedule.alphas_cumprod, t, xt)
        m = self.means[labels].reshape(-1, *([1] * (xt.dim() - 1))).to(xt.dtype)
        return (1 - a).sqrt() / (a * self.s**2 + 1 - a) * (xt - a.sqrt() * m)


@pytest.mark.parametrize("method,steps", [("dpm-solver++", 10), ("heun", 6), ("ddim", 10)])
def test_guidance_samples_the_analytically_guided_gaussian(method, steps):
    """ε is affine in the class mean, so (1 + w) ε_c − w ε_∅ is the exact ε of N((1 + w) m_c − w m_∅, s²): guided
    sampling must equal unguided sampling of that mean, from the same x_T."""
    schedule, w = NoiseSchedule.linear(1000), 1.5
    model = GaussianClasses(schedule)
    labels = torch.tensor([0, 1] * 32)
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    guided = sample(model, schedule, x_T.shape, sampler=method, steps=steps, noise=x_T, labels=labels,
                    guidance=w, clip_denoised=False)
    shifted = GaussianClasses(schedule, means=((1 + w) * 0.1 - w * 0.0, (1 + w) * -0.2 - w * 0.0, 0.0))
    expected = sample(shifted, schedule, x_T.shape, sampler=method, steps=steps, noise=x_T, labels=labels,
                      clip_denoised=False)
    assert torch.allclose(guided, expected, atol=1e-5)
    assert guided[0::2].mean().item() > 0.2 and guided[1::2].mean().item() < -0.4


@pytest.mark.parametrize("method", ["dpm-solver++", "heun"])
def test_guidance_weight_zero_is_the_conditional_sampler_bit_for_bit(method):
    schedule = NoiseSchedule.linear(1000)
    model, labels = GaussianClasses(schedule), torch.tensor([0, 1, 1, 0])
    x_T = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    guided = sample(model, schedule, x_T.shape, sampler=method, steps=5, noise=x_T, labels=labels, guidance=0.0)
    conditional = sample(model, schedule, x_T.shape, sampler=method, steps=5, noise=x_T, labels=labels)
    assert torch.equal(guided, conditional)


# -- a guidance interval (Kynkäänniemi et al. 2024) --------------------------------------------------------------
def _sigma(schedule, t):  # σ_t = √((1 − ᾱ_t)/ᾱ_t)
    a = schedule.alphas_cumprod[t].item()
    return ((1 - a) / a) ** 0.5


class GuidedWhere(GaussianClasses):
    """The exact ε of the guided Gaussian (mean (1 + w) m_c − w m_∅) where σ_t is in (low, high], of the conditional
    one elsewhere: what guidance on that interval only must sample."""

    def __init__(self, schedule, w, low, high):
        super().__init__(schedule)
        self.guided = GaussianClasses(schedule, means=tuple((1 + w) * m - w * 0.0 for m in (0.1, -0.2)) + (0.0,))
        self.low, self.high = low, high

    def __call__(self, xt, t, labels=None):
        inside = self.low < _sigma(self.schedule, int(t[0])) <= self.high
        return (self.guided if inside else GaussianClasses(self.schedule))(xt, t, labels)


@pytest.mark.parametrize("method,steps", [("dpm-solver++", 12), ("heun", 6), ("ddim", 10)])
def test_guidance_on_an_interval_samples_the_guided_gaussian_there_and_the_conditional_elsewhere(method, steps):
    schedule, w, interval = NoiseSchedule.linear(1000), 1.5, (0.3, 3.0)
    labels = torch.tensor([0, 1] * 32)
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    common = dict(sampler=method, steps=steps, noise=x_T, labels=labels, clip_denoised=False)
    guided = sample(GaussianClasses(schedule), schedule, x_T.shape, guidance=w, guidance_interval=interval, **common)
    expected = sample(GuidedWhere(schedule, w, *interval), schedule, x_T.shape, **common)
    assert torch.allclose(guided, expected, atol=1e-5)
    everywhere = sample(GaussianClasses(schedule), schedule, x_T.shape, guidance=w, **common)
    nowhere = sample(GaussianClasses(schedule), schedule, x_T.shape, **common)
    assert not torch.allclose(guided, everywhere, atol=1e-3) and not torch.allclose(guided, nowhere, atol=1e-3)
    assert torch.equal(sample(GaussianClasses(schedule), schedule, x_T.shape, guidance=w,
                              guidance_interval=(0.0, 1e9), **common), everywhere)


def _calls_of(schedule, settings):
    """{"model": [t, ...], "guide": [t, ...]}: the timesteps at which `sample` calls each network."""
    calls = {"model": [], "guide": []}

    def network(name):
        def call(xt, t, labels=None):
            calls[name].append(int(t[0]))
            return torch.zeros_like(xt)
        return call
    sample(network("model"), schedule, (2, 1, 2, 2), settings, guide=network("guide"), prediction="eps",
           generator=torch.Generator().manual_seed(0))
    return calls


def test_an_autoguided_run_with_an_interval_calls_its_guide_only_at_the_steps_inside_it():
    """guided_evaluations counts the steps whose σ_t is in the interval, by the sampler's own timesteps; the guide
    is called exactly that often, and SamplingSettings.nfe adds them to the model's calls."""
    from ddpmlab.samplers import SamplingSettings, guided_evaluations
    from ddpmlab.samplers.dpm_solver import dpm_solver_timesteps
    schedule = NoiseSchedule.cosine(1000)
    settings = SamplingSettings("dpm-solver++", 13, guidance=1.5, guidance_interval=(0.3, 10.0))
    grid = dpm_solver_timesteps(schedule, 13, "time-quadratic")
    inside = [t for t in grid if 0.3 < _sigma(schedule, t) <= 10.0]
    assert len(inside) == 7 and 999 not in inside and 5 not in inside  # neither the first step (σ 2·10⁴) nor the last
    assert guided_evaluations(schedule, settings) == 7
    assert settings.nfe(1000, autoguided=True, schedule=schedule) == 20
    assert settings.nfe(1000) == 13 and settings.with_(guidance_interval=None).nfe(1000, autoguided=True) == 26
    calls = _calls_of(schedule, settings)
    assert calls["model"] == grid and calls["guide"] == inside
    with pytest.raises(ValueError, match="schedule"):
        settings.nfe(1000, autoguided=True)


@pytest.mark.parametrize("method,steps", [("ddpm", 50), ("ddim", 20), ("dpm-solver++", 15), ("sde-dpm-solver++", 15),
                                          ("heun", 8)])
def test_every_sampler_counts_the_guides_calls_it_makes(method, steps):
    from ddpmlab.samplers import SamplingSettings, guided_evaluations
    schedule = NoiseSchedule.linear(1000)
    settings = SamplingSettings(method, steps, guidance=1.0, guidance_interval=(0.5, 5.0))
    calls = _calls_of(schedule, settings)
    assert 0 < len(calls["guide"]) < len(calls["model"])
    assert all(0.5 < _sigma(schedule, t) <= 5.0 for t in calls["guide"])
    assert len([t for t in calls["model"] if 0.5 < _sigma(schedule, t) <= 5.0]) == len(calls["guide"])
    assert guided_evaluations(schedule, settings) == len(calls["guide"])
    assert settings.nfe(1000, autoguided=True, schedule=schedule) == len(calls["model"]) + len(calls["guide"])


@pytest.mark.parametrize("interval", [(1.0, 1.0), (2.0, 1.0), (-0.1, 1.0), (0.1,), (0.1, 1.0, 2.0), ("a", 1),
                                      (0.1, float("inf"))])
def test_an_interval_not_0_le_low_lt_high_is_a_user_error(interval):
    with pytest.raises(UserError, match="guidance interval"):
        sample(GaussianClasses(SMALL), SMALL, (2, 1, 2, 2), sampler="ddim", steps=5, labels=torch.tensor([0, 1]),
               guidance=1.0, guidance_interval=interval)
