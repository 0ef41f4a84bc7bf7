"""Karras et al.'s Heun sampler on the VP model's own σ range, against the exact ODE solution and DDIM."""

import pytest
import torch

from ddpmlab.diffusion import NoiseSchedule, gather
from ddpmlab.samplers import sample
from ddpmlab.samplers.heun import heun_timesteps, karras_sigmas, vp_sigmas

# Mean |x_0 − exact x_0| on the shared x_T, linear T=1000, Gaussian N(0.1, 0.3²), by Heun steps N (2N − 1 NFE).
ODE_ERRORS = {5: 0.3615, 6: 0.2942, 10: 0.0690, 11: 0.0553}


def test_sigma_range_is_the_models_own(linear_schedule):
    sigmas = vp_sigmas(linear_schedule)
    assert sigmas[0].item() == pytest.approx(0.0100, abs=1e-4) and sigmas[-1].item() == pytest.approx(157.41, abs=0.01)
    a = linear_schedule.alphas_cumprod
    assert torch.allclose(sigmas, ((1 - a) / a).sqrt(), rtol=1e-14)


def test_karras_sigmas_follow_edm_eq_5():
    sigmas = karras_sigmas(0.01, 157.0, 10)
    assert sigmas[0].item() == pytest.approx(157.0) and sigmas[-1].item() == pytest.approx(0.01)
    expected = (157.0 ** (1 / 7) + 4 / 9 * (0.01 ** (1 / 7) - 157.0 ** (1 / 7))) ** 7
    assert sigmas[4].item() == pytest.approx(expected, rel=1e-12)
    assert karras_sigmas(0.01, 157.0, 1).tolist() == [pytest.approx(157.0)]


def test_timesteps_are_the_nearest_trained_sigmas(linear_schedule):
    assert heun_timesteps(linear_schedule, 10) == [999, 937, 864, 775, 663, 511, 301, 102, 18, 0]
    assert heun_timesteps(linear_schedule, 1) == [999]
    assert heun_timesteps(linear_schedule, 1000) == list(range(999, -1, -1))
    log_sigmas = vp_sigmas(linear_schedule).log()
    targets = karras_sigmas(log_sigmas[0].exp().item(), log_sigmas[-1].exp().item(), 10).log()
    for t, target in zip(heun_timesteps(linear_schedule, 10), targets):
        assert (log_sigmas[t] - target).abs() == (log_sigmas - target).abs().min()


def test_one_step_is_one_ddim_step_from_T_minus_1(gaussian, linear_schedule, x_T):
    heun = sample(gaussian, linear_schedule, x_T.shape, sampler="heun", steps=1, noise=x_T, clip_denoised=False)
    ddim = sample(gaussian, linear_schedule, x_T.shape, sampler="ddim", steps=1, spacing="trailing", noise=x_T,
                  clip_denoised=False)
    assert torch.allclose(heun, ddim, atol=1e-4)  # float32 rounding of (x/√ᾱ)·√ᾱ, amplified by 1/√ᾱ_{T−1} ≈ 157


def test_recovers_gaussian_data_at_59_evaluations(gaussian, linear_schedule):
    """N = 30 steps (59 NFE). At N = 10 (19 NFE) the std is 0.386 and at N = 18 (35 NFE) 0.322: ρ = 7 puts
    too few steps where σ ≈ s = 0.3 on this model's range σ ∈ [0.01, 157]."""
    x = sample(gaussian, linear_schedule, (20_000, 1, 4, 4), sampler="heun", steps=30, clip_denoised=False,
               generator=torch.Generator().manual_seed(0))
    assert x.mean().item() == pytest.approx(gaussian.m, abs=0.01)
    assert x.std().item() == pytest.approx(gaussian.s, abs=0.01)


