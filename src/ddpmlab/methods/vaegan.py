"""VAE-GAN (Larsen et al. 2016): a VAE whose decoder is also a GAN generator, judged on reconstructions
and on samples from the prior."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ddpmlab.config import VAEGANConfig
from ddpmlab.methods.base import Phase, SectionNetwork, bce_with_logits, unconditional
from ddpmlab.methods.vae import gaussian_kl, gaussian_nll, reparameterize
from ddpmlab.nets.baselines import ConvDecoder, Discriminator, GaussianEncoder, dcgan_init_
from ddpmlab.rng import BatchSlice, model_device, randn


def discriminator_loss(real_logits: torch.Tensor, recon_logits: torch.Tensor, prior_logits: torch.Tensor) -> torch.Tensor:
    """−log D(x) − log(1 − D(Dec(Enc(x)))) − log(1 − D(Dec(z))), batch means (Larsen et al. 2016, Eq. 8)."""
    return (bce_with_logits(real_logits, real=True) + bce_with_logits(recon_logits, real=False)
            + bce_with_logits(prior_logits, real=False))


def adversarial_loss(recon_logits: torch.Tensor, prior_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating −log D(Dec(Enc(x))) − log D(Dec(z)), batch means: Eq. 8's fake terms for the decoder."""
    return bce_with_logits(recon_logits, real=True) + bce_with_logits(prior_logits, real=True)


def feature_nll(real_features: torch.Tensor, recon_features: torch.Tensor) -> torch.Tensor:
    """Larsen et al. (2016) Eq. 6, −log N(Dis_l(x); Dis_l(x̃), I) up to its constant: ½ Σ (difference)², (N,)."""
    return 0.5 * (real_features - recon_features).pow(2).flatten(1).sum(dim=1)


class VAEGAN(SectionNetwork):
    """Encoder, decoder (= generator) and a discriminator that sees real, reconstructed and prior-sampled images.

    Generator loss (encoder + decoder, one optimizer):
        loss = (recon + kl) / (C·H·W) + adversarial_weight · loss_g
    i.e. the VAE's negative ELBO in nats per dimension plus the weighted non-saturating adversarial loss. The ELBO
    is taken per dimension so that the weight means the same at every image size; summed per image (hundreds of
    nats) it would drown a 0.1-weighted adversarial term. `recon` and `kl` are logged per image, like the VAE's.

    reconstruction="pixel" (default): recon is the VAE's Gaussian likelihood (fixed decoder_std) on pixels.
    reconstruction="features": Larsen et al.'s Dis_l, a unit-variance Gaussian on the discriminator's last hidden
    layer, ½ Σ (Dis_l(x) − Dis_l(x̃))² (per-dimension normalisation by the number of features instead).
    Simplification of the paper: encoder and decoder share one loss and one optimizer, so the encoder also gets the
    adversarial gradient through reconstructions, and the decoder's reconstruction weight γ is 1.
    """

    SECTION, SECTION_TYPE = "vaegan", VAEGANConfig
    SINGLE_PASS = True
    DEFAULT_LR = 2e-4
    DEFAULT_BETAS = (0.5, 0.999)
    LOGS = ("loss", "recon", "kl", "loss_d", "loss_g", "d_real", "d_recon", "d_fake")
    num_classes = None

    def __init__(self, channels: int = 3, image_size: int = 32, section: VAEGANConfig | None = None, **network):
        """A VAE-GAN for channels × image_size² images, its networks from the `vaegan` config section (`network`
        keys, e.g. latent_dim=16, on top); UserError for values out of range."""
        super().__init__(channels, image_size, section, network)
        latent_dim, base_channels = self.config.latent_dim, self.config.base_channels
        self.encoder = dcgan_init_(GaussianEncoder(channels, image_size, base_channels, latent_dim))
        self.decoder = dcgan_init_(ConvDecoder(latent_dim, channels, image_size, base_channels))
        self.discriminator = dcgan_init_(Discriminator(channels, image_size, base_channels))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"generator": list(self.encoder.parameters()) + list(self.decoder.parameters()),
                "discriminator": list(self.discriminator.parameters())}

    def training_phases(self, x0: torch.Tensor, generator: torch.Generator | None,
                        labels: torch.Tensor | None = None, rows: BatchSlice | None = None) -> Iterator[Phase]:
        """A D step on real, detached reconstructions and detached prior samples; then the generator step against the
        updated D. Logs loss_d, d_real, d_recon, d_fake (prior samples), then loss, recon, kl and loss_g."""
        unconditional(labels, "VAE-GAN")
        mu, logvar = self.encoder(x0)
        z = reparameterize(mu, logvar, randn(mu.shape, generator, x0.device, rows=rows))
        recon_x = self.decoder(z)
        prior_x = self.decoder(randn(mu.shape, generator, x0.device, rows=rows))
        real_logits = self.discriminator(x0)
        recon_logits, prior_logits = self.discriminator(recon_x.detach()), self.discriminator(prior_x.detach())
        loss_d = discriminator_loss(real_logits, recon_logits, prior_logits)
        yield Phase("discriminator", loss_d, {"loss_d": loss_d.detach(), "d_real": real_logits.detach().sigmoid().mean(),
                                              "d_recon": recon_logits.detach().sigmoid().mean(),
                                              "d_fake": prior_logits.detach().sigmoid().mean()})
        # D has been updated by the caller
        if self.config.reconstruction == "pixel":
            recon = gaussian_nll(x0, recon_x, self.config.decoder_std).mean()
            dims = x0[0].numel()
        else:
            with torch.no_grad():
                real_features = self.discriminator.features(x0)
            recon = feature_nll(real_features, self.discriminator.features(recon_x)).mean()
            dims = real_features[0].numel()
        kl = gaussian_kl(mu, logvar).mean()
        loss_g = adversarial_loss(self.discriminator(recon_x), self.discriminator(prior_x))
        loss = (recon + kl) / dims + self.config.adversarial_weight * loss_g
        yield Phase("generator", loss, {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach(),
                                        "loss_g": loss_g.detach()})

    def validation_loss(self, x0: torch.Tensor, generator: torch.Generator | None,
                        labels: torch.Tensor | None = None) -> None:
        """None: the generator's loss includes the adversarial term, which measures the players, not a fit."""
        return None

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None, rows: BatchSlice | None = None) -> torch.Tensor:
        """n images Dec(z), z ~ N(0, I): N×C×H×W float32 in [-1, 1] on the module's device; with `rows`, these n are
        that slice of a batch split over processes."""
        return self.decoder(randn((n, self.config.latent_dim), generator, model_device(self), rows=rows))

    @torch.no_grad()
    def reconstruct(self, x0: torch.Tensor) -> torch.Tensor:
        """Dec(μ(x0)), the mean reconstruction of images in [-1, 1]: same shape, in [-1, 1]."""
        mu, _ = self.encoder(x0)
        return self.decoder(mu)
