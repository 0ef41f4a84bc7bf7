"""The latent DDPM's first stage: a convolutional autoencoder that downsamples images by a power of two
(Rombach et al. 2022, their KL-regularised autoencoder without the perceptual term), and the patch discriminator of
its optional adversarial term (Esser et al. 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddpmlab.nets.layers import Downsample, Upsample, group_norm


class ConvResBlock(nn.Module):
    """GN-SiLU-conv, GN-SiLU-conv, plus a skip: Ho et al.'s residual block without the timestep embedding."""

    def __init__(self, in_ch: int, out_ch: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch, groups), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2, self.conv2 = group_norm(out_ch, groups), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.conv2(F.silu(self.norm2(h))) + self.skip(x)


def stage_widths(channels: int, factor: int) -> list[int]:
    """The channels at each resolution from the image's inwards: `channels`, doubled at each of the log2(factor)
    downsamplings."""
    return [channels * 2**level for level in range(factor.bit_length())]


class Encoder(nn.Module):
    """Images (N×C×H×W in [-1, 1]) -> (mean, log-variance) of q(z | x), each N×latent_channels×H/f×W/f. `groups`:
    GroupNorm's groups, fewer where a stage's channels are not divisible by it (group_norm)."""

    def __init__(self, in_channels: int, channels: int, factor: int, latent_channels: int, groups: int):
        super().__init__()
        widths = stage_widths(channels, factor)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        for inner, outer in zip(widths[1:], widths):
            layers += [ConvResBlock(outer, outer, groups), Downsample(outer), ConvResBlock(outer, inner, groups)]
        layers += [ConvResBlock(widths[-1], widths[-1], groups), group_norm(widths[-1], groups), nn.SiLU(),
                   nn.Conv2d(widths[-1], 2 * latent_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.layers(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # as Rombach et al.'s DiagonalGaussianDistribution


class Decoder(nn.Module):
    """Latents (N×latent_channels×h×w) -> images N×C×(f·h)×(f·w), unbounded (the caller clamps samples to [-1, 1]).
    `groups` as the Encoder's."""

    def __init__(self, latent_channels: int, channels: int, factor: int, out_channels: int, groups: int):
        super().__init__()
        widths = stage_widths(channels, factor)
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, widths[-1], 3, padding=1),
                                   ConvResBlock(widths[-1], widths[-1], groups)]
        for outer, inner in reversed(list(zip(widths, widths[1:]))):
            layers += [ConvResBlock(inner, outer, groups), Upsample(outer), ConvResBlock(outer, outer, groups)]
        layers += [group_norm(widths[0], groups), nn.SiLU(), nn.Conv2d(widths[0], out_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class Autoencoder(nn.Module):
    """Encoder and decoder of the first stage, for images of `in_channels` downsampled by `factor`, with `groups`
    GroupNorm groups (fewer where a stage's channels are not divisible: at 32, ldm.ae_groups' default, one channel a
    group at 16 and 32 channels)."""

    def __init__(self, in_channels: int, channels: int, factor: int, latent_channels: int, groups: int):
        super().__init__()
        self.encoder = Encoder(in_channels, channels, factor, latent_channels, groups)
        self.decoder = Decoder(latent_channels, channels, factor, in_channels, groups)


class PatchDiscriminator(nn.Module):
    """Images N×C×H×W -> N×1×(H/4 − 1)×(W/4 − 1) logits of "real", one per overlapping 14×14 patch: Isola et al.'s
    PatchGAN as Esser et al. use it, two stride-2 4×4 convolutions (`channels`, then 2·channels with GroupNorm),
    LeakyReLU(0.2), and a 2×2 convolution to one logit."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                                    nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),
                                    group_norm(2 * channels, 8), nn.LeakyReLU(0.2), nn.Conv2d(2 * channels, 1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
