"""What every baseline shares: the interface, image shapes at every supported size, determinism, spec round trips."""


import pytest
import torch
from baseline_driver import adam_per_group, run_iteration, train

from ddpmlab.methods import BASELINES, DCGAN, VAE, VAEGAN, BaselineNet

SMALL = {"base_channels": 8}


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("size,channels", [(16, 3), (28, 1), (32, 3)])
def test_generate_gives_images_of_the_right_shape_and_range(name, size, channels):
    torch.manual_seed(0)
    net = BASELINES[name](channels=channels, image_size=size, **SMALL).eval()
    images = net.generate(5, torch.Generator().manual_seed(1))
    assert images.shape == (5, channels, size, size) and images.dtype == torch.float32
    assert images.abs().max() <= 1.0 and images.std() > 0
    x0 = torch.rand(4, channels, size, size) * 2 - 1
    net.train()
    phases = list(net.training_phases(x0, torch.Generator().manual_seed(2)))
    assert all(p.loss.shape == () and torch.isfinite(p.loss) for p in phases)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_parameter_groups_cover_every_parameter_once_and_match_the_interface(name):
    net = BASELINES[name](channels=1, image_size=16, **SMALL)
    assert isinstance(net, BaselineNet)
    groups = net.parameter_groups()
    expected = {"vae": {"model"}, "dcgan": {"generator", "discriminator"}, "vaegan": {"generator", "discriminator"}}
    assert set(groups) == expected[name]
    grouped = [id(p) for params in groups.values() for p in params]
    assert sorted(grouped) == sorted(id(p) for p in net.parameters())
    phases = [p.group for p in net.training_phases(torch.zeros(2, 1, 16, 16), torch.Generator().manual_seed(0))]
    assert phases == (["model"] if name == "vae" else ["discriminator", "generator"])


@pytest.mark.parametrize("name,log_names", [
    ("vae", {"loss", "recon", "kl"}),
    ("dcgan", {"loss_d", "loss_g", "d_real", "d_fake"}),
    ("vaegan", {"loss", "recon", "kl", "loss_g", "loss_d", "d_real", "d_fake", "d_recon"}),
])
def test_logs_are_detached_scalars_with_the_documented_names(name, log_names):
    net = BASELINES[name](channels=3, image_size=16, **SMALL)
    logs = {}
    for phase in net.training_phases(torch.zeros(2, 3, 16, 16), torch.Generator().manual_seed(0)):
        assert all(v.shape == () and not v.requires_grad for v in phase.logs.values())
        logs.update(phase.logs)
    assert set(logs) == log_names and set(net.LOGS) == log_names  # LOGS: the columns metrics.csv gets


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_same_seed_gives_the_same_losses_and_images(name, shapes_batch):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = BASELINES[name](channels=3, image_size=16, **SMALL)
        logs = train(net, shapes_batch, steps=3, seed=7)
        images = net.eval().generate(4, torch.Generator().manual_seed(3))
        runs.append((logs, images))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])
    # and the generator, not the global RNG, decides the latents
    torch.manual_seed(123)
    assert torch.equal(net.generate(4, torch.Generator().manual_seed(3)), runs[1][1])
    assert not torch.equal(net.generate(4, torch.Generator().manual_seed(4)), runs[1][1])


@pytest.mark.parametrize("cls,options", [(VAE, {"latent_dim": 16, "kl_weight": 0.5, "decoder_std": 0.2}),
                                         (DCGAN, {"latent_dim": 20}),
                                         (VAEGAN, {"latent_dim": 12, "adversarial_weight": 0.3,
                                                   "reconstruction": "features"})])
def test_from_spec_rebuilds_a_module_that_loads_the_weights_and_generates_the_same(cls, options, shapes_batch):
    torch.manual_seed(0)
    net = cls(channels=3, image_size=16, base_channels=8, **options)
    train(net, shapes_batch, steps=2)  # moves the batch-norm running statistics away from their initial values
    clone = cls.from_spec(net.spec)
    assert clone.spec == net.spec
    clone.load_state_dict(net.state_dict())
    net.eval(), clone.eval()
    images = net.generate(4, torch.Generator().manual_seed(5))
    assert torch.equal(clone.generate(4, torch.Generator().manual_seed(5)), images)


def test_driver_steps_only_the_phase_group():
    torch.manual_seed(0)
    net = DCGAN(channels=1, image_size=16, **SMALL)
    optimizers = adam_per_group(net)
    before = {k: [p.detach().clone() for p in v] for k, v in net.parameter_groups().items()}
    run_iteration(net, torch.zeros(4, 1, 16, 16), torch.Generator().manual_seed(0), optimizers, frozen=("generator",))
    after = net.parameter_groups()
    assert all(torch.equal(a, b) for a, b in zip(before["generator"], after["generator"]))
    assert not all(torch.equal(a, b) for a, b in zip(before["discriminator"], after["discriminator"]))


@pytest.mark.parametrize("cls", [DCGAN, VAEGAN])
def test_generator_phase_uses_the_discriminator_after_its_update(cls, shapes_batch):
    """The PyTorch DCGAN example's order: D steps first, then G's loss is computed with the new D."""
    losses_g = {}
    for d_lr in (0.0, cls.DEFAULT_LR):
        torch.manual_seed(0)
        net = cls(channels=3, image_size=16, latent_dim=16, base_channels=16).train()
        optimizers = adam_per_group(net)
        for group in optimizers["discriminator"].param_groups:
            group["lr"] = d_lr
        phases = net.training_phases(shapes_batch, torch.Generator().manual_seed(0))
        phase_d = next(phases)
        assert phase_d.group == "discriminator"
        d_before = [p.detach().clone() for p in net.discriminator.parameters()]
        optimizers["discriminator"].zero_grad(set_to_none=True)
        phase_d.loss.backward()
        optimizers["discriminator"].step()
        phase_g = next(phases)
        assert phase_g.group == "generator"
        changed = any(not torch.equal(a, b) for a, b in zip(d_before, net.discriminator.parameters()))
        assert changed == (d_lr > 0)
        losses_g[d_lr] = phase_g.logs["loss_g"].item()
        with pytest.raises(StopIteration):
            next(phases)
    # the same fake images, judged by the stepped discriminator, give a different generator loss
    assert losses_g[0.0] != pytest.approx(losses_g[cls.DEFAULT_LR], rel=1e-4)
