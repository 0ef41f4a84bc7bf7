"""The baselines' networks in the DCGAN style (Radford et al. 2016), shared by the VAE, DCGAN and VAE-GAN.

Every network is a stack of 4×4 stride-2 convolutions between the image and a small `base_size` square:
the image is halved while it stays even and the half is at least 4 pixels, so 16 -> 8 -> 4, 32 -> 16 -> 8 -> 4,
64 -> ... -> 4 and 28 -> 14 -> 7 (Fashion-MNIST gets a 7×7 base; nothing is padded or cropped).
The innermost stage has base_channels · 2^(stages−1) channels and each outer stage half as many, as in DCGAN.
"""

from __future__ import annotations

import torch
from torch import nn

from ddpmlab.errors import UserError


def stage_layout(image_size: int) -> tuple[int, int]:
    """(stages, base_size): how many stride-2 stages lie between an image_size square and its base square."""
    if image_size < 8 or image_size % 2:
        raise UserError(f"image size {image_size} is not supported by the baseline networks: "
                        "use an even size of at least 8 (16, 28, 32, 64, ...)")
    stages, size = 0, image_size
    while size % 2 == 0 and size // 2 >= 4:
        stages, size = stages + 1, size // 2
    return stages, size


def stage_widths(image_size: int, base_channels: int) -> list[int]:
    """Channel counts from the outermost stage inwards: base_channels, 2·base_channels, ... (one per stage)."""
    stages, _ = stage_layout(image_size)
    return [base_channels * 2**i for i in range(stages)]


def dcgan_init_(module: nn.Module) -> nn.Module:
    """Radford et al. (2016) §4: conv weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), biases 0. In place."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


class ConvFeatures(nn.Module):
    """Image N×C×S×S -> features N×F×b×b (b = base size): stride-2 convs, LeakyReLU(0.2), batch norm but on the first.

    The body of the DCGAN discriminator, also used as the VAEs' encoder.
    """

    def __init__(self, channels: int, image_size: int, base_channels: int):
        super().__init__()
        widths = stage_widths(image_size, base_channels)
        layers, ch = [], channels
        for i, width in enumerate(widths):
            layers.append(nn.Conv2d(ch, width, 4, stride=2, padding=1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            ch = width
        self.layers = nn.Sequential(*layers)
        self.out_channels = ch
        self.base_size = stage_layout(image_size)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ConvDecoder(nn.Module):
    """Latent N×L -> image N×C×S×S in [-1, 1]: a b×b projection, stride-2 transposed convs with batch norm + ReLU, tanh.

    The DCGAN generator, also the VAEs' decoder (whose output is the mean of p(x | z)).
    """

    def __init__(self, latent_dim: int, channels: int, image_size: int, base_channels: int):
        super().__init__()
        widths = stage_widths(image_size, base_channels)[::-1]
        base_size = stage_layout(image_size)[1]
        # a base_size kernel on a 1×1 input is DCGAN's "project and reshape" of z
        layers = [nn.ConvTranspose2d(latent_dim, widths[0], base_size, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for width, next_width in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(width, next_width, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(next_width), nn.ReLU()]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, stride=2, padding=1), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z[:, :, None, None])


class Discriminator(nn.Module):
    """Image N×C×S×S -> (N,) logits of "real" (a sigmoid gives D's probability); `features`: the last hidden layer."""

    def __init__(self, channels: int, image_size: int, base_channels: int):
        super().__init__()
        self.body = ConvFeatures(channels, image_size, base_channels)
        self.head = nn.Conv2d(self.body.out_channels, 1, self.body.base_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """N×F×b×b activations before the logit (Larsen et al.'s Dis_l for a feature-space reconstruction)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).flatten()


class GaussianEncoder(nn.Module):
    """Image N×C×S×S -> (μ, log σ²), each N×L: the diagonal Gaussian q(z | x) of a VAE."""

    def __init__(self, channels: int, image_size: int, base_channels: int, latent_dim: int):
        super().__init__()
        self.body = ConvFeatures(channels, image_size, base_channels)
        self.head = nn.Conv2d(self.body.out_channels, 2 * latent_dim, self.body.base_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x)).flatten(1).chunk(2, dim=1)
        return mu, logvar
