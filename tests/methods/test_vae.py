import math

import pytest
import torch
from baseline_driver import train
from torch.distributions import Normal, kl_divergence

from ddpmlab import UserError
from ddpmlab.methods import VAE
from ddpmlab.methods.vae import gaussian_kl, gaussian_nll, reparameterize


def test_gaussian_kl_is_zero_at_the_prior_and_matches_torch_distributions():
    assert torch.equal(gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3))
    # one dim with μ = 1, σ = 1: ½ μ² = 0.5; one with μ = 0, σ² = e: ½ (e − 1 − 1)
    assert gaussian_kl(torch.tensor([[1.0]]), torch.tensor([[0.0]])).item() == pytest.approx(0.5)
    assert gaussian_kl(torch.tensor([[0.0]]), torch.tensor([[1.0]])).item() == pytest.approx(0.5 * (math.e - 2))
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(dim=1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


def test_gaussian_kl_matches_a_monte_carlo_estimate():
    generator = torch.Generator().manual_seed(0)
    mu, logvar = torch.tensor([[0.7, -0.3]], dtype=torch.float64), torch.tensor([[-0.5, 0.4]], dtype=torch.float64)
    z = reparameterize(mu, logvar, torch.randn(200_000, 2, generator=generator, dtype=torch.float64))
    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)
    estimate = (q.log_prob(z) - p.log_prob(z)).sum(dim=1).mean()
    assert gaussian_kl(mu, logvar).item() == pytest.approx(estimate.item(), abs=0.01)


def test_gaussian_nll_is_the_negative_log_density_summed_over_pixels():
    torch.manual_seed(0)
    x, mean = torch.rand(3, 2, 4, 4, dtype=torch.float64) * 2 - 1, torch.rand(3, 2, 4, 4, dtype=torch.float64) * 2 - 1
    expected = -Normal(mean, 0.1).log_prob(x).flatten(1).sum(dim=1)
    torch.testing.assert_close(gaussian_nll(x, mean, 0.1), expected)
    # at x = mean only the normalising constant is left: ½ D log(2πσ²)
    assert gaussian_nll(x, x, 0.1)[0].item() == pytest.approx(0.5 * 32 * math.log(2 * math.pi * 0.01))


def test_loss_is_recon_plus_weighted_kl():
    torch.manual_seed(0)
    net = VAE(channels=3, image_size=16, latent_dim=8, base_channels=8, kl_weight=0.25)
    logs = next(net.training_phases(torch.rand(4, 3, 16, 16) * 2 - 1, torch.Generator().manual_seed(0))).logs
    assert logs["kl"] > 0
    assert logs["loss"].item() == pytest.approx(logs["recon"].item() + 0.25 * logs["kl"].item())


def test_negative_elbo_decreases_on_a_fixed_batch(shapes_batch):
    torch.manual_seed(0)
    net = VAE(channels=3, image_size=16, latent_dim=16, base_channels=16)
    logs = train(net, shapes_batch, steps=30)
    losses = [step["loss"] for step in logs]
    assert all(math.isfinite(loss) for loss in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"VAE -ELBO per image: first 5 steps {first:.1f}, last 5 {last:.1f}; recon {logs[0]['recon']:.1f} -> "
          f"{logs[-1]['recon']:.1f}, kl {logs[0]['kl']:.2f} -> {logs[-1]['kl']:.2f}")
    assert last < first - 0.3 * abs(first)  # the reconstruction term dominates and falls fast
    reconstruction = net.eval().reconstruct(shapes_batch)
    assert reconstruction.shape == shapes_batch.shape and reconstruction.abs().max() <= 1


def test_bad_decoder_std_is_a_user_error():
    with pytest.raises(UserError, match="decoder_std"):
        VAE(decoder_std=0.0)
