import math

import pytest
import torch
from baseline_driver import train

from ddpmlab import UserError
from ddpmlab.methods import VAEGAN
from ddpmlab.methods.vaegan import adversarial_loss, discriminator_loss, feature_nll


def small_vaegan(**options):
    torch.manual_seed(0)
    return VAEGAN(channels=3, image_size=16, latent_dim=16, base_channels=16, **options)


def test_losses_follow_larsen_et_al_eq_8():
    d = torch.sigmoid
    real, recon, prior = torch.tensor([1.5, 0.2]), torch.tensor([-0.5, 0.3]), torch.tensor([-2.0, 1.0])
    expected = -(d(real).log().mean() + (1 - d(recon)).log().mean() + (1 - d(prior)).log().mean())
    assert discriminator_loss(real, recon, prior).item() == pytest.approx(expected.item(), rel=1e-6)
    expected_g = -(d(recon).log().mean() + d(prior).log().mean())
    assert adversarial_loss(recon, prior).item() == pytest.approx(expected_g.item(), rel=1e-6)
    assert discriminator_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3)).item() == pytest.approx(3 * math.log(2))
    assert feature_nll(torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)).tolist() == [6.0, 6.0]


@pytest.mark.parametrize("reconstruction,dims", [("pixel", 3 * 16 * 16), ("features", 32 * 4 * 4)])
def test_generator_loss_is_the_per_dimension_elbo_plus_the_weighted_adversarial_loss(reconstruction, dims):
    net = small_vaegan(adversarial_weight=0.3, reconstruction=reconstruction)
    logs = {}
    for phase in net.training_phases(torch.rand(4, 3, 16, 16) * 2 - 1, torch.Generator().manual_seed(0)):
        logs.update(phase.logs)
    expected = (logs["recon"] + logs["kl"]) / dims + 0.3 * logs["loss_g"]
    assert logs["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_discriminator_loss_decreases_with_the_generator_frozen(shapes_batch):
    logs = train(small_vaegan(), shapes_batch, steps=30, frozen=("generator",))
    losses = [step["loss_d"] for step in logs]
    assert all(math.isfinite(loss) for loss in losses)
    print(f"VAE-GAN loss_d (G frozen): {losses[0]:.3f} -> {losses[-1]:.3f}; d_real {logs[-1]['d_real']:.2f}, "
          f"d_recon {logs[-1]['d_recon']:.2f}, d_fake {logs[-1]['d_fake']:.2f}")
    assert losses[0] == pytest.approx(3 * math.log(2), abs=0.3)
    assert max(losses[-5:]) < 0.7 * losses[0]


@pytest.mark.parametrize("reconstruction", ["pixel", "features"])
def test_generator_loss_decreases_with_the_discriminator_frozen(reconstruction, shapes_batch):
    logs = train(small_vaegan(reconstruction=reconstruction), shapes_batch, steps=30, frozen=("discriminator",))
    losses = [step["loss"] for step in logs]
    assert all(math.isfinite(loss) for loss in losses)
    print(f"VAE-GAN {reconstruction} generator loss (D frozen): {losses[0]:.3f} -> {losses[-1]:.3f}; "
          f"recon {logs[0]['recon']:.1f} -> {logs[-1]['recon']:.1f}, "
          f"loss_g {logs[0]['loss_g']:.2f} -> {logs[-1]['loss_g']:.2f}")
    assert max(losses[-5:]) < 0.9 * losses[0]
    assert logs[-1]["recon"] < 0.9 * logs[0]["recon"]


def test_reconstruct_gives_images_in_range(shapes_batch):
    reconstruction = small_vaegan().eval().reconstruct(shapes_batch)
    assert reconstruction.shape == shapes_batch.shape and reconstruction.abs().max() <= 1


def test_unknown_reconstruction_is_a_user_error():
    with pytest.raises(UserError, match="pixel"):
        VAEGAN(reconstruction="perceptual")
