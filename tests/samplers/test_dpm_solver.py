"""DPM-Solver++(2M) against the exact probability-flow solution of Gaussian data, DDIM, and diffusers; its SDE variant
against DDPM's posterior step, the data distribution and diffusers."""

import math

import pytest
import torch

from ddpmlab.diffusion import NoiseSchedule, gather, q_posterior
from ddpmlab.rng import randn
from ddpmlab.samplers import sample
from ddpmlab.samplers.common import distinct_timesteps
from ddpmlab.samplers.ddim import ddim_timesteps
from ddpmlab.samplers.ddpm import respaced_schedule
from ddpmlab.samplers.dpm_solver import DEFAULT_SPACING, SPACINGS, dpm_solver_timesteps, sde_update

# Mean |x_0 − exact x_0| on the shared x_T, linear T=1000, Gaussian N(0.1, 0.3²); DDIM: 0.0876 at 10, 0.0474 at 20.
ODE_ERRORS = {
    ("time-quadratic", 10): 0.00927, ("logSNR", 10): 0.00207, ("time-uniform", 10): 0.0849,
    ("time-quadratic", 20): 0.00701, ("logSNR", 20): 0.00278, ("time-uniform", 20): 0.0329,
}


def test_log_snr_is_half_the_log_of_alpha_bar_over_one_minus_alpha_bar(linear_schedule):
    t = torch.tensor([0, 499, 999])
    a = linear_schedule.alphas_cumprod[t]
    assert torch.allclose(linear_schedule.log_snr(t), 0.5 * torch.log(a / (1 - a)), rtol=1e-14)
    assert linear_schedule.log_snr(t).tolist() == pytest.approx([4.6051, -1.2308, -5.0588], abs=1e-4)


def test_timesteps_closed_forms(linear_schedule):
    assert dpm_solver_timesteps(linear_schedule, 10, "time-uniform") == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    # t_i = T (1 − i/N)² − 1
    assert dpm_solver_timesteps(linear_schedule, 10, "time-quadratic") == [999, 809, 639, 489, 359, 249, 159, 89, 39, 9]
    lam = linear_schedule.log_snr(torch.arange(1000))
    targets = torch.linspace(lam[-1].item(), lam[0].item(), 11, dtype=torch.float64)[:-1]
    for t, target in zip(dpm_solver_timesteps(linear_schedule, 10, "logSNR"), targets):
        assert (lam[t] - target).abs() == (lam - target).abs().min()  # the nearest trained λ


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 2, 7, 20, 500, 1000])
def test_timesteps_are_distinct_trained_timesteps_from_T_minus_1(linear_schedule, spacing, steps):
    timesteps = dpm_solver_timesteps(linear_schedule, steps, spacing)
    assert len(timesteps) == steps and timesteps[0] == 999 and timesteps[-1] >= 0
    assert all(a > b for a, b in zip(timesteps, timesteps[1:]))
    if steps == 1000:
        assert timesteps == list(range(999, -1, -1))


def test_distinct_timesteps_moves_repeats_by_the_least():
    assert distinct_timesteps([9, 9, 3, 0, 0]) == [9, 8, 3, 1, 0]
    assert distinct_timesteps([5, 4, 2]) == [5, 4, 2]


def test_recovers_gaussian_data_at_20_evaluations(gaussian, linear_schedule):
    x = sample(gaussian, linear_schedule, (20_000, 1, 4, 4), sampler="dpm-solver++", steps=20, clip_denoised=False,
               generator=torch.Generator().manual_seed(0))
    assert x.mean().item() == pytest.approx(gaussian.m, abs=0.01)
    assert x.std().item() == pytest.approx(gaussian.s, abs=0.01)  # 0.3089 with the default time-quadratic grid


def test_is_a_deterministic_function_of_x_T(gaussian, linear_schedule, x_T):
    a = sample(gaussian, linear_schedule, x_T.shape, sampler="dpm-solver++", steps=10, noise=x_T,
               generator=torch.Generator().manual_seed(1))
    b = sample(gaussian, linear_schedule, x_T.shape, sampler="dpm-solver++", steps=10, noise=x_T,
               generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


@pytest.mark.parametrize("spacing,steps", sorted(ODE_ERRORS))
def test_error_against_the_exact_ode_solution(gaussian, linear_schedule, x_T, spacing, steps, record_property):
    x = sample(gaussian, linear_schedule, x_T.shape, sampler="dpm-solver++", steps=steps, spacing=spacing, noise=x_T,
               clip_denoised=False)
    error = gaussian.ode_error(x, x_T)
    print(f"dpm-solver++ {spacing} {steps} NFE: mean |x_0 − exact| = {error:.3g}")
    record_property(f"ode_error_{spacing}_{steps}", error)
    assert error == pytest.approx(ODE_ERRORS[spacing, steps], rel=0.03)


def test_default_spacing_beats_ddim_and_time_uniform_on_linear_and_cosine(gaussian_data, x_T):
    """The measurement behind DEFAULT_SPACING, on the Gaussian half of it (dpm_solver.py has the rest)."""
    assert DEFAULT_SPACING == "time-quadratic"
    for schedule in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(1000)):
        data = gaussian_data(schedule)
        for steps in (10, 20):
            def error(method, spacing=None):
                x = sample(data, schedule, x_T.shape, sampler=method, steps=steps, spacing=spacing, noise=x_T,
                           clip_denoised=False)
                return data.ode_error(x, x_T)
            default = error("dpm-solver++")
            assert default < 0.011
            assert default < error("dpm-solver++", "time-uniform") / 2 and default < error("ddim") / 4


