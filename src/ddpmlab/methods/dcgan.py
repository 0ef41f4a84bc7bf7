"""DCGAN (Radford et al. 2016): a transposed-conv generator against a conv discriminator, non-saturating GAN loss."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ddpmlab.config import DCGANConfig
from ddpmlab.methods.base import Phase, SectionNetwork, bce_with_logits, unconditional
from ddpmlab.nets.baselines import ConvDecoder, Discriminator, dcgan_init_
from ddpmlab.rng import BatchSlice, model_device, randn


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """−log D(x) − log(1 − D(G(z))), batch means (Goodfellow et al. 2014, Eq. 1, as a loss to minimise)."""
    return bce_with_logits(real_logits, real=True) + bce_with_logits(fake_logits, real=False)


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating −log D(G(z)), batch mean (Goodfellow et al. 2014, §3)."""
    return bce_with_logits(fake_logits, real=True)


class DCGAN(SectionNetwork):
    """Generator G: z ~ N(0, I) (100-d) -> image in [-1, 1]; discriminator D: image -> logit. Adam 2e-4, β1 = 0.5."""

    SECTION, SECTION_TYPE = "dcgan", DCGANConfig
    SINGLE_PASS = True
    DEFAULT_LR = 2e-4
    DEFAULT_BETAS = (0.5, 0.999)
    LOGS = ("loss_d", "loss_g", "d_real", "d_fake")
    num_classes = None

    def __init__(self, channels: int = 3, image_size: int = 32, section: DCGANConfig | None = None, **network):
        """A DCGAN for channels × image_size² images, its networks from the `dcgan` config section (`network` keys,
        e.g. latent_dim=20, on top); UserError for values out of range."""
        super().__init__(channels, image_size, section, network)
        latent_dim, base_channels = self.config.latent_dim, self.config.base_channels
        self.generator_net = dcgan_init_(ConvDecoder(latent_dim, channels, image_size, base_channels))
        self.discriminator = dcgan_init_(Discriminator(channels, image_size, base_channels))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"generator": list(self.generator_net.parameters()), "discriminator": list(self.discriminator.parameters())}

    def training_phases(self, x0: torch.Tensor, generator: torch.Generator | None,
                        labels: torch.Tensor | None = None, rows: BatchSlice | None = None) -> Iterator[Phase]:
        """The PyTorch DCGAN example's iteration: a D step on real and detached fake, then a G step against the updated D.

        Logs loss_d, d_real and d_fake (mean D probabilities before D's step), then loss_g.
        """
        unconditional(labels, "DCGAN")
        z = randn((x0.shape[0], self.config.latent_dim), generator, x0.device, rows=rows)
        fake = self.generator_net(z)
        real_logits, fake_logits = self.discriminator(x0), self.discriminator(fake.detach())
        loss_d = discriminator_loss(real_logits, fake_logits)
        yield Phase("discriminator", loss_d, {"loss_d": loss_d.detach(), "d_real": real_logits.detach().sigmoid().mean(),
                                              "d_fake": fake_logits.detach().sigmoid().mean()})
        loss_g = generator_loss(self.discriminator(fake))  # D has been updated by the caller
        yield Phase("generator", loss_g, {"loss_g": loss_g.detach()})

    def validation_loss(self, x0: torch.Tensor, generator: torch.Generator | None,
                        labels: torch.Tensor | None = None) -> None:
        """None: a GAN's losses measure the two players against each other, not a fit to held-out images."""
        return None

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None, rows: BatchSlice | None = None) -> torch.Tensor:
        """n images G(z), z ~ N(0, I): N×C×H×W float32 in [-1, 1] on the module's device; with `rows`, these n are
        that slice of a batch split over processes."""
        return self.generator_net(randn((n, self.config.latent_dim), generator, model_device(self), rows=rows))
