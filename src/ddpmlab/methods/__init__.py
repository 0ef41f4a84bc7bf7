"""Generative methods behind one interface (methods.base): DDPM and the baselines VAE, DCGAN and VAE-GAN.

The registry below is the one place that maps `config.method` to a network, its optimizer settings and its
rebuilding from a checkpoint; `sample_images` is the one place that draws images from any of them.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from ddpmlab.config import METHODS, Config
from ddpmlab.errors import UserError
from ddpmlab.methods.base import BaselineNet, MethodNet, Phase
from ddpmlab.methods.dcgan import DCGAN
from ddpmlab.methods.ddpm import DDPM, build_schedule, build_unet
from ddpmlab.methods.vae import VAE, gaussian_kl, gaussian_nll
from ddpmlab.methods.vaegan import VAEGAN
from ddpmlab.rng import BatchSlice
from ddpmlab.samplers import SamplingSettings

BASELINES = {"vae": VAE, "dcgan": DCGAN, "vaegan": VAEGAN}  # name -> class; each has from_spec, DEFAULT_LR, DEFAULT_BETAS
METHOD_CLASSES: dict[str, type] = {"ddpm": DDPM, **BASELINES}  # in config.METHODS order


def build_method(config: Config, channels: int, image_size: int, num_classes: int | None = None,
                 backbone: nn.Module | None = None) -> nn.Module:
    """The untrained network of `config.method` for channels × image_size² images (on the CPU, drawing its
    initial weights from torch's global RNG). A DDPM wraps `backbone` (default: the config's UNet, conditional on
    num_classes when model.conditional); a baseline is built from its config section."""
    if config.method == "ddpm":
        backbone = backbone or build_unet(config.model, channels, image_size, num_classes, config.diffusion.prediction)
        return DDPM(backbone, build_schedule(config.diffusion), config.diffusion, (channels, image_size, image_size))
    if backbone is not None:
        raise UserError(f"a backbone network trains by diffusion only; this config has method={config.method}")
    return BASELINES[config.method](channels, image_size, getattr(config, config.method))


def _known(method: str) -> str:
    if method not in METHOD_CLASSES:
        raise UserError(f"unknown method {method!r} in checkpoint; methods: {', '.join(METHODS)}")
    return method


def rebuild_method(method: str, spec: dict, config: Config) -> nn.Module:
    """An untrained network identical to the one a checkpoint of `method` holds, from its stored spec and config."""
    if _known(method) == "ddpm":
        return DDPM.from_spec(spec, config.diffusion)
    return BASELINES[method].from_spec(spec)


def optimizer_settings(config: Config) -> tuple[float, tuple[float, float]]:
    """(learning rate, Adam betas) of `config.method`: train.lr for a DDPM, the section's lr and beta1 for a baseline
    (β2 as the method recommends)."""
    if config.method == "ddpm":
        return config.train.lr, DDPM.DEFAULT_BETAS
    section = getattr(config, config.method)
    return section.lr, (section.beta1, BASELINES[config.method].DEFAULT_BETAS[1])


def samples_in_one_pass(method: str) -> bool:
    """True for the methods that draw an image in one network pass (VAE, DCGAN, VAE-GAN): no sampler, steps or labels."""
    return METHOD_CLASSES[_known(method)].SINGLE_PASS


def sample_images(net: nn.Module, n: int, generator: torch.Generator | None,
                  sampling: SamplingSettings | None = None, labels: torch.Tensor | None = None,
                  noise: torch.Tensor | None = None, rows: BatchSlice | None = None) -> torch.Tensor:
    """n images from any method's network: N×C×H×W float32 in [-1, 1] on the network's device.

    A diffusion network runs `sampling` (default DDIM over all T steps) with optional class `labels`; a single-pass
    network (VAE, GAN) decodes n latents and takes neither. `noise` fixes a diffusion model's x_T. The network is in eval mode while sampling (batch norm
    reads its running statistics and updates nothing) and restored after. With `rows` (a
    ddpmlab.rng.BatchSlice), the n images are that slice of a batch split over processes: labels and noise are
    the slice's, and every random draw is the slice's share of the whole batch's, so that the processes together
    draw the images one process would.
    """
    was_training = net.training
    net.eval()
    try:
        if net.SINGLE_PASS:
            if sampling is not None or labels is not None or noise is not None:
                raise ValueError(f"{type(net).__name__} samples in one pass: no sampling settings or labels")
            return net.generate(n, generator, rows=rows)
        return net.generate(n, generator, sampling, labels, noise, rows=rows)
    finally:
        net.train(was_training)


def run_sampling(net: nn.Module, sample_cfg) -> SamplingSettings | None:
    """The sampling a run's `sample.*` settings describe for `net`: None for a single-pass network (they do not
    apply to it)."""
    return None if net.SINGLE_PASS else SamplingSettings.of_run(sample_cfg, net.schedule.T)


def stored_spec(net: nn.Module) -> dict | None:
    """The dict that rebuilds `net` with rebuild_method (a checkpoint's model_spec); None for a custom backbone."""
    spec = getattr(net, "spec", None)
    return spec if spec is None or isinstance(spec, dict) else asdict(spec)


__all__ = ["BASELINES", "METHOD_CLASSES", "BaselineNet", "MethodNet", "Phase", "DDPM", "VAE", "DCGAN", "VAEGAN",
           "build_method", "rebuild_method", "stored_spec",
           "optimizer_settings", "samples_in_one_pass", "sample_images", "run_sampling", "build_schedule",
           "build_unet", "gaussian_kl", "gaussian_nll"]