def test_is_a_deterministic_function_of_x_T(gaussian, linear_schedule, x_T):
    a = sample(gaussian, linear_schedule, x_T.shape, sampler="heun", steps=5, noise=x_T,
               generator=torch.Generator().manual_seed(1))
    b = sample(gaussian, linear_schedule, x_T.shape, sampler="heun", steps=5, noise=x_T,
               generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


@pytest.mark.parametrize("steps", sorted(ODE_ERRORS))
def test_error_against_the_exact_ode_solution(gaussian, linear_schedule, x_T, steps, record_property):
    x = sample(gaussian, linear_schedule, x_T.shape, sampler="heun", steps=steps, noise=x_T, clip_denoised=False)
    error = gaussian.ode_error(x, x_T)
    print(f"heun N={steps} ({2 * steps - 1} NFE): mean |x_0 − exact| = {error:.3g}")
    record_property(f"ode_error_heun_{steps}", error)
    assert error == pytest.approx(ODE_ERRORS[steps], rel=0.03)


def test_999_evaluations_agree_with_ddim_and_the_exact_solution(gaussian_data, x_T):
    """N = 500 (999 NFE). DDIM's own error at 1000 steps is 1.2e-3 on linear T=1000 and 6e-4 on cosine."""
    for schedule, tolerance in ((NoiseSchedule.linear(1000), 1.2e-3), (NoiseSchedule.cosine(1000), 1e-3)):
        data = gaussian_data(schedule)
        ddim = sample(data, schedule, x_T.shape, sampler="ddim", steps=1000, noise=x_T, clip_denoised=False)
        heun = sample(data, schedule, x_T.shape, sampler="heun", steps=500, noise=x_T, clip_denoised=False)
        assert data.ode_error(heun, x_T) < 2e-4
        assert (heun - ddim).abs().mean().item() < tolerance


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_x0_and_v_models_give_the_eps_model_result(gaussian, linear_schedule, x_T, prediction):
    def converted(xt, t, labels=None):
        a = gather(linear_schedule.alphas_cumprod, t, xt)
        eps = gaussian(xt, t)
        x0 = (xt - (1 - a).sqrt() * eps) / a.sqrt()
        return x0 if prediction == "x0" else a.sqrt() * eps - (1 - a).sqrt() * x0

    reference = sample(gaussian, linear_schedule, x_T.shape, sampler="heun", steps=6, noise=x_T, clip_denoised=False)
    got = sample(converted, linear_schedule, x_T.shape, sampler="heun", steps=6, noise=x_T, clip_denoised=False,
                 prediction=prediction)
    assert torch.allclose(got, reference, atol=1e-4)


def heun_gain(sigmas: list[float], s: float) -> float:
    """Heun (EDM Algorithm 1, Euler last step) on dx̃/dσ = σ/(s² + σ²)·(x̃ − m), the exact ODE of N(m, s²) data:
    linear, so x̃_end − m = gain·(x̃_start − m); `sigmas` ends with 0."""
    gain = 1.0
    for sigma, sigma_next in zip(sigmas, sigmas[1:]):
        slope = sigma / (s**2 + sigma**2)
        euler = gain + (sigma_next - sigma) * slope * gain
        if sigma_next != 0:
            euler = gain + (sigma_next - sigma) * 0.5 * (slope * gain + sigma_next / (s**2 + sigma_next**2) * euler)
        gain = euler
    return gain


@pytest.mark.parametrize("steps", [5, 10, 18])
def test_is_exactly_heuns_method_on_the_gaussian_ode(gaussian, linear_schedule, x_T, steps):
    """The shortfall at 19 NFE is the method's, not the code's: the sampler equals Heun's recursion on this linear
    ODE over the same trained σ's (N=10: std 1.286 × the data's, the 0.386 pinned above)."""
    timesteps = heun_timesteps(linear_schedule, steps)
    sigmas = vp_sigmas(linear_schedule)[timesteps].tolist() + [0.0]
    gain = heun_gain(sigmas, gaussian.s)
    x_tilde_T = x_T.double() / linear_schedule.sqrt_alphas_cumprod[-1].item()
    expected = gaussian.m + gain * (x_tilde_T - gaussian.m)
    got = sample(gaussian, linear_schedule, x_T.shape, sampler="heun", steps=steps, noise=x_T, clip_denoised=False)
    assert torch.allclose(got.double(), expected, atol=2e-4)
    exact_gain = gaussian.s / (gaussian.s**2 + sigmas[0] ** 2) ** 0.5
    if steps == 10:
        assert gain / exact_gain == pytest.approx(1.286, abs=0.002)
