"""The bound of Ho et al. (2020) Eq. 5 against 8-bit Gaussian data N(m, s²) and its exact noise predictor."""

import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy.stats import norm

from ddpmlab.diffusion import NoiseSchedule, gather, predict_x0_from_eps, v_from_x0_eps
from ddpmlab.diffusion.nll import (bound_terms_bits_per_dim, discretized_gaussian_log_likelihood, nll_bits_per_dim,
                                   normal_kl, prior_bpd, stratified_timesteps)
from ddpmlab.errors import UserError
from ddpmlab.images import uint8_to_model

M, S = 0.1, 0.3
SHAPE = (1, 8, 8)


def exact_eps(schedule, m=M, s=S):
    """ε*(x_t, t) = √(1−ᾱ_t) / (ᾱ_t s² + 1 − ᾱ_t) · (x_t − √ᾱ_t m): E[ε | x_t] for x_0 ~ N(m, s²)."""

    def model(xt, t, labels=None):
        a = gather(schedule.alphas_cumprod, t, xt)
        return (1 - a).sqrt() / (a * s**2 + 1 - a) * (xt - a.sqrt() * m)

    return model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the tensors here are tiny: on a busy machine, intra-op threads only spin (exp, ndtr ~50× slower with 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def schedule():
    # Ho et al.'s linear schedule compressed to T = 200 (β scaled by 1000/200), so ᾱ_T ≈ 3e-5
    return NoiseSchedule.linear(200, 5e-4, 0.1)


@pytest.fixture(scope="module")
def images():
    """400 uint8 images of 1×8×8 pixels, each drawn from N(m, s²), quantised to the 8-bit grid and clipped."""
    g = torch.Generator().manual_seed(0)
    x = M + S * torch.randn((400, *SHAPE), generator=g, dtype=torch.float64)
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def seeded(seed=1):
    return torch.Generator().manual_seed(seed)


def per_image_bits(nats, images):
    return nats.reshape(len(images), -1).sum(1) / (np.prod(SHAPE) * math.log(2))


def normal_mass(lower, upper, mean, scale):
    """P(lower < X < upper) for X ~ N(mean, scale²), from whichever tail keeps the difference accurate."""
    a, b = (lower - mean) / scale, (upper - mean) / scale
    return np.where(a > 0, norm.sf(a) - norm.sf(b), norm.cdf(b) - norm.cdf(a))


def true_nll_bits(images, m=M, s=S):
    """Per image −log P(x_0) of the quantised Gaussian in bits/dim: its mass in each pixel's bin, edges to ±∞."""
    k = images.numpy().astype(np.float64)
    x = k / 127.5 - 1
    lower = np.where(k == 0, -np.inf, x - 1 / 255)
    upper = np.where(k == 255, np.inf, x + 1 / 255)
    return per_image_bits(-np.log(normal_mass(lower, upper, m, s)), images)


def expected_bound_bits(betas, images, variance, m=M, s=S, model_s=S):
    """E_q of Eq. 5 per image, in closed form, from the betas alone (numpy, float64, nothing from ddpmlab).

    With the exact predictor of N(m, model_s²), x̂_0(x_t) = A_t x_t + B_t is affine in x_t, so x_0 − x̂_0 is
    Gaussian given x_0 and every KL term has a closed-form expectation; the decoder term is integrated by
    Gauss–Hermite quadrature over x_1 with scipy's normal CDF.
    """
    betas = np.asarray(betas, dtype=np.float64)
    abar = np.cumprod(1 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    x0 = images.numpy().astype(np.float64) / 127.5 - 1
    # x̂_0 = E[x_0 | x_t] under N(m, model_s²): A = √ᾱ s² / (ᾱ s² + 1 − ᾱ), B = (1 − ᾱ) m / (ᾱ s² + 1 − ᾱ)
    denominator = abar * model_s**2 + 1 - abar
    A, B = np.sqrt(abar) * model_s**2 / denominator, (1 - abar) * m / denominator
    total = np.zeros(x0.shape)
    for t in range(1, len(betas)):
        posterior_var = betas[t] * (1 - abar_prev[t]) / (1 - abar[t])
        model_var = posterior_var if variance == "posterior" else betas[t]
        coef_x0 = betas[t] * np.sqrt(abar_prev[t]) / (1 - abar[t])
        # the two means differ by coef_x0 · (x_0 − x̂_0); x_0 − x̂_0 ~ N((1 − A√ᾱ) x_0 − B, A² (1 − ᾱ))
        error_mean = (1 - A[t] * np.sqrt(abar[t])) * x0 - B[t]
        mean_square = coef_x0**2 * (error_mean**2 + A[t] ** 2 * (1 - abar[t]))
        total += 0.5 * (np.log(model_var / posterior_var) + posterior_var / model_var - 1 + mean_square / model_var)
    scale = np.sqrt(betas[1] * (1 - abar[0]) / (1 - abar[1]))  # σ_1 = √β̃ of the second step, Ho et al.'s clip
    nodes, weights = hermegauss(30)
    lower = np.where(x0 <= -1, -np.inf, x0 - 1 / 255)
    upper = np.where(x0 >= 1, np.inf, x0 + 1 / 255)
    for z, w in zip(nodes, weights / weights.sum()):
        x1 = np.sqrt(abar[0]) * x0 + np.sqrt(1 - abar[0]) * z
        decoder_mean = A[0] * x1 + B[0]  # μ̃ at the first step is x̂_0 itself
        total += -w * np.log(normal_mass(lower, upper, decoder_mean, scale))
    total += 0.5 * (abar[-1] * x0**2 + (1 - abar[-1]) - 1 - np.log(1 - abar[-1]))
    return per_image_bits(total, images)


def test_normal_kl_matches_the_scalar_closed_form():
    mean1, std1, mean2, std2 = 1.0, 2.0, -0.5, 0.5
    expected = math.log(std2 / std1) + (std1**2 + (mean1 - mean2) ** 2) / (2 * std2**2) - 0.5
    arguments = (mean1, 2 * math.log(std1), mean2, 2 * math.log(std2))
    kl = normal_kl(*(torch.tensor(value, dtype=torch.float64) for value in arguments))
    assert kl.item() == pytest.approx(expected, rel=1e-12)
    same = normal_kl(torch.tensor([0.3, -2.0]), torch.tensor([-1.0, 0.5]), torch.tensor([0.3, -2.0]),
                     torch.tensor([-1.0, 0.5]))
    assert same.abs().max().item() < 1e-15


@pytest.mark.parametrize("mean,scale", [(0.3, 0.05), (-0.98, 0.01), (1.5, 0.002), (0.0, 3.0)])
def test_discretized_likelihood_is_a_distribution_over_the_256_levels(mean, scale):
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    log_p = discretized_gaussian_log_likelihood(levels, torch.tensor(mean, dtype=torch.float64),
                                                torch.tensor(math.log(scale), dtype=torch.float64))
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    interior = levels[100].item()
    expected = norm.cdf((interior + 1 / 255 - mean) / scale) - norm.cdf((interior - 1 / 255 - mean) / scale)
    assert log_p[100].exp().item() == pytest.approx(max(expected, 1e-12), rel=1e-9)
    assert log_p[0].exp().item() == pytest.approx(max(norm.cdf((-1 + 1 / 255 - mean) / scale), 1e-12), rel=1e-9)


def test_prior_term_is_its_closed_form_and_vanishes_when_alpha_bar_T_is_zero(schedule):
    x0 = torch.tensor([[-1.0, 0.2], [0.5, 1.0]], dtype=torch.float64)
    short = NoiseSchedule.linear(10, 1e-4, 0.02)  # Ho et al.'s β range unscaled at T=10: ᾱ_T ≈ 0.9, far from the prior
    a = short.alphas_cumprod[-1].item()
    expected = 0.5 * (a * x0**2 + (1 - a) - 1 - math.log(1 - a)).sum(1) / (2 * math.log(2))
    assert torch.allclose(prior_bpd(short, x0), expected, rtol=1e-12)
    assert prior_bpd(schedule, x0).max().item() < 1e-4


@pytest.mark.parametrize("variance,max_gap", [("posterior", 1.4), ("beta", 0.2)])
def test_the_bound_lies_above_the_true_nll_of_the_quantised_gaussian(schedule, images, variance, max_gap):
    # measured (T=200, 400 images): true NLL 7.307 bits/dim; bound 8.502 with σ² = β̃ (gap 1.20: β̃ is the
    # reverse variance for a single x_0, far below the true one where 1 − ᾱ_t ≪ s²), 7.385 with σ² = β (gap 0.08)
    bound, bound_error = nll_bits_per_dim(exact_eps(schedule), schedule, images, variance=variance,
                                          generator=seeded())
    true = true_nll_bits(images)
    true_mean, true_error = true.mean(), true.std(ddof=1) / math.sqrt(len(true))
    assert bound_error < 0.03
    assert bound > true_mean - 3 * math.hypot(bound_error, true_error)
    assert bound - true_mean < max_gap


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_the_estimate_matches_the_closed_form_expectation_of_the_bound(schedule, images, variance):
    terms, prior = bound_terms_bits_per_dim(exact_eps(schedule), schedule, images, variance=variance,
                                            generator=seeded())
    assert terms.shape == (len(images), schedule.T) and prior.shape == (len(images),)
    estimate = (terms.sum(1) + prior).numpy()
    expected = expected_bound_bits(schedule.betas.numpy(), images, variance)
    difference = estimate - expected  # only the draws of x_t differ: compare image by image
    standard_error = difference.std(ddof=1) / math.sqrt(len(difference))
    assert standard_error < 0.02
    assert abs(difference.mean()) < 4 * standard_error
    mean, _ = nll_bits_per_dim(exact_eps(schedule), schedule, images, variance=variance, generator=seeded())
    assert mean == pytest.approx(estimate.mean(), rel=1e-12)


def test_a_wrong_model_gets_a_clearly_larger_bound(schedule, images):
    # measured: 8.50 for the exact predictor, 9.02 for that of N(m, (2s)²)
    right, _ = nll_bits_per_dim(exact_eps(schedule), schedule, images, generator=seeded())
    wrong, _ = nll_bits_per_dim(exact_eps(schedule, s=2 * S), schedule, images, generator=seeded())
    assert wrong - right > 0.3
    expected_wrong = expected_bound_bits(schedule.betas.numpy(), images, "posterior", model_s=2 * S).mean()
    assert wrong == pytest.approx(expected_wrong, abs=0.05)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_every_parameterisation_of_the_same_model_gives_the_same_bound(schedule, images, prediction):
    eps_model = exact_eps(schedule)

    def model(xt, t, labels=None):
        xt64 = xt.double()
        eps = eps_model(xt64, t)
        x0 = predict_x0_from_eps(schedule, xt64, t, eps)
        return x0 if prediction == "x0" else v_from_x0_eps(schedule, x0, t, eps)

    model.prediction = prediction
    reference = nll_bits_per_dim(eps_model, schedule, images[:50], generator=seeded())
    result = nll_bits_per_dim(model, schedule, images[:50], generator=seeded())
    assert result == pytest.approx(reference, rel=1e-6)


def test_float_images_on_the_grid_equal_uint8_ones_and_others_are_refused(schedule, images):
    model = exact_eps(schedule)
    reference = nll_bits_per_dim(model, schedule, images[:20], batch_size=7, generator=seeded())
    as_floats = nll_bits_per_dim(model, schedule, uint8_to_model(images[:20]), batch_size=7, generator=seeded())
    assert as_floats == pytest.approx(reference, rel=1e-12)
    with pytest.raises(UserError, match="8-bit grid"):
        nll_bits_per_dim(model, schedule, images[:20].float() / 255)
    with pytest.raises(UserError, match="8-bit grid"):
        nll_bits_per_dim(model, schedule, uint8_to_model(images[:20]) + 0.001)
    with pytest.raises(UserError, match="non-empty"):
        nll_bits_per_dim(model, schedule, images[:0])
    with pytest.raises(UserError, match="timesteps"):
        nll_bits_per_dim(model, schedule, images[:20], timesteps=1)
    with pytest.raises(ValueError, match="variance"):
        nll_bits_per_dim(model, schedule, images[:20], variance="learned")


def test_stratified_timesteps_cover_every_term_once_in_expectation():
    t_indices, weights = stratified_timesteps(200, 5, n=1000, generator=seeded())
    assert weights.tolist() == [1, 49, 50, 50, 50]
    assert (t_indices[:, 0] == 0).all()
    edges = [1, 50, 100, 150, 200]
    for k in range(4):
        column = t_indices[:, k + 1]
        assert edges[k] <= column.min() and column.max() < edges[k + 1]
        assert len(column.unique()) == edges[k + 1] - edges[k]
    full, ones = stratified_timesteps(7, None, n=3)
    assert full.tolist() == [list(range(7))] * 3 and ones.tolist() == [1.0] * 7


def test_fewer_timesteps_estimate_the_same_bound(schedule, images):
    # measured: 8.502 ± 0.020 with all 200 terms, 8.626 ± 0.095 with 50
    full, full_error = nll_bits_per_dim(exact_eps(schedule), schedule, images, generator=seeded())
    fast, fast_error = nll_bits_per_dim(exact_eps(schedule), schedule, images, timesteps=50, generator=seeded(2))
    assert fast_error > full_error
    assert abs(fast - full) < 4 * math.hypot(fast_error, full_error)


def test_a_module_is_evaluated_in_eval_mode_with_its_labels_and_restored(schedule, images):
    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))
            self.seen = []

        def forward(self, xt, t, labels=None):
            self.seen.append((self.training, labels.tolist()))
            return exact_eps(schedule)(xt, t) * self.scale

    model = Recorder().train()
    labels = torch.arange(10)
    first = nll_bits_per_dim(model, schedule, images[:10], labels=labels, batch_size=4, timesteps=3,
                             generator=seeded(), progress=False)
    assert model.training
    assert {training for training, _ in model.seen} == {False}
    assert [seen for _, seen in model.seen[::3]] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    second = nll_bits_per_dim(model, schedule, images[:10], labels=labels, batch_size=4, timesteps=3,
                              generator=seeded())
    assert first == second
