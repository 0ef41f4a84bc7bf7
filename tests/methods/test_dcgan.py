import math

import pytest
import torch
from baseline_driver import train

from ddpmlab.methods import DCGAN
from ddpmlab.methods.dcgan import discriminator_loss, generator_loss


def small_dcgan():
    torch.manual_seed(0)
    return DCGAN(channels=3, image_size=16, latent_dim=16, base_channels=16)


def test_losses_follow_their_formulas():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    d = torch.sigmoid
    expected_d = -(d(real).log().mean() + (1 - d(fake)).log().mean())
    assert discriminator_loss(real, fake).item() == pytest.approx(expected_d.item(), rel=1e-6)
    assert generator_loss(fake).item() == pytest.approx(-d(fake).log().mean().item(), rel=1e-6)
    # an undecided discriminator (D = ½ everywhere) costs 2 log 2 and the generator log 2
    assert discriminator_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(2 * math.log(2))


def test_discriminator_loss_decreases_with_the_generator_frozen(shapes_batch):
    logs = train(small_dcgan(), shapes_batch, steps=30, frozen=("generator",))
    losses = [step["loss_d"] for step in logs]
    assert all(math.isfinite(loss) for loss in losses)
    print(f"DCGAN loss_d (G frozen): {losses[0]:.3f} -> {losses[-1]:.3f}; "
          f"d_real {logs[0]['d_real']:.2f} -> {logs[-1]['d_real']:.2f}, "
          f"d_fake {logs[0]['d_fake']:.2f} -> {logs[-1]['d_fake']:.2f}")
    assert losses[0] == pytest.approx(2 * math.log(2), abs=0.3)  # an untrained D is roughly undecided
    assert max(losses[-5:]) < 0.5 * losses[0]
    assert logs[-1]["d_real"] > 0.7 and logs[-1]["d_fake"] < 0.3


def test_generator_loss_decreases_with_the_discriminator_frozen(shapes_batch):
    logs = train(small_dcgan(), shapes_batch, steps=30, frozen=("discriminator",))
    losses = [step["loss_g"] for step in logs]
    assert all(math.isfinite(loss) for loss in losses)
    print(f"DCGAN loss_g (D frozen): {losses[0]:.3f} -> {losses[-1]:.3f}; "
          f"d_fake (before each D phase) {logs[0]['d_fake']:.2f} -> {logs[-1]['d_fake']:.2f}")
    assert max(losses[-5:]) < 0.6 * losses[0]
    assert logs[-1]["d_fake"] > logs[0]["d_fake"] + 0.1  # the fixed D is fooled more often
