"""Variational autoencoder (Kingma & Welling 2014): a convolutional encoder and decoder trained on the negative ELBO."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from ddpmlab.config import VAEConfig
from ddpmlab.methods.base import Phase, SectionNetwork, unconditional
from ddpmlab.nets.baselines import ConvDecoder, GaussianEncoder
from ddpmlab.rng import BatchSlice, model_device, randn


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) in nats, summed over the latent dims: (N, L) -> (N,)."""
    # Kingma & Welling (2014) appendix B: −½ Σ (1 + log σ² − μ² − σ²)
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """−log N(x; mean, std² I) in nats, summed over all but the batch dim: N×... -> (N,)."""
    # ½ Σ ((x − μ)/σ)² + ½ D log(2πσ²)
    squared_error = (x - mean).pow(2).flatten(1).sum(dim=1)
    dims = x[0].numel()
    return 0.5 * squared_error / std**2 + 0.5 * dims * math.log(2 * math.pi * std**2)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = μ + σ ε, a differentiable sample of N(μ, σ²) given ε ~ N(0, I) (Kingma & Welling 2014, Eq. 10)."""
    return mu + torch.exp(0.5 * logvar) * eps


class VAE(SectionNetwork):
    """A VAE whose loss is the negative ELBO per image, in nats: recon + kl_weight · kl (batch means).

    Likelihood: p(x | z) = N(x; decoder(z), decoder_std² I) on images in [-1, 1], a Gaussian with a fixed
    standard deviation (default 0.1, i.e. 0.05 on a [0, 1] scale, about 13 of 255 levels); `recon` is its
    negative log density summed over pixels, normalising constant included, so it can be negative for good
    reconstructions. A smaller decoder_std weights reconstruction more against the KL (sharper, less regular).
    q(z | x) is a diagonal Gaussian from the convolutional encoder; p(z) = N(0, I).
    """

    SECTION, SECTION_TYPE = "vae", VAEConfig
    SINGLE_PASS = True
    DEFAULT_LR = 1e-3
    DEFAULT_BETAS = (0.9, 0.999)
    LOGS = ("loss", "recon", "kl")
    num_classes = None

    def __init__(self, channels: int = 3, image_size: int = 32, section: VAEConfig | None = None, **network):
        """A VAE for channels × image_size² images, its network from the `vae` config section (`network` keys, e.g.
        latent_dim=16, on top); UserError for values out of range."""
        super().__init__(channels, image_size, section, network)
        self.encoder = GaussianEncoder(channels, image_size, self.config.base_channels, self.config.latent_dim)
        self.decoder = ConvDecoder(self.config.latent_dim, channels, image_size, self.config.base_channels)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": list(self.parameters())}

    def negative_elbo(self, x0: torch.Tensor, generator: torch.Generator | None, rows: BatchSlice | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, recon, kl): the batch-mean negative ELBO recon + kl_weight · kl and its two terms, nats per image,
        with one z ~ q(z | x) per image drawn from `generator`."""
        mu, logvar = self.encoder(x0)
        z = reparameterize(mu, logvar, randn(mu.shape, generator, x0.device, rows=rows))
        recon = gaussian_nll(x0, self.decoder(z), self.config.decoder_std).mean()
        kl = gaussian_kl(mu, logvar).mean()
        return recon + self.config.kl_weight * kl, recon, kl

    def training_phases(self, x0: torch.Tensor, generator: torch.Generator | None,
                        labels: torch.Tensor | None = None, rows: BatchSlice | None = None) -> Iterator[Phase]:
        """One phase ("model") whose loss is the batch-mean negative ELBO; logs loss, recon and kl (nats per image)."""
        unconditional(labels, "the VAE")
        loss, recon, kl = self.negative_elbo(x0, generator, rows)
        yield Phase("model", loss, {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach()})

    def validation_loss(self, x0: torch.Tensor, generator: torch.Generator | None,
                        labels: torch.Tensor | None = None) -> torch.Tensor:
        """The batch-mean negative ELBO (nats per image), as in training."""
        unconditional(labels, "the VAE")
        return self.negative_elbo(x0, generator)[0]

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None, rows: BatchSlice | None = None) -> torch.Tensor:
        """n decoder means at z ~ N(0, I): N×C×H×W float32 in [-1, 1] on the module's device; with `rows`, these n
        are that slice of a batch split over processes."""
        z = randn((n, self.config.latent_dim), generator, model_device(self), rows=rows)
        return self.decoder(z)

    @torch.no_grad()
    def reconstruct(self, x0: torch.Tensor) -> torch.Tensor:
        """decoder(μ(x0)), the mean reconstruction of images in [-1, 1]: same shape, in [-1, 1]."""
        mu, _ = self.encoder(x0)
        return self.decoder(mu)
