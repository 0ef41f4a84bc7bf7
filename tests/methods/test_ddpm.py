"""The diffusion method behind the methods' interface, the registry that builds every method from a config, and
the one sampling dispatch."""

from dataclasses import asdict, fields

import pytest
import torch

from ddpmlab.config import METHODS, load_config
from ddpmlab.diffusion import diffusion_loss
from ddpmlab.errors import UserError
from ddpmlab.methods import (BASELINES, METHOD_CLASSES, MethodNet, build_method, optimizer_settings, rebuild_method,
                             sample_images)
from ddpmlab.samplers import SamplingSettings, sample


def tiny_ddpm(*overrides):
    torch.manual_seed(0)
    config = load_config("tiny", list(overrides))
    return build_method(config, 3, 16), config


def test_the_ddpm_phase_is_exactly_the_diffusion_loss(shapes_batch):
    net, config = tiny_ddpm("diffusion.prediction=v", "diffusion.loss_weighting=min-snr")
    phases = list(net.training_phases(shapes_batch, torch.Generator().manual_seed(3)))
    assert [p.group for p in phases] == ["model"] and set(phases[0].logs) == set(net.LOGS) == {"loss"}
    d = config.diffusion
    expected = diffusion_loss(net.backbone, net.schedule, shapes_batch, None, "v", "min-snr", d.min_snr_gamma,
                              torch.Generator().manual_seed(3))
    assert torch.equal(phases[0].loss, expected) and phases[0].loss.requires_grad
    assert torch.equal(net.validation_loss(shapes_batch, torch.Generator().manual_seed(3)), expected)


def test_the_ddpm_network_is_its_backbone_in_checkpoints_and_calls():
    net, _ = tiny_ddpm()
    assert isinstance(net, MethodNet) and not net.SINGLE_PASS
    assert list(net.state_dict()) == list(net.backbone.state_dict())  # UNet keys, no "backbone." prefix
    assert [id(p) for p in net.parameter_groups()["model"]] == [id(p) for p in net.backbone.parameters()]
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 50])
    assert torch.equal(net.eval()(x, t), net.backbone(x, t))
    clone = rebuild_method("ddpm", asdict(net.spec), load_config("tiny"))
    clone.load_state_dict(net.state_dict())
    assert clone.image_shape == (3, 16, 16) and clone.schedule.T == 100
    assert torch.equal(clone.eval()(x, t), net(x, t))


def test_ddpm_generate_is_the_sampler_and_sample_images_restores_the_mode():
    net, _ = tiny_ddpm()
    net.train()
    sampling = SamplingSettings("ddim", 5, eta=0.5)
    images = sample_images(net, 3, torch.Generator().manual_seed(1), sampling)
    assert net.training and images.shape == (3, 3, 16, 16) and images.abs().max() <= 1
    net.eval()
    expected = sample(net.backbone, net.schedule, (3, 3, 16, 16), sampler="ddim", steps=5, eta=0.5,
                      generator=torch.Generator().manual_seed(1), prediction="eps")
    assert torch.equal(images, expected)


@pytest.mark.parametrize("method", sorted(BASELINES))
def test_baselines_are_built_from_their_config_section(method):
    torch.manual_seed(0)
    config = load_config("tiny", [f"method={method}", f"{method}.latent_dim=7", f"{method}.base_channels=8",
                                  f"{method}.lr=3e-4", f"{method}.beta1=0.7"])
    net = build_method(config, 3, 16)
    assert type(net) is BASELINES[method] and net.SINGLE_PASS and net.image_shape == (3, 16, 16)
    assert (net.spec["latent_dim"], net.spec["base_channels"]) == (7, 8)
    assert optimizer_settings(config) == (3e-4, (0.7, 0.999))
    clone = rebuild_method(method, net.spec, config)
    assert clone.spec == net.spec
    with pytest.raises(UserError, match=f"method={method}"):
        build_method(config, 3, 16, backbone=torch.nn.Identity())
    with pytest.raises(ValueError, match="one pass"):
        sample_images(net, 2, None, SamplingSettings())


@pytest.mark.parametrize("method", sorted(BASELINES))
def test_config_sections_are_the_one_declaration_of_the_networks(method):
    """A section holds the network's arguments (channels and image size come from the data) plus lr and beta1; a
    module built without one takes the section's defaults, and its stored spec is exactly those arguments."""
    section = getattr(load_config("tiny"), method)
    net = BASELINES[method](3, 16)
    assert set(net.spec) == {f.name for f in fields(section)} - {"lr", "beta1"} | {"channels", "image_size"}
    assert all(net.spec[f.name] == getattr(section, f.name) for f in fields(section) if f.name not in ("lr", "beta1"))
    assert (section.lr, section.beta1) == (BASELINES[method].DEFAULT_LR, BASELINES[method].DEFAULT_BETAS[0])
    with pytest.raises(UserError, match=f"{method}.latent_dim"):
        BASELINES[method](3, 16, latent_dim=0)


def test_the_registry_knows_every_configurable_method():
    assert tuple(METHOD_CLASSES) == METHODS == ("ddpm", "vae", "dcgan", "vaegan", "ldm")
    assert optimizer_settings(load_config("tiny")) == (1e-3, (0.9, 0.999))  # a DDPM: train.lr, AdamW's betas
    with pytest.raises(UserError, match="unknown method 'gan'"):
        rebuild_method("gan", {}, load_config("tiny"))
