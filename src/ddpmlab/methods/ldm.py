"""Latent diffusion (Rombach et al. 2022): an autoencoder trained first, then a DDPM on its latents scaled to unit
variance, whose samples are decoded into images. Both stages (and a smaller guide's, ldm.guide_channels) train in one
run, the stage following from the step."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from ddpmlab.config import DiffusionConfig, LDMConfig, check_ldm_section
from ddpmlab.diffusion import NoiseSchedule, diffusion_loss
from ddpmlab.errors import UserError
from ddpmlab.images import uint8_to_model
from ddpmlab.methods.base import Phase
from ddpmlab.methods.vae import gaussian_kl, reparameterize
from ddpmlab.nets import UNet
from ddpmlab.nets.autoencoder import Autoencoder, PatchDiscriminator
from ddpmlab.rng import BatchSlice, model_device, randn
from ddpmlab.samplers import SamplingSettings, sample

# the ldm section's keys that are not its networks' arguments
TRAINING_KEYS = ("autoencoder_steps", "ae_lr", "ae_batch_size", "adversarial_start")
# network keys added after the first checkpoints, and what a spec without them means: no discriminator, no guide,
# the autoencoder's GroupNorm at 32 groups, a guide (if any) that is the denoiser itself
LATER_NETWORK_KEYS = {"adversarial_weight": 0.0, "disc_channels": 32, "guide_steps": 0, "ae_groups": 32,
                      "guide_channels": 0}
ENCODE_CHUNK = 500  # images per encoder pass when the diffusion stage encodes the training set


def reconstruction_loss(x: torch.Tensor, reconstruction: torch.Tensor, kind: str) -> torch.Tensor:
    """The mean over pixels of |x − x̂| ("l1", Rombach et al.'s pixel term) or (x − x̂)² ("mse")."""
    difference = x - reconstruction
    return difference.abs().mean() if kind == "l1" else difference.pow(2).mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """E[max(0, 1 − D(x))] + E[max(0, 1 + D(x̂))], means over patches and batch: Esser et al. (2021)'s hinge loss."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def adaptive_weight(reconstruction: torch.Tensor, generator_loss: torch.Tensor, last_layer: torch.Tensor,
                    delta: float) -> torch.Tensor:
    """λ = δ · ‖∇_L rec‖ / (‖∇_L gen‖ + 1e-4), L the decoder's last layer, clamped to [0, 1e4] and detached: Esser et
    al. (2021) Eq. 7, which balances the adversarial term against the reconstruction's pull on the same weights."""
    rec_grad, = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)
    gen_grad, = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)
    return (delta * rec_grad.norm() / (gen_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def latent_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z | x) ‖ N(0, I)) in nats per latent element, the batch mean: Kingma & Welling appendix B over N×C×h×w."""
    return gaussian_kl(mean.flatten(1), logvar.flatten(1)).mean() / mean[0].numel()


def latent_scale_of(latents: torch.Tensor) -> torch.Tensor:
    """1 / σ̂, σ̂ the standard deviation of a batch of latents (all elements): Rombach et al. §4.3.2's scale factor,
    which gives the diffusion model unit-variance data. A 0-dim float32 tensor on the latents' device."""
    return 1.0 / latents.detach().float().std().clamp_min(1e-8)


