"""The Python API for a trained model: `pipe = ddpmlab.load(source)`, then `pipe.sample(n)` and `pipe.denoise(x_t, t)`.

A source is anything the command line accepts (a run directory, a checkpoint folder, one weights file,
`pretrained:NAME`), a diffusers DDPM folder, `hf:ORG/NAME` or an original port of Ho et al.'s checkpoints; see
ddpmlab.store.load.load_trained.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ddpmlab.config import Config
from ddpmlab.diffusion import NoiseSchedule
from ddpmlab.errors import UserError
from ddpmlab.eval.samples import guidance_and_interval
from ddpmlab.methods import guidable, sample_images
from ddpmlab.rng import model_device, resolve_device
from ddpmlab.samplers import SamplingSettings
from ddpmlab.store.load import load_trained


@dataclass
class Pipeline:
    """A trained network with its schedule (None for a baseline), its Config and training step."""

    net: nn.Module
    schedule: NoiseSchedule | None
    config: Config
    step: int

    @property
    def device(self) -> torch.device:
        return model_device(self.net)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the network draws."""
        return tuple(self.net.image_shape)

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of x_T and of denoise's x_t: the image shape, or a latent DDPM's latent shape (diffusion only)."""
        return tuple(self.net.noise_shape)

    @property
    def num_classes(self) -> int | None:
        """The classes of a class-conditional model, None for an unconditional one."""
        return getattr(self.net, "num_classes", None)

    def to(self, device) -> "Pipeline":
        """This pipeline with its network on `device` ("cpu", "cuda", "auto", ...); returns itself."""
        self.net.to(resolve_device(str(device)))
        return self

    def sample(self, n: int, sampler: str | None = None, steps: int | None = None, seed: int | None = 0,
               noise: torch.Tensor | None = None, labels=None, guidance: float | None = None,
               **settings) -> torch.Tensor:
        """n images, N×C×H×W float32 in [−1, 1] on the network's device.

        A diffusion model runs `sampler` (default: the run's sample.sampler) for `steps` (default: as `ddpmlab sample`
        chooses), with any other SamplingSettings field as a keyword (eta, spacing, variance, clip_denoised, ...);
        `noise` (N×noise_shape) is x_T; `labels` (N class indices) are for a class-conditional model, `guidance` w
        for one or for a latent DDPM with an autoguidance guide (ldm.guide_steps), guidance_interval=(σ_lo, σ_hi) to
        guide only at those noise levels (() for every step; default: the run's sample.guidance_interval).
        A baseline draws in one pass and takes only n and seed. seed None draws from torch's global generator.
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise UserError(f"n={n!r} must be a positive integer")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        if self.net.SINGLE_PASS:
            given = {"sampler": sampler, "steps": steps, "noise": noise, "labels": labels, "guidance": guidance,
                     **settings}
            named = [name for name, value in given.items() if value is not None]
            if named:
                raise UserError(f"{self.config.method} draws an image in one network pass; {named[0]} applies to "
                                f"diffusion models only")
            return sample_images(self.net, n, generator)
        guidance, interval, _ = guidance_and_interval(guidable(self.net), self.config.sample, guidance,
                                                      settings.pop("guidance_interval", None))
        sampling = SamplingSettings.of_run(self.config.sample, self.schedule.T, sampler, steps, **settings).with_(
            guidance=guidance, guidance_interval=interval).resolved(self.schedule.T)
        return sample_images(self.net, n, generator, sampling, self._labels(labels, n), self._noise(noise, n))

    @torch.no_grad()
    def denoise(self, x_t: torch.Tensor, t, labels=None) -> torch.Tensor:
        """The network's raw output at x_t (N×noise_shape) and timestep t (an int, or N of them, in 0..T−1; index t is
        the paper's t+1): its ε, x_0 or v prediction as trained (`pipe.config.diffusion.prediction`), on x_t's device.
        For a latent DDPM (method=ldm) x_t is a noisy scaled latent and the output the latent denoiser's.
        labels of a class-conditional model may include the null label, num_classes (None: all null)."""
        if self.net.SINGLE_PASS:
            raise UserError(f"{self.config.method} draws an image in one network pass: it has no denoiser to call "
                            f"(denoise applies to diffusion models)")
        if not isinstance(x_t, torch.Tensor) or x_t.dim() != 4 or tuple(x_t.shape[1:]) != self.noise_shape:
            raise UserError(f"x_t must be a N×{'×'.join(map(str, self.noise_shape))} tensor")
        t = torch.as_tensor(t, dtype=torch.long).flatten()
        t = t.expand(len(x_t)) if t.numel() == 1 else t
        if t.numel() != len(x_t) or not ((0 <= t) & (t < self.schedule.T)).all():
            raise UserError(f"t must be one timestep or {len(x_t)} of them, each in 0..{self.schedule.T - 1}")
        was_training = self.net.training
        self.net.eval()
        try:
            device = self.device
            return self.net(x_t.to(device), t.to(device), labels=self._labels(labels, len(x_t), null=True))
        finally:
            self.net.train(was_training)

    def _labels(self, labels, n: int, null: bool = False) -> torch.Tensor | None:
        if labels is None:
            return None
        if not self.num_classes:
            raise UserError("labels need a class-conditional model; this one is unconditional")
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        last = self.num_classes if null else self.num_classes - 1
        if labels.numel() != n or not ((0 <= labels) & (labels <= last)).all():
            raise UserError(f"labels must be {n} class indices in 0..{last}")
        return labels.to(self.device)

    def _noise(self, noise: torch.Tensor | None, n: int) -> torch.Tensor | None:
        if noise is not None and (not isinstance(noise, torch.Tensor) or tuple(noise.shape) != (n, *self.noise_shape)):
            raise UserError(f"noise (x_T) must be a {n}×{'×'.join(map(str, self.noise_shape))} tensor")
        return noise


def load(source: str | Path, ema: bool = True, device="cpu", arch: str | None = None) -> Pipeline:
    """A Pipeline from a run directory (its newest checkpoint), a checkpoint folder, one weights file,
    `pretrained:NAME`, a diffusers DDPM folder, `hf:ORG/NAME[@REVISION]` or an original port of Ho et al.'s
    checkpoints (.ckpt/.pt/.pth; `arch` cifar10, celeba or lsun, else read from the weights); the EMA weights unless
    ema=False; on `device` ("cpu", "cuda", "auto"). UserError for a source that is missing, damaged or not a model."""
    net, schedule, config, step = load_trained(source, use_ema=ema, device=str(device), arch=arch)
    return Pipeline(net, schedule, config, step)
