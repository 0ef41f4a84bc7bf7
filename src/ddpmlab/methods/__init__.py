"""Generative methods behind one interface (methods.base): DDPM, latent DDPM and the baselines VAE, DCGAN and VAE-GAN.

The registry below is the one place that maps `config.method` to a network, its optimizer settings and its
rebuilding from a checkpoint; `sample_images` is the one place that draws images from any of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ddpmlab.config import METHODS, Config, guide_stage_start
from ddpmlab.errors import UserError
from ddpmlab.methods.base import BaselineNet, MethodNet, Phase
from ddpmlab.methods.dcgan import DCGAN
from ddpmlab.methods.ddpm import DDPM, build_schedule, build_unet
from ddpmlab.methods.ldm import LDM
from ddpmlab.methods.vae import VAE, gaussian_kl, gaussian_nll
from ddpmlab.methods.vaegan import VAEGAN
from ddpmlab.rng import BatchSlice
from ddpmlab.samplers import SamplingSettings

BASELINES = {"vae": VAE, "dcgan": DCGAN, "vaegan": VAEGAN}  # name -> class; each has from_spec, DEFAULT_LR, DEFAULT_BETAS
METHOD_CLASSES: dict[str, type] = {"ddpm": DDPM, **BASELINES, "ldm": LDM}  # in config.METHODS order


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
    if config.method == "ldm":
        return build_ldm(config, channels, image_size, num_classes)
    return BASELINES[config.method](channels, image_size, getattr(config, config.method))


def build_ldm(config: Config, channels: int, image_size: int, num_classes: int | None = None) -> LDM:
    """The untrained latent DDPM of a config: the ldm section's autoencoder and model.*'s UNet on its latents
    (conditional on num_classes when model.conditional)."""
    section = config.ldm
    latent_size = image_size // section.factor
    denoiser = build_unet(config.model, section.latent_channels, latent_size, num_classes, config.diffusion.prediction)
    return LDM(channels, image_size, section, denoiser, build_schedule(config.diffusion), config.diffusion)


def _known(method: str) -> str:
    if method not in METHOD_CLASSES:
        raise UserError(f"unknown method {method!r} in checkpoint; methods: {', '.join(METHODS)}")
    return method


def rebuild_method(method: str, spec: dict, config: Config) -> nn.Module:
    """An untrained network identical to the one a checkpoint of `method` holds, from its stored spec and config."""
    if _known(method) == "ddpm":
        return DDPM.from_spec(spec, config.diffusion)
    if method == "ldm":
        return LDM.from_spec(spec, build_schedule(config.diffusion), config.diffusion)
    return BASELINES[method].from_spec(spec)


def optimizer_settings(config: Config) -> tuple[float, tuple[float, float]]:
    """(learning rate, Adam betas) of `config.method`: train.lr and the method's β1 for a DDPM, the section's lr and
    beta1 for a baseline, an LDM's diffusion stage's rate (training_stage gives each stage's); β2 is train.adam_beta2."""
    if config.method in ("ddpm", "ldm"):
        return config.train.lr, (METHOD_CLASSES[config.method].DEFAULT_BETAS[0], config.train.adam_beta2)
    section = getattr(config, config.method)
    return section.lr, (section.beta1, config.train.adam_beta2)


@dataclass(frozen=True)
class Stage:
    """A span of training steps with its own peak learning rate, warm-up and decay (train.lr_schedule)."""
    name: str   # "train" for a one-stage method; an LDM's "autoencoder", "diffusion" or "guide"
    first: int  # its first step (0-based)
    end: int    # one past its last step
    lr: float   # its peak learning rate
    batch_size: int
    labelled: bool = True  # whether its batches carry a conditional model's labels (an LDM's autoencoder's: never)
    data: str = "images"  # what its batches are: "images", or "latents" (an LDM's diffusion and guide stages)


def training_stage(config: Config, step: int) -> Stage:
    """The stage training `step` (0-based) belongs to: the whole run at optimizer_settings' rate for a one-stage
    method; for an LDM the first ldm.autoencoder_steps (at ldm.ae_lr, batches of ldm.ae_batch_size), then the rest of
    train.steps (at train.lr), of which a smaller guide's stage (ldm.guide_channels) takes the last ldm.guide_steps."""
    t = config.train
    if config.method != "ldm":
        return Stage("train", 0, t.steps, optimizer_settings(config)[0], t.batch_size)
    boundary, guide_start = config.ldm.autoencoder_steps, guide_stage_start(config) or t.steps
    if step < boundary:
        return Stage("autoencoder", 0, boundary, config.ldm.ae_lr, config.ldm.ae_batch_size or t.batch_size,
                     labelled=False)
    if step < guide_start:
        return Stage("diffusion", boundary, guide_start, t.lr, t.batch_size, data="latents")
    return Stage("guide", guide_start, t.steps, t.lr, t.batch_size, labelled=False, data="latents")


def training_stages(config: Config) -> list[Stage]:
    """Every stage of a run of train.steps, in order (one for every method but ldm)."""
    stages = [training_stage(config, 0)]
    while stages[-1].end < config.train.steps:
        stages.append(training_stage(config, stages[-1].end))
    return stages


def images_seen(config: Config, steps: int) -> int:
    """Images the first `steps` steps trained on: Σ over the stages of its steps done × its (global) batch size."""
    return sum(max(0, min(steps, s.end) - s.first) * s.batch_size for s in training_stages(config))


def batch_sizes(config: Config) -> dict[str, int]:
    """{the key that sets it: size} of every stage's batch: train.batch_size, and an LDM's ldm.ae_batch_size."""
    sizes = {"train.batch_size": config.train.batch_size}
    if config.method == "ldm" and config.ldm.ae_batch_size is not None:
        sizes["ldm.ae_batch_size"] = config.ldm.ae_batch_size
    return sizes


def enter_stage(net: nn.Module, config: Config, step: int) -> Stage:
    """training_stage of `step`, which a staged network (an LDM) is told before its training phases run, with
    whether its autoencoder's adversarial term applies (from ldm.adversarial_start, when ldm.adversarial_weight > 0)."""
    stage = training_stage(config, step)
    if isinstance(net, LDM):
        net.stage = stage.name
        net.adversarial = stage.name == "autoencoder" and hasattr(net, "discriminator") and \
            step >= config.ldm.adversarial_start
    return stage


def stage_data(net: nn.Module, stage: Stage, images: torch.Tensor, random_flip: bool) -> torch.Tensor | None:
    """What `stage` trains on when not the uint8 `images` themselves: for an LDM's diffusion and guide stages
    (stage.data "latents"), the images' scaled latents, encoded once (LDM.encode_dataset: N×V×C×h×w, the views for
    data.random_flip). None: the images."""
    if isinstance(net, LDM) and stage.data == "latents":
        return net.encode_dataset(images, random_flip)
    return None


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


def autoguide(net: nn.Module) -> nn.Module | None:
    """The network's ready autoguidance guide (an LDM's, from ldm.guide_steps once the trainer has set it), which a
    guidance w then steers away from; None for every other network."""
    return getattr(net, "ready_guide", None)


def guidable(net: nn.Module) -> bool:
    """Whether guidance w applies to the network: classifier-free for a class-conditional one, autoguidance for one
    whose guide is set (an LDM's checkpoint from before diffusion step ldm.guide_steps has none yet)."""
    return bool(getattr(net, "num_classes", None)) or autoguide(net) is not None


def trained_parameters(net: nn.Module) -> int:
    """The network's parameters but a frozen autoguidance guide's (a copy of the denoiser, trained by nothing; a
    smaller guide of its own, ldm.guide_channels, is trained and counts)."""
    guide = getattr(net, "guide", None)
    frozen = isinstance(guide, nn.Module) and not getattr(net, "trains_guide", False)
    return sum(p.numel() for p in net.parameters()) - (sum(p.numel() for p in guide.parameters()) if frozen else 0)


def sampling_nfe(net: nn.Module, sampling: SamplingSettings) -> int:
    """Network evaluations of one `sampling` run by a diffusion network: an autoguided one calls its guide too (at
    the evaluations its guidance interval guides)."""
    return sampling.nfe(net.schedule.T, autoguided=autoguide(net) is not None, schedule=net.schedule)


def freeze_guide_if_due(net: nn.Module, averaged: nn.Module, config: Config, step: int) -> None:
    """After training `step` (1-based: steps done), an LDM with ldm.guide_steps freezes its guide, and the EMA
    network's, as the EMA denoiser when that many diffusion steps are done (Karras et al. 2024's weaker model: the
    same network, trained for less time); a smaller guide of its own (ldm.guide_channels) is ready, as its EMA, once
    its stage is done. Rank 0's only under torchrun: it alone keeps the EMA, samples and writes the checkpoints that
    every process resumes from."""
    if not (isinstance(net, LDM) and hasattr(net, "guide")):
        return
    section = config.ldm
    if section.guide_channels and step == config.train.steps:
        net.guide_ready.fill_(1.0)
        averaged.guide_ready.fill_(1.0)
    elif not section.guide_channels and step == section.autoencoder_steps + section.guide_steps:
        net.freeze_guide(averaged.denoiser)
        averaged.freeze_guide(averaged.denoiser)


def run_sampling(net: nn.Module, sample_cfg) -> SamplingSettings | None:
    """The sampling a run's `sample.*` settings describe for `net`: None for a single-pass network (they do not
    apply to it)."""
    return None if net.SINGLE_PASS else SamplingSettings.of_run(sample_cfg, net.schedule.T)


def stored_spec(net: nn.Module) -> dict | None:
    """The dict that rebuilds `net` with rebuild_method (a checkpoint's model_spec); None for a custom backbone."""
    spec = getattr(net, "spec", None)
    return spec if spec is None or isinstance(spec, dict) else asdict(spec)


__all__ = ["BASELINES", "METHOD_CLASSES", "BaselineNet", "MethodNet", "Phase", "DDPM", "LDM", "VAE", "DCGAN", "VAEGAN",
           "Stage", "build_method", "build_ldm", "rebuild_method", "stored_spec", "training_stage", "training_stages",
           "enter_stage", "stage_data", "batch_sizes",
           "optimizer_settings", "samples_in_one_pass", "sample_images", "run_sampling", "build_schedule",
           "build_unet", "gaussian_kl", "gaussian_nll", "autoguide", "guidable", "sampling_nfe", "freeze_guide_if_due",
           "trained_parameters"]