class LDM(nn.Module):
    """An autoencoder (nets.autoencoder) and a UNet `denoiser` on its latents, in two training stages.

    Stage "autoencoder" (the first ldm.autoencoder_steps): one phase, group "autoencoder", loss = the reconstruction
    loss + kl_weight · KL, logged as loss_ae (the reconstruction term) and loss_kl. With ldm.adversarial_weight δ > 0
    the LDM also holds a `discriminator` (PatchDiscriminator, group "discriminator"); from ldm.adversarial_start (the
    trainer sets `adversarial`) the autoencoder's loss adds λ · loss_g, loss_g = −mean D(x̂) and λ adaptive_weight's,
    and a second phase trains D on the hinge loss (loss_d) against the same, detached, reconstructions (Esser et al.
    2021, as Rombach et al.'s autoencoders). Stage "diffusion": one phase,
    group "denoiser", the DDPM loss (diffusion.*: parameterisation, min-SNR) on z = scale · μ(x), μ the encoder's
    mean, the autoencoder frozen; logged as loss. Its batches are latents, not images: the trainer encodes the
    training images once when the stage starts (encode_dataset, which also measures `scale`, the buffer latent_scale,
    0 until then, kept in the checkpoint with the weights). The trainer says the stage by setting `stage`
    (methods.enter_stage). Sampling runs any sampler on latents (never clipped: they are not in [-1, 1]) and decodes
    z / scale. Called like a backbone, it is the latent denoiser: (x_t, t, labels) on latents. A class-conditional
    denoiser (model.conditional) takes the batches' labels in stage 2 and a sample's classes with classifier-free
    guidance; the autoencoder never sees labels.

    Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"): with
    ldm.guide_steps > 0 the LDM also holds a `guide`, a frozen copy of the denoiser that the trainer sets to the EMA
    denoiser after that many diffusion steps (freeze_guide), trained on the same latents for less time. Sampling
    with guidance w then steers away from it: out = (1 + w)·D(x) − w·D_guide(x), two network evaluations a step.
    Before the guide is set (guide_ready 0), sampling is unguided. With ldm.guide_channels > 0 the guide is instead
    a smaller UNet of its own (the denoiser's spec with that many base channels: Karras et al.'s guide is both
    smaller and trained for less time), trained from scratch in a third stage "guide" of ldm.guide_steps steps after
    the diffusion stage (group "guide", the same DDPM loss on the same latents, logged as loss_guide; the denoiser and
    its EMA stay as the diffusion stage left them), and set once that stage is done.
    """

    SINGLE_PASS = False
    DEFAULT_LR = 2e-4
    DEFAULT_BETAS = (0.9, 0.999)
    LOGS = ("loss", "loss_ae", "loss_kl")
    STAGES = ("autoencoder", "diffusion", "guide")
    # the EMA averages the denoiser (and a smaller guide of its own); the autoencoder (and discriminator) it holds are
    # the trained ones, and a frozen copy of the denoiser as guide the EMA leaves alone (freeze_guide_if_due sets it
    # in both)
    EMA_COPIES = ("autoencoder.", "discriminator.")

    def __init__(self, channels: int, image_size: int, section: LDMConfig, denoiser: UNet, schedule: NoiseSchedule,
                 diffusion: DiffusionConfig):
        super().__init__()
        check_ldm_section(section)
        if image_size % section.factor:
            raise UserError(f"ldm.factor={section.factor} does not divide the {image_size}×{image_size} images; "
                            f"use a power of two that divides {image_size}")
        self.channels, self.image_size, self.config = channels, image_size, section
        self.autoencoder = Autoencoder(channels, section.ae_channels, section.factor, section.latent_channels,
                                       section.ae_groups)
        if section.adversarial_weight > 0:
            self.discriminator = PatchDiscriminator(channels, section.disc_channels)
            self.LOGS = (*self.LOGS, "loss_g", "loss_d")
        self.adversarial = False  # whether this step's autoencoder loss has the adversarial term (the trainer's)
        self.denoiser, self.schedule, self.diffusion = denoiser, schedule, diffusion
        self.register_buffer("latent_scale", torch.zeros(()))
        if section.guide_channels > 0:  # a smaller UNet; the global RNG (dropout's draws) left as without it
            with torch.random.fork_rng(devices=[]):
                self.guide = UNet.from_spec(replace(denoiser.spec, channels=section.guide_channels))
            self.LOGS = (*self.LOGS, "loss_guide")
        elif section.guide_steps > 0:  # a copy, not a new UNet: building one would draw from torch's RNG
            self.guide = copy.deepcopy(denoiser).requires_grad_(False)
        if hasattr(self, "guide"):
            self.register_buffer("guide_ready", torch.zeros(()))
        self.stage = self.STAGES[0]

    @classmethod
    def from_spec(cls, spec: dict, schedule: NoiseSchedule, diffusion: DiffusionConfig) -> "LDM":
        """An identical, untrained LDM from its spec dict (`spec`) and its process."""
        network = {**LATER_NETWORK_KEYS,
                   **{key: value for key, value in spec.items() if key not in ("channels", "image_size", "denoiser")}}
        names = {f.name for f in fields(LDMConfig)} - set(TRAINING_KEYS)
        if set(network) != names:
            raise KeyError("ldm spec keys")
        return cls(spec["channels"], spec["image_size"], LDMConfig(**network), UNet.from_spec(spec["denoiser"]),
                   schedule, diffusion)

    @property
    def spec(self) -> dict:
        """What rebuilds this network: the image shape, the ldm section's network keys and the denoiser's UNetSpec."""
        network = {key: value for key, value in asdict(self.config).items() if key not in TRAINING_KEYS}
        return {"channels": self.channels, "image_size": self.image_size, **network,
                "denoiser": asdict(self.denoiser.spec)}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.channels, self.image_size, self.image_size

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the latents the sampler starts from: latent_channels × (image size / factor)²."""
        size = self.image_size // self.config.factor
        return self.config.latent_channels, size, size

    @property
    def prediction(self) -> str:
        return self.diffusion.prediction

    @property
    def num_classes(self) -> int | None:
        """The denoiser's classes (model.conditional: the latents' DDPM is class-conditional); the autoencoder never
        is."""
        return getattr(self.denoiser, "num_classes", None)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.denoiser(x_t, t, labels=labels)

    @property
    def trains_guide(self) -> bool:
        """Whether the guide is a smaller network of its own, trained in the guide stage (ldm.guide_channels)."""
        return self.config.guide_channels > 0

    @property
    def ema_held(self) -> tuple[str, ...]:
        """Parameter name prefixes the EMA leaves as they are this stage: in the guide stage, the denoiser's (trained
        no more, its average stays the diffusion stage's)."""
        return ("denoiser.",) if self.stage == "guide" else ()

    @property
    def ready_guide(self) -> UNet | None:
        """The autoguidance guide once the trainer has set it (freeze_guide); None before it, and without
        ldm.guide_steps."""
        return self.guide if hasattr(self, "guide") and bool(self.guide_ready > 0) else None

    @torch.no_grad()
    def freeze_guide(self, denoiser: UNet) -> None:
        """Make the guide a copy of `denoiser`'s weights (the EMA denoiser at diffusion step ldm.guide_steps; not for
        a smaller guide of its own, which the guide stage trains)."""
        self.guide.load_state_dict(denoiser.state_dict())
        self.guide_ready.fill_(1.0)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"autoencoder": list(self.autoencoder.parameters()), "denoiser": list(self.denoiser.parameters())}
        if hasattr(self, "discriminator"):
            groups["discriminator"] = list(self.discriminator.parameters())
        if self.trains_guide:
            groups["guide"] = list(self.guide.parameters())
        return groups

    # -- stage 1 -----------------------------------------------------------------------------------
    def autoencoder_loss(self, x0: torch.Tensor, generator: torch.Generator | None, rows: BatchSlice | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, reconstruction, kl, x̂): reconstruction + kl_weight · kl of x̂, the decoded z ~ q(z | x) (z = μ
        when kl_weight is 0), batch means; ε drawn from `generator`."""
        mean, logvar = self.autoencoder.encoder(x0)
        weight = self.config.kl_weight
        z = reparameterize(mean, logvar, randn(mean.shape, generator, x0.device, rows=rows)) if weight > 0 else mean
        decoded = self.autoencoder.decoder(z)
        reconstruction = reconstruction_loss(x0, decoded, self.config.reconstruction)
        kl = latent_kl(mean, logvar)
        return reconstruction + weight * kl, reconstruction, kl, decoded

    def autoencoder_phases(self, x0: torch.Tensor, generator: torch.Generator | None,
                           rows: BatchSlice | None = None) -> Iterator[Phase]:
        """Stage 1's phases: the autoencoder's (with the adversarial term when `adversarial`), then the
        discriminator's on x and the reconstructions the autoencoder's phase made (before its update)."""
        loss, reconstruction, kl, decoded = self.autoencoder_loss(x0, generator, rows)
        logs = {"loss_ae": reconstruction.detach(), "loss_kl": kl.detach()}
        if not self.adversarial:
            yield Phase("autoencoder", loss, logs)
            return
        loss_g = -self.discriminator(decoded).mean()
        last_layer = self.autoencoder.decoder.layers[-1].weight
        loss = loss + adaptive_weight(reconstruction, loss_g, last_layer, self.config.adversarial_weight) * loss_g
        yield Phase("autoencoder", loss, {**logs, "loss_g": loss_g.detach()})
        loss_d = hinge_discriminator_loss(self.discriminator(x0), self.discriminator(decoded.detach()))
        yield Phase("discriminator", loss_d, {"loss_d": loss_d.detach()})

    # -- stage 2 -----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """The diffusion model's data: scale · μ(x0), N×noise_shape, with the frozen autoencoder."""
        mean, _ = self.autoencoder.encoder(x0)
        return mean * self.latent_scale

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images decoded from scaled latents, decoder(z / scale) clamped to [-1, 1] (scale 1 before it is measured)."""
        scale = torch.where(self.latent_scale > 0, self.latent_scale, torch.ones_like(self.latent_scale))
        return self.autoencoder.decoder(z / scale).clamp(-1.0, 1.0)

    @torch.no_grad()
    def encode_dataset(self, images: torch.Tensor, random_flip: bool = False, chunk: int = ENCODE_CHUNK
                       ) -> torch.Tensor:
        """The diffusion stage's data: μ(x) · scale of every uint8 N×C×H×W image, N×V×noise_shape float32 where
        `images` are; V = 2 with `random_flip` ([:, 1]: the mirrored image's), else 1. Encoded by the frozen
        autoencoder on the module's device in fixed chunks, so the same bits at the stage's start and after a resume.
        Sets latent_scale from all the unmirrored latents unless it is set already."""
        device, views = model_device(self), []
        for mirrored in (False, True)[:1 + random_flip]:
            parts = (uint8_to_model(part.to(device)) for part in images.split(chunk))
            views.append(torch.cat([self.autoencoder.encoder(x.flip(-1) if mirrored else x)[0].to(images.device)
                                    for x in parts]))
        latents = torch.stack(views, dim=1)
        self.latent_scale.copy_(torch.where(self.latent_scale > 0, self.latent_scale,
                                            latent_scale_of(latents[:, 0]).to(device)))
        return latents.mul_(self.latent_scale.to(latents.device))

    def diffusion_loss(self, z: torch.Tensor, generator: torch.Generator | None, labels: torch.Tensor | None = None,
                       rows: BatchSlice | None = None, network: nn.Module | None = None) -> torch.Tensor:
        """The DDPM loss (diffusion.*) of `network` (default: the denoiser) on a batch of scaled latents `z` (with
        their class labels for a conditional denoiser); t and ε from `generator`."""
        d = self.diffusion
        return diffusion_loss(network or self.denoiser, self.schedule, z, labels, d.prediction, d.loss_weighting,
                              d.min_snr_gamma, generator, rows)

    def training_phases(self, x0: torch.Tensor, generator: torch.Generator | None,
                        labels: torch.Tensor | None = None, rows: BatchSlice | None = None) -> Iterator[Phase]:
        """The current stage's phases: autoencoder_phases' on a batch of images (logs loss_ae, loss_kl; loss_g and
        loss_d when adversarial), or "denoiser" (logs loss), or in the guide stage "guide" (logs loss_guide), on a
        batch of scaled latents, rows of encode_dataset or `encode`. The labels (a conditional model's) go to the
        denoiser only: the autoencoder is unconditional."""
        if self.stage == "autoencoder":
            yield from self.autoencoder_phases(x0, generator, rows)
            return
        if self.stage == "guide":
            loss = self.diffusion_loss(x0, generator, labels, rows, network=self.guide)
            yield Phase("guide", loss, {"loss_guide": loss.detach()})
            return
        loss = self.diffusion_loss(x0, generator, labels, rows)
        yield Phase("denoiser", loss, {"loss": loss.detach()})

    def validation_loss(self, x0: torch.Tensor, generator: torch.Generator | None,
                        labels: torch.Tensor | None = None) -> torch.Tensor:
        """The current stage's training loss on a held-out batch of images: the autoencoder's (without the
        adversarial term, which measures the players, not a fit), then the latent DDPM's on their latents (with their
        labels for a conditional denoiser), the denoiser's in the guide stage too (its val_loss stays one network's)."""
        if self.stage == "autoencoder":
            return self.autoencoder_loss(x0, generator)[0]
        return self.diffusion_loss(self.encode(x0), generator, labels)

    # -- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None, sampling: SamplingSettings | None = None,
                 labels: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                 rows: BatchSlice | None = None) -> torch.Tensor:
        """n images: generate_latents, decoded: N×C×H×W float32 in [-1, 1] on the module's device."""
        return self.decode(self.generate_latents(n, generator, sampling, noise, rows, labels))

    @torch.no_grad()
    def generate_latents(self, n: int, generator: torch.Generator | None, sampling: SamplingSettings | None = None,
                         noise: torch.Tensor | None = None, rows: BatchSlice | None = None,
                         labels: torch.Tensor | None = None) -> torch.Tensor:
        """n scaled latents by `sampling` (default DDIM over all T steps; clip_denoised always off) from `noise` (x_T,
        N×noise_shape, else drawn from `generator`), of classes `labels` for a conditional denoiser (guidance
        sampling.guidance), or autoguided by the ready guide at that w: N×noise_shape float32 on the module's
        device."""
        settings = sampling or SamplingSettings()
        settings = settings.with_(prediction=settings.prediction or self.prediction, clip_denoised=False)
        return sample(self.denoiser, self.schedule, (n, *self.noise_shape), settings, noise=noise, generator=generator,
                      labels=labels, device=model_device(self), rows=rows, guide=self.ready_guide)

    @torch.no_grad()
    def reconstruct(self, x0: torch.Tensor) -> torch.Tensor:
        """decoder(μ(x0)), the autoencoder's reconstruction of images in [-1, 1]: same shape, clamped to [-1, 1]."""
        return self.autoencoder.decoder(self.autoencoder.encoder(x0)[0]).clamp(-1.0, 1.0)
