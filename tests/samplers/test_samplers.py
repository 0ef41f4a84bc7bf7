"""Samplers against the exact noise predictor of Gaussian data N(m, s²), whose samples must be N(m, s²)."""

import pytest
import torch

from ddpmlab.diffusion import NoiseSchedule, gather
from ddpmlab.samplers import Denoiser, sample
from ddpmlab.samplers.ddim import ddim_timesteps

M, S = 0.1, 0.3


def exact_eps(schedule, m=M, s=S):
    """ε*(x_t, t) = √(1−ᾱ_t) / (ᾱ_t s² + 1 − ᾱ_t) · (x_t − √ᾱ_t m): E[ε | x_t] for x_0 ~ N(m, s²)."""

    def model(xt, t, labels=None):
        a = gather(schedule.alphas_cumprod, t, xt)
        return (1 - a).sqrt() / (a * s**2 + 1 - a) * (xt - a.sqrt() * m)

    return model


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule.linear(1000)


@pytest.mark.parametrize("method,kwargs", [
    ("ddpm", {}),
    ("ddpm", {"variance": "beta"}),
    ("ddim", {"steps": 1000}),
    ("ddim", {"steps": 1000, "eta": 1.0}),
])
def test_sampler_recovers_gaussian_data(schedule, method, kwargs):
    x = sample(exact_eps(schedule), schedule, (20_000, 1, 4, 4), sampler=method, clip_denoised=False,
               generator=torch.Generator().manual_seed(0), **kwargs)
    assert x.mean().item() == pytest.approx(M, abs=0.01)
    assert x.std().item() == pytest.approx(S, abs=0.01)


def test_a_wrong_predictor_fails_the_same_check(schedule):
    """Guards the test above: predicting the noise of N(0.1, 0.5²) data must not pass as N(0.1, 0.3²)."""
    x = sample(exact_eps(schedule, s=0.5), schedule, (20_000, 1, 4, 4), sampler="ddim", steps=1000,
               clip_denoised=False, generator=torch.Generator().manual_seed(0))
    assert abs(x.std().item() - S) > 0.1


def test_x0_and_v_parameterisations_sample_the_same_distribution(schedule):
    eps_model = exact_eps(schedule)

    def x0_model(xt, t, labels=None):
        a = gather(schedule.alphas_cumprod, t, xt)
        return (xt - (1 - a).sqrt() * eps_model(xt, t)) / a.sqrt()

    noise = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    reference = sample(eps_model, schedule, noise.shape, sampler="ddim", steps=100, noise=noise, clip_denoised=False)
    got = sample(x0_model, schedule, noise.shape, sampler="ddim", steps=100, noise=noise, clip_denoised=False,
                 prediction="x0")
    assert torch.allclose(got, reference, atol=1e-4)


def test_ddim_eta0_is_a_deterministic_function_of_noise(schedule):
    model = exact_eps(schedule)
    noise = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    a = sample(model, schedule, noise.shape, sampler="ddim", steps=20, noise=noise, generator=torch.Generator().manual_seed(1))
    b = sample(model, schedule, noise.shape, sampler="ddim", steps=20, noise=noise, generator=torch.Generator().manual_seed(2))
    c = sample(model, schedule, noise.shape, sampler="ddim", steps=20, noise=noise * 1.01)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_seeded_ddpm_is_reproducible(schedule):
    small = NoiseSchedule.linear(50)
    model = exact_eps(small)
    a = sample(model, small, (4, 1, 2, 2), generator=torch.Generator().manual_seed(7))
    b = sample(model, small, (4, 1, 2, 2), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_clip_denoised_keeps_samples_in_range(schedule):
    far = exact_eps(schedule, m=3.0, s=0.1)  # data outside [-1, 1]: clipping must pull x̂_0 back
    x = sample(far, schedule, (16, 1, 2, 2), sampler="ddim", steps=50, generator=torch.Generator().manual_seed(0))
    assert x.max().item() <= 1.0 + 1e-6 and x.min().item() >= -1.0 - 1e-6


def test_ddim_timesteps_uniform_subsequence():
    assert ddim_timesteps(1000, 10) == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert ddim_timesteps(1000, 1000) == list(range(1000))
    assert ddim_timesteps(300, 7) == [0, 42, 85, 128, 171, 214, 257]
    with pytest.raises(ValueError):
        ddim_timesteps(10, 11)


def test_classifier_free_guidance_combines_outputs(schedule):
    calls = []

    class Conditional:
        null_label = 10

        def __call__(self, xt, t, labels=None):
            calls.append(labels.clone())
            return torch.where(labels[:, None, None, None] == 10, torch.full_like(xt, 2.0), torch.full_like(xt, 5.0))

    labels = torch.tensor([3, 4])
    denoiser = Denoiser(Conditional(), schedule, labels=labels, guidance_scale=1.5, clip_denoised=False)
    out = denoiser.output(torch.zeros(2, 1, 2, 2), 10)
    assert torch.allclose(out, torch.full_like(out, (1 + 1.5) * 5.0 - 1.5 * 2.0))
    assert calls[0].tolist() == [3, 4, 10, 10]


def test_sampling_restores_training_mode():
    small = NoiseSchedule.linear(5)
    model = _Wrapped(torch.nn.Conv2d(1, 1, 1))
    model.train()
    sample(model, small, (1, 1, 2, 2))
    assert model.training


class _Wrapped(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t, labels=None):
        assert not self.training
        return self.net(x)
