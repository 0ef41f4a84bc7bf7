import math

import pytest
import torch

from ddpmlab import UserError
from ddpmlab.diffusion import NoiseSchedule


def test_linear_schedule_matches_ho_et_al():
    s = NoiseSchedule.linear(1000)
    assert s.T == 1000 and s.betas.dtype == torch.float64
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert s.betas[499].item() == pytest.approx(1e-4 + 499 * (0.02 - 1e-4) / 999, rel=1e-12)
    expected = 1.0
    for i in range(10):
        expected *= 1 - (1e-4 + i * (0.02 - 1e-4) / 999)
    assert s.alphas_cumprod[9].item() == pytest.approx(expected, rel=1e-12)
    # Ho et al. report L_T ≈ 1e-5 bits/dim: ᾱ_T ≈ 4e-5 at T=1000.
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.04e-5, rel=0.01)


def test_cosine_schedule_matches_nichol_dhariwal_formula():
    T, s_ = 300, 0.008
    s = NoiseSchedule.cosine(T)

    def f(t):
        return math.cos(((t / T) + s_) / (1 + s_) * math.pi / 2) ** 2

    for t in (0, 1, 150, 298):
        beta = min(1 - f(t + 1) / f(t), 0.999)
        assert s.betas[t].item() == pytest.approx(beta, rel=1e-10)
        # ᾱ of paper timestep t+1 is f(t+1)/f(0) wherever no β was clipped
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert s.betas[-1].item() == pytest.approx(0.999)  # the last β is clipped to max_beta


def test_derived_buffers_and_posterior_coefficients():
    s = NoiseSchedule.linear(50, 1e-3, 0.2)
    a, ab, abp = s.alphas, s.alphas_cumprod, s.alphas_cumprod_prev
    assert abp[0].item() == 1.0 and torch.allclose(abp[1:], ab[:-1])
    assert torch.allclose(s.posterior_variance, s.betas * (1 - abp) / (1 - ab))
    assert s.posterior_variance[0].item() == 0.0
    assert s.posterior_log_variance_clipped[0].item() == pytest.approx(math.log(s.posterior_variance[1].item()))
    assert torch.allclose(s.posterior_log_variance_clipped[1:], s.posterior_variance[1:].log())
    assert torch.allclose(s.posterior_mean_coef1, s.betas * abp.sqrt() / (1 - ab))
    assert torch.allclose(s.posterior_mean_coef2, (1 - abp) * a.sqrt() / (1 - ab))


@pytest.mark.parametrize("T", [1, 300, 1000, 4000])
def test_any_T_from_1_to_4000(T):
    for s in (NoiseSchedule.linear(T), NoiseSchedule.cosine(T)):
        assert s.T == T and len(s.alphas_cumprod) == T
        assert torch.all(s.alphas_cumprod[1:] < s.alphas_cumprod[:-1])
        assert torch.isfinite(s.posterior_log_variance_clipped).all()


@pytest.mark.parametrize("betas", [[], [0.1, float("nan")], [0.0, 0.1], [0.5, 1.0], [-0.1], "abc"])
def test_from_betas_rejects_invalid(betas):
    with pytest.raises(UserError):
        NoiseSchedule.from_betas(betas)


@pytest.mark.parametrize("T", [0, 4001, -5])
def test_T_out_of_range_is_a_user_error(T):
    with pytest.raises(UserError, match="T="):
        NoiseSchedule.linear(T)


def test_from_betas_keeps_values():
    s = NoiseSchedule.from_betas([0.1, 0.2, 0.3])
    assert s.alphas_cumprod.tolist() == pytest.approx([0.9, 0.72, 0.504])


@pytest.mark.parametrize("T,start,end", [(1000, 1e-4, 0.02), (100, 1e-3, 0.2), (300, 1e-4 * 1000 / 300, 0.02 * 1000 / 300),
                                         (4000, 2.5e-5, 0.005)])
def test_linear_default_range_is_scaled_by_1000_over_T(T, start, end):
    """Nichol & Dhariwal's convention: Ho et al.'s 1e-4..0.02 at T=1000, × 1000/T elsewhere."""
    s = NoiseSchedule.linear(T)
    assert s.betas[0].item() == pytest.approx(start, rel=1e-12) and s.betas[-1].item() == pytest.approx(end, rel=1e-12)
    assert s.final_alpha_cumprod < 1e-3  # every T ends near pure noise


def test_linear_unscaled_range_at_small_T_leaves_the_image_in_x_T():
    # what the old fixed range did: ᾱ_T = 0.36 at T=100 and 0.048 at T=300
    assert NoiseSchedule.linear(100, 1e-4, 0.02).final_alpha_cumprod == pytest.approx(0.364, abs=1e-3)
    assert NoiseSchedule.linear(300, 1e-4, 0.02).final_alpha_cumprod == pytest.approx(0.0477, abs=1e-3)
    assert NoiseSchedule.linear(1000, 1e-4, 0.02).final_alpha_cumprod == pytest.approx(4.04e-5, rel=1e-2)


def test_linear_range_is_capped_below_one_at_tiny_T():
    s = NoiseSchedule.linear(10)
    assert s.betas[0].item() == pytest.approx(0.01) and s.betas[-1].item() == pytest.approx(0.999)