def test_a_thousand_steps_agree_with_ddim_and_the_exact_solution(gaussian_data, x_T):
    """On linear T=1000 DDIM's own error at 1000 steps is 1.2e-3 (first order); the cosine schedule's is 6e-4."""
    linear, cosine = gaussian_data(NoiseSchedule.linear(1000)), gaussian_data(NoiseSchedule.cosine(1000))
    for data, ddim_error in ((linear, 1.17e-3), (cosine, 5.9e-4)):
        ddim = sample(data, data.schedule, x_T.shape, sampler="ddim", steps=1000, noise=x_T, clip_denoised=False)
        ours = sample(data, data.schedule, x_T.shape, sampler="dpm-solver++", steps=1000, noise=x_T, clip_denoised=False)
        assert data.ode_error(ddim, x_T) == pytest.approx(ddim_error, rel=0.03)
        assert data.ode_error(ours, x_T) < 1e-4
        assert (ours - ddim).abs().mean().item() < (1e-3 if data is cosine else 1.2e-3)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_no_worse_than_diffusers_dpm_solver(gaussian, linear_schedule, x_T, spacing, record_property):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is the optional [peers] extra: pip install -e .[peers]")
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=linear_schedule.betas.numpy(), algorithm_type="dpmsolver++",
        solver_order=2, prediction_type="epsilon", lower_order_final=True, final_sigmas_type="zero",
        timestep_spacing="trailing")
    timesteps = dpm_solver_timesteps(linear_schedule, 10, spacing)
    if spacing == "time-uniform":
        scheduler.set_timesteps(10)
        assert scheduler.timesteps.tolist() == timesteps  # time-uniform is diffusers' "trailing"
    else:
        scheduler.set_timesteps(timesteps=timesteps)
    x = x_T.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(gaussian(x, t.repeat(len(x))), t, x).prev_sample
    ours = sample(gaussian, linear_schedule, x_T.shape, sampler="dpm-solver++", steps=10, spacing=spacing, noise=x_T,
                  clip_denoised=False)
    theirs_error, our_error = gaussian.ode_error(x, x_T), gaussian.ode_error(ours, x_T)
    print(f"10 NFE {spacing}: ours {our_error:.6g}, diffusers {theirs_error:.6g}")
    record_property(f"diffusers_ode_error_{spacing}", theirs_error)
    assert our_error <= theirs_error + 1e-6
    assert (ours - x).abs().max().item() < 1e-5


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_x0_and_v_models_give_the_eps_model_result(gaussian, linear_schedule, x_T, prediction):
    def converted(xt, t, labels=None):
        a = gather(linear_schedule.alphas_cumprod, t, xt)
        eps = gaussian(xt, t)
        x0 = (xt - (1 - a).sqrt() * eps) / a.sqrt()
        return x0 if prediction == "x0" else a.sqrt() * eps - (1 - a).sqrt() * x0

    reference = sample(gaussian, linear_schedule, x_T.shape, sampler="dpm-solver++", steps=10, noise=x_T,
                       clip_denoised=False)
    got = sample(converted, linear_schedule, x_T.shape, sampler="dpm-solver++", steps=10, noise=x_T,
                 clip_denoised=False, prediction=prediction)
    assert torch.allclose(got, reference, atol=1e-4)


def test_with_one_or_two_steps_it_is_ddim_on_the_same_timesteps(gaussian, linear_schedule, x_T):
    """Both steps are then first order, and DPM-Solver++(1) is DDIM; time-uniform is DDIM's "trailing" grid."""
    for steps in (1, 2, 10):
        assert dpm_solver_timesteps(linear_schedule, steps, "time-uniform") == ddim_timesteps(1000, steps, "trailing")[::-1]
    for steps in (1, 2):
        ours = sample(gaussian, linear_schedule, x_T.shape, sampler="dpm-solver++", steps=steps, spacing="time-uniform",
                      noise=x_T, clip_denoised=False)
        ddim = sample(gaussian, linear_schedule, x_T.shape, sampler="ddim", steps=steps, spacing="trailing", noise=x_T,
                      clip_denoised=False)
        assert torch.allclose(ours, ddim, atol=1e-6)


