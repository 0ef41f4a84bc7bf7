"""Denoising diffusion (Ho et al. 2020) behind the methods' interface: any backbone `model(x_t, t, labels)` with
its NoiseSchedule and DiffusionConfig; one phase whose loss is L_simple, sampling by ddpmlab.samplers.sample."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ddpmlab.config import DiffusionConfig, ModelConfig
from ddpmlab.diffusion import NoiseSchedule, diffusion_loss
from ddpmlab.methods.base import Phase
from ddpmlab.nets import UNet
from ddpmlab.rng import BatchSlice, model_device
from ddpmlab.samplers import SamplingSettings, sample


def build_schedule(cfg: DiffusionConfig) -> NoiseSchedule:
    """The NoiseSchedule a diffusion config names."""
    if cfg.schedule == "linear":
        return NoiseSchedule.linear(cfg.timesteps, cfg.beta_start, cfg.beta_end)
    if cfg.schedule == "cosine":
        return NoiseSchedule.cosine(cfg.timesteps, cfg.cosine_s)
    return NoiseSchedule.from_betas(cfg.betas)


def build_unet(cfg: ModelConfig, in_channels: int, image_size: int, num_classes: int | None, prediction: str) -> UNet:
    """The U-Net a model config describes, for images of in_channels × image_size²."""
    return UNet(in_channels=in_channels, channels=cfg.channels, channel_mult=cfg.channel_mult,
                num_res_blocks=cfg.num_res_blocks, attention_resolutions=cfg.attention_resolutions,
                dropout=cfg.dropout, groups=cfg.groups, image_size=image_size,
                num_classes=num_classes if cfg.conditional else None, prediction=prediction)


class DDPM(nn.Module):
    """A backbone `model(x_t, t, labels=None)` trained on L_simple under `schedule` and sampled by a sampler.

    Its state_dict is the backbone's own (UNet keys, as in checkpoints written before the methods existed), and it
    can be called like the backbone, so the NLL bound and the samplers take it where they take a backbone.
    """

    SINGLE_PASS = False
    DEFAULT_LR = 2e-4
    DEFAULT_BETAS = (0.9, 0.999)
    LOGS = ("loss",)

    def __init__(self, backbone: nn.Module, schedule: NoiseSchedule, diffusion: DiffusionConfig | None = None,
                 image_shape: tuple[int, int, int] | None = None):
        super().__init__()
        self.backbone = backbone
        self.schedule = schedule
        # without a config, Ho et al.'s process and the backbone's own parameterisation (a UNet knows it)
        self.diffusion = diffusion or DiffusionConfig(prediction=getattr(backbone, "prediction", "eps"))
        spec = getattr(backbone, "spec", None)
        if image_shape is None:
            if spec is None:
                raise ValueError("give image_shape for a backbone without a spec")
            image_shape = (spec.in_channels, spec.image_size, spec.image_size)
        self.image_shape = tuple(image_shape)

    @classmethod
    def from_spec(cls, spec: dict, diffusion: DiffusionConfig) -> "DDPM":
        """A DDPM around an untrained UNet rebuilt from its spec dict, with the schedule `diffusion` names."""
        return cls(UNet.from_spec(spec), build_schedule(diffusion), diffusion)

    @property
    def spec(self):
        """The backbone's spec (a UNetSpec), None for a backbone without one."""
        return getattr(self.backbone, "spec", None)

    @property
    def num_classes(self) -> int | None:
        return getattr(self.backbone, "num_classes", None)

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of x_T, the sampler's start: the image shape."""
        return self.image_shape

    @property
    def prediction(self) -> str:
        return self.diffusion.prediction

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone(x_t, t, labels=labels)

    def state_dict(self, *args, **kwargs):
        return self.backbone.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, *args, **kwargs):
        return self.backbone.load_state_dict(state_dict, *args, **kwargs)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": list(self.parameters())}

    def loss(self, x0: torch.Tensor, generator: torch.Generator | None, labels: torch.Tensor | None,
             rows: BatchSlice | None = None) -> torch.Tensor:
        """L_simple (or its min-SNR weighting) on a batch, t and ε drawn from `generator`: ddpmlab.diffusion.diffusion_loss."""
        d = self.diffusion
        return diffusion_loss(self.backbone, self.schedule, x0, labels, d.prediction, d.loss_weighting,
                              d.min_snr_gamma, generator, rows)

    def training_phases(self, x0: torch.Tensor, generator: torch.Generator | None,
                        labels: torch.Tensor | None = None, rows: BatchSlice | None = None) -> Iterator[Phase]:
        """One phase ("model") whose loss is L_simple; logs it as `loss`."""
        loss = self.loss(x0, generator, labels, rows)
        yield Phase("model", loss, {"loss": loss.detach()})

    def validation_loss(self, x0: torch.Tensor, generator: torch.Generator | None,
                        labels: torch.Tensor | None = None) -> torch.Tensor:
        """L_simple on a held-out batch, t and ε from `generator` (a fixed seed gives comparable numbers)."""
        return self.loss(x0, generator, labels)

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None, sampling: SamplingSettings | None = None,
                 labels: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                 rows: BatchSlice | None = None) -> torch.Tensor:
        """n images by `sampling` (default: SamplingSettings(), DDIM over all T steps): N×C×H×W float32 in [-1, 1] on
        the module's device. Guidance applies when there are labels; `noise` fixes x_T (else drawn from `generator`).
        With `rows`, these n are that slice of a batch split over processes (labels and noise the slice's)."""
        settings = sampling or SamplingSettings()
        settings = settings.with_(prediction=settings.prediction or self.diffusion.prediction)
        return sample(self.backbone, self.schedule, (n, *self.image_shape), settings, noise=noise, generator=generator,
                      labels=labels, device=model_device(self), rows=rows)
