"""DDIM's timestep spacings (closed forms and diffusers' DDIMScheduler) and DDPM on a respaced subsequence."""

import pytest
import torch

from ddpmlab.diffusion import NoiseSchedule, predict_x0_from_eps, q_posterior
from ddpmlab.rng import randn
from ddpmlab.samplers import sample
from ddpmlab.samplers.ddim import ddim_timesteps
from ddpmlab.samplers.ddpm import respaced_schedule


def test_ddim_spacings_closed_forms():
    assert ddim_timesteps(1000, 10, "trailing") == [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]
    assert ddim_timesteps(1000, 10, "linspace") == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert ddim_timesteps(300, 7, "trailing") == [42, 85, 128, 170, 213, 256, 299]
    for T, steps in ((1000, 10), (1000, 7), (300, 7), (50, 29), (4000, 333)):
        assert ddim_timesteps(T, steps) == ddim_timesteps(T, steps, "leading") == [i * T // steps for i in range(steps)]
        trailing, linspace = ddim_timesteps(T, steps, "trailing"), ddim_timesteps(T, steps, "linspace")
        assert trailing[-1] == T - 1 and linspace[0] == 0 and linspace[-1] == T - 1
        for timesteps in (trailing, linspace):
            assert len(timesteps) == steps and all(a < b for a, b in zip(timesteps, timesteps[1:])) and timesteps[0] >= 0
    for spacing in ("leading", "trailing", "linspace"):
        assert ddim_timesteps(100, 100, spacing) == list(range(100))
    with pytest.raises(ValueError):
        ddim_timesteps(1000, 10, "uniform")


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_spacings_match_diffusers(spacing):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is the optional [peers] extra: pip install -e .[peers]")
    compared = 0
    for T in (1000, 300, 50):
        for steps in (1, 3, 7, 10, 25, 29, 50, T):
            scheduler = diffusers.DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
            scheduler.set_timesteps(steps)
            theirs = sorted(scheduler.timesteps.tolist())
            if spacing == "leading" and T % steps:
                continue  # diffusers uses i·⌊T/S⌋, Song et al. ⌊i·T/S⌋: equal only when S divides T
            if spacing == "trailing" and len(theirs) != steps:
                assert theirs[0] == -1 and theirs[1:] == ddim_timesteps(T, steps, spacing)  # its float arange overshoots
                continue
            assert ddim_timesteps(T, steps, spacing) == theirs
            compared += 1
    assert compared >= 12


def test_ddim_trailing_and_leading_agree_when_they_pick_the_same_timesteps(gaussian, linear_schedule, x_T):
    a = sample(gaussian, linear_schedule, (64, 1, 2, 2), sampler="ddim", steps=1000, spacing="trailing", noise=x_T[:64])
    b = sample(gaussian, linear_schedule, (64, 1, 2, 2), sampler="ddim", steps=1000, noise=x_T[:64])
    assert torch.equal(a, b)


def _ho_et_al_algorithm_2(model, schedule, shape, generator):
    """The ancestral sampler as it was before respacing (x_T, then each z, from `generator`), to pin steps = T."""
    x = randn(shape, generator, "cpu")
    sigmas = schedule.posterior_variance.sqrt()
    for t_index in range(schedule.T - 1, -1, -1):
        t = torch.full((x.shape[0],), t_index, dtype=torch.long)
        x0 = predict_x0_from_eps(schedule, x, t, model(x, t)).clamp(-1.0, 1.0)
        mean, _, _ = q_posterior(schedule, x0, x, t)
        x = mean + sigmas[t_index].item() * randn(x.shape, generator, x.device) if t_index > 0 else mean
    return x


def test_ddpm_with_all_timesteps_is_unchanged(gaussian_data):
    schedule = NoiseSchedule.linear(50)
    data = gaussian_data(schedule)
    old = _ho_et_al_algorithm_2(data, schedule, (64, 1, 2, 2), torch.Generator().manual_seed(4))
    assert respaced_schedule(schedule, list(range(50))) is schedule
    for spacing in (None, "linspace", "leading", "trailing"):
        new = sample(data, schedule, (64, 1, 2, 2), sampler="ddpm", generator=torch.Generator().manual_seed(4),
                     steps=50 if spacing else None, spacing=spacing)
        assert torch.equal(new, old)


def test_respaced_schedule_keeps_alpha_bar_on_the_subsequence(linear_schedule):
    timesteps = ddim_timesteps(1000, 100, "linspace")
    respaced = respaced_schedule(linear_schedule, timesteps)
    assert respaced.T == 100
    assert torch.allclose(respaced.alphas_cumprod, linear_schedule.alphas_cumprod[timesteps], rtol=1e-12)
    a = linear_schedule.alphas_cumprod
    assert respaced.betas[5].item() == pytest.approx(1 - a[timesteps[5]].item() / a[timesteps[4]].item(), rel=1e-12)


def _respaced_ddpm_std(schedule, s, variance):
    """Std of x_0 from the respaced chain run with the exact x̂_0 of N(m, s²) data, x_T ~ N(0, 1): each step is
    x_{i−1} = c1 x̂_0 + c2 x_i + σ_i z with x̂_0 = m + k_i (x_i − √ᾱ_i m), k_i = √ᾱ_i s² / (ᾱ_i s² + 1 − ᾱ_i)."""
    var = 1.0
    for i in range(schedule.T - 1, -1, -1):
        a = schedule.alphas_cumprod[i].item()
        k = a**0.5 * s**2 / (a * s**2 + 1 - a)
        noise = (schedule.posterior_variance if variance == "posterior" else schedule.betas)[i].item() if i > 0 else 0.0
        var = (schedule.posterior_mean_coef1[i].item() * k + schedule.posterior_mean_coef2[i].item()) ** 2 * var + noise
    return var**0.5


@pytest.mark.parametrize("variance,expected_std", [("posterior", 0.2718), ("beta", 0.3111)])
def test_ddpm_on_100_respaced_steps(gaussian, linear_schedule, variance, expected_std):
    """Fixed variances are only right for many steps: with 100, σ² = β̃ gives std 0.272 and σ² = β 0.311 for
    data of std 0.3 (the exact reverse variance lies between them), as the respaced chain's own algebra says."""
    respaced = respaced_schedule(linear_schedule, ddim_timesteps(1000, 100, "linspace"))
    assert _respaced_ddpm_std(respaced, gaussian.s, variance) == pytest.approx(expected_std, abs=1e-4)
    x = sample(gaussian, linear_schedule, (20_000, 1, 2, 2), sampler="ddpm", steps=100, variance=variance,
               clip_denoised=False, generator=torch.Generator().manual_seed(0))
    assert x.mean().item() == pytest.approx(gaussian.m, abs=0.01)
    assert x.std().item() == pytest.approx(expected_std, abs=0.003)
