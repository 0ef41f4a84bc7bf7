import math

import pytest
import torch

from ddpmlab.diffusion import (NoiseSchedule, diffusion_loss, min_snr_weight, predict_eps_from_v, predict_eps_from_x0,
                               predict_x0_from_eps, predict_x0_from_v, q_posterior, q_sample, v_from_x0_eps, x0_and_eps)


@pytest.fixture
def schedule():
    return NoiseSchedule.linear(1000)


def test_q_sample_moments(schedule):
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000,), 0.7, dtype=torch.float64)
    for t_index in (0, 100, 999):
        t = torch.full((x0.numel(),), t_index)
        xt = q_sample(schedule, x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
        a = schedule.alphas_cumprod[t_index].item()
        assert xt.mean().item() == pytest.approx(a**0.5 * 0.7, abs=4 * (1 - a) ** 0.5 / 450)
        assert xt.var().item() == pytest.approx(1 - a, rel=0.01)


def test_posterior_is_bayes_rule_for_gaussians(schedule):
    # q(x_{t-1}|x_0) = N(√ᾱ_{t-1} x0, 1-ᾱ_{t-1}), q(x_t|x_{t-1}) = N(√α_t x_{t-1}, β_t):
    # posterior precision = 1/(1-ᾱ_{t-1}) + α_t/β_t, mean = var·(√ᾱ_{t-1} x0/(1-ᾱ_{t-1}) + √α_t x_t/β_t)
    x0 = torch.tensor([0.3, -0.8], dtype=torch.float64)
    xt = torch.tensor([1.1, 0.2], dtype=torch.float64)
    for t_index in (1, 10, 500, 999):
        t = torch.full((2,), t_index)
        abp = schedule.alphas_cumprod[t_index - 1].item()
        alpha, beta = schedule.alphas[t_index].item(), schedule.betas[t_index].item()
        var = 1 / (1 / (1 - abp) + alpha / beta)
        mean_expected = var * (abp**0.5 * x0 / (1 - abp) + alpha**0.5 * xt / beta)
        mean, variance, log_variance = q_posterior(schedule, x0, xt, t)
        assert torch.allclose(mean, mean_expected, rtol=1e-10)
        assert variance.flatten()[0].item() == pytest.approx(var, rel=1e-10)
        assert log_variance.flatten()[0].item() == pytest.approx(math.log(var), rel=1e-10)


def test_posterior_at_first_step_returns_x0(schedule):
    x0, xt = torch.tensor([0.25]), torch.tensor([0.9])
    mean, var, _ = q_posterior(schedule, x0, xt, torch.tensor([0]))
    assert mean.item() == pytest.approx(0.25) and var.item() == 0.0


def test_parameterisations_round_trip(schedule):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(16, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(16, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (16,), generator=g)
    xt = q_sample(schedule, x0, t, eps)
    v = v_from_x0_eps(schedule, x0, t, eps)
    assert torch.allclose(predict_x0_from_eps(schedule, xt, t, eps), x0, atol=1e-8)
    assert torch.allclose(predict_eps_from_x0(schedule, xt, t, x0), eps, atol=1e-8)
    assert torch.allclose(predict_x0_from_v(schedule, xt, t, v), x0, atol=1e-10)
    assert torch.allclose(predict_eps_from_v(schedule, xt, t, v), eps, atol=1e-10)
    for prediction, output in (("eps", eps), ("x0", x0), ("v", v)):
        got_x0, got_eps = x0_and_eps(schedule, prediction, xt, t, output)
        assert torch.allclose(got_x0, x0, atol=1e-7) and torch.allclose(got_eps, eps, atol=1e-7)


def test_min_snr_weights():
    s = NoiseSchedule.linear(1000)
    t = torch.tensor([0, 500, 999])
    snr = s.snr(t)
    w = min_snr_weight(s, "eps", t, 5.0).double()
    assert torch.allclose(w, torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) / snr, rtol=1e-6)
    assert w[0].item() == pytest.approx(5.0 / snr[0].item(), rel=1e-6) and w[2].item() == pytest.approx(1.0)
    assert min_snr_weight(s, "x0", t, 5.0)[0].item() == pytest.approx(5.0)


def test_loss_is_zero_for_the_true_noise_and_known_for_zero_prediction():
    s = NoiseSchedule.linear(100)
    x0 = torch.randn(4096, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    # an oracle ε-network that inverts q_sample exactly (x0 known): loss 0
    oracle = lambda xt, t, labels=None: predict_eps_from_x0(s, xt, t, x0)  # noqa: E731
    assert diffusion_loss(oracle, s, x0, generator=torch.Generator().manual_seed(0)).item() < 1e-8
    # predicting 0 costs E‖ε‖² = 1 per dimension for eps, E‖x0‖² for x0
    zero = lambda xt, t, labels=None: torch.zeros_like(xt)  # noqa: E731
    assert diffusion_loss(zero, s, x0, generator=torch.Generator().manual_seed(0)).item() == pytest.approx(1.0, abs=0.03)
    assert diffusion_loss(zero, s, x0, prediction="x0",
                          generator=torch.Generator().manual_seed(0)).item() == pytest.approx(x0.pow(2).mean().item(), rel=1e-6)