# -- SDE-DPM-Solver++(2M) ------------------------------------------------------------------------------------------
def test_sde_first_order_step_is_the_ddpm_posterior_step(linear_schedule):
    """With D = x̂_0 the SDE step from s to t has the mean and variance of q(x_t | x_s, x̂_0) of the schedule
    respaced to (t, s): the ancestral step of `ddpm --steps`."""
    s, t = 600, 300
    a_s, a_t = (linear_schedule.alphas_cumprod[i].item() for i in (s, t))
    sigma_s, sigma_t, alpha_t = math.sqrt(1 - a_s), math.sqrt(1 - a_t), math.sqrt(a_t)
    h = math.log(alpha_t / sigma_t) - math.log(math.sqrt(a_s) / sigma_s)
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    coef_x = sde_update(one, zero, sigma_s, sigma_t, alpha_t, h, zero).item()
    coef_x0 = sde_update(zero, one, sigma_s, sigma_t, alpha_t, h, zero).item()
    std = sde_update(zero, zero, sigma_s, sigma_t, alpha_t, h, one).item()
    respaced = respaced_schedule(linear_schedule, [t, s])
    mean_x0, _, _ = q_posterior(respaced, one, zero, torch.tensor([1]))
    mean_x, variance, _ = q_posterior(respaced, zero, one, torch.tensor([1]))
    assert coef_x0 == pytest.approx(mean_x0.item(), rel=1e-12)
    assert coef_x == pytest.approx(mean_x.item(), rel=1e-12)
    assert std**2 == pytest.approx(variance.item(), rel=1e-12)


# Standard deviation of 320,000 samples of N(0.1, 0.3²) (sampling error ±0.0004), linear T=1000, seed 0: the SDE's
# discretisation error shrinks with the steps; DDPM respaced to the same steps gives 0.212 at 20 and 0.253 at 50.
SDE_STDS = {("time-quadratic", 20): 0.3252, ("time-quadratic", 200): 0.3003, ("logSNR", 20): 0.3084,
            ("logSNR", 200): 0.3004}


@pytest.mark.parametrize("spacing,steps", sorted(SDE_STDS))
def test_sde_converges_to_gaussian_data_whatever_x_T(gaussian, linear_schedule, spacing, steps):
    """The SDE forgets x_T: from x_T = 0 too it ends near N(m, s²), within 0.01 of s at 20 NFE on the logSNR grid
    (0.025 on the default grid: a stochastic step at large h adds noise the ODE would not), 0.001 at 200."""
    for noise in (None, torch.zeros(20_000, 1, 4, 4)):
        x = sample(gaussian, linear_schedule, (20_000, 1, 4, 4), sampler="sde-dpm-solver++", steps=steps,
                   spacing=spacing, noise=noise, clip_denoised=False, generator=torch.Generator().manual_seed(0))
        assert x.mean().item() == pytest.approx(gaussian.m, abs=0.002)
        assert x.std().item() == pytest.approx(SDE_STDS[spacing, steps], abs=0.002)
    ddpm = sample(gaussian, linear_schedule, (20_000, 1, 4, 4), sampler="ddpm", steps=steps, clip_denoised=False,
                  generator=torch.Generator().manual_seed(0))
    assert abs(x.std().item() - gaussian.s) < abs(ddpm.std().item() - gaussian.s)


def test_sde_is_a_function_of_x_T_and_the_seed(gaussian, linear_schedule, x_T):
    def run(seed):
        return sample(gaussian, linear_schedule, x_T.shape, sampler="sde-dpm-solver++", steps=10, noise=x_T,
                      generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(1), run(1))
    assert (run(1) - run(2)).abs().mean().item() > 0.05


@pytest.mark.parametrize("spacing", SPACINGS)
def test_sde_matches_diffusers_sde_dpm_solver_on_the_same_noise(gaussian, linear_schedule, x_T, spacing):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is the optional [peers] extra: pip install -e .[peers]")
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=linear_schedule.betas.numpy(), algorithm_type="sde-dpmsolver++",
        solver_order=2, solver_type="midpoint", prediction_type="epsilon", lower_order_final=True,
        final_sigmas_type="zero")
    steps = 10
    scheduler.set_timesteps(timesteps=dpm_solver_timesteps(linear_schedule, steps, spacing))
    generator = torch.Generator().manual_seed(3)
    noises = [randn(x_T.shape, generator, "cpu") for _ in range(steps - 1)] + [torch.zeros_like(x_T)]
    x = x_T.clone()
    for t, noise in zip(scheduler.timesteps, noises):
        x = scheduler.step(gaussian(x, t.repeat(len(x))), t, x, variance_noise=noise).prev_sample
    ours = sample(gaussian, linear_schedule, x_T.shape, sampler="sde-dpm-solver++", steps=steps, spacing=spacing,
                  noise=x_T, clip_denoised=False, generator=torch.Generator().manual_seed(3))
    assert (ours - x).abs().max().item() < 1e-5
