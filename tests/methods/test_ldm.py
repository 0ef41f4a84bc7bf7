"""The latent DDPM (method=ldm): its autoencoder learns, its sampler recovers an analytic latent Gaussian (guided by
labels or by an autoguidance guide, in closed form), both stages train through the one loop and resume
bit-identically, the guide is the EMA denoiser of its step, it samples through the CLI and ddpmlab.load, and its config
errors are one line."""

import json
import math
import signal

import numpy as np
import pytest
import torch
from torch import nn

import ddpmlab
from ddpmlab import UserError
from ddpmlab.bench import bench_sample, bench_train
from ddpmlab.cli import main
from ddpmlab.config import DiffusionConfig, LDMConfig, load_config
from ddpmlab.data import load_dataset, pick_views, to_model_batch
from ddpmlab.diffusion import NoiseSchedule, gather
from ddpmlab.methods import LDM, build_method, images_seen, trained_parameters, training_stage
from ddpmlab.methods.ldm import (adaptive_weight, hinge_discriminator_loss, latent_kl, latent_scale_of,
                                 reconstruction_loss)
from ddpmlab.nets.autoencoder import PatchDiscriminator
from ddpmlab.nets import UNet
from ddpmlab.samplers import SamplingSettings
from ddpmlab.store.metrics_csv import read_metrics
from ddpmlab.train import Trainer

TINY = ["method=ldm", "ldm.autoencoder_steps=6", "ldm.ae_channels=8", "ldm.factor=4", "train.steps=12",
        "train.log_every=2", "train.checkpoint_every=4", "train.sample_every=100", "sample.steps=4"]
TIMINGS = ("images_per_s", "wall_s", "other_load")


def tiny(*overrides):
    return load_config("tiny", [*TINY, *overrides])


def _states_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


# -- the pieces ------------------------------------------------------------------------------------
def test_reconstruction_kl_and_scale_follow_their_formulas():
    x, y = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.5, 0.0]])
    assert reconstruction_loss(x, y, "l1").item() == pytest.approx(0.75)  # (0.5 + 1) / 2
    assert reconstruction_loss(x, y, "mse").item() == pytest.approx(0.625)  # (0.25 + 1) / 2
    mean, logvar = torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 3)
    assert latent_kl(mean, logvar).item() == 0.0
    assert latent_kl(mean + 1, logvar).item() == pytest.approx(0.5)  # ½ μ² per element
    latents = torch.randn(64, 4, 7, 7, generator=torch.Generator().manual_seed(0)) * 3.0
    assert latent_scale_of(latents).item() == pytest.approx(1 / 3.0, rel=0.02)


def test_the_hinge_loss_and_the_adaptive_weight_follow_their_formulas():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 1.0])
    # real: max(0, 1 − d) = 0, 0.5, 2; fake: max(0, 1 + d) = 0, 1, 2
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(2.5 / 3 + 3 / 3)
    weight = torch.tensor([1.0, 2.0], requires_grad=True)
    rec, gen = (weight * torch.tensor([3.0, 4.0])).sum(), (weight * torch.tensor([0.6, 0.8])).sum()
    # ∇rec = (3, 4), ‖·‖ = 5; ∇gen = (0.6, 0.8), ‖·‖ = 1: λ = δ · 5 / (1 + 1e-4)
    assert adaptive_weight(rec, gen, weight, 0.5).item() == pytest.approx(0.5 * 5 / (1 + 1e-4))
    assert not adaptive_weight(rec, gen, weight, 0.5).requires_grad
    flat = (weight * 0.0).sum() + 1.0  # no pull from the adversary: λ clamps at 1e4 instead of dividing by 0
    assert adaptive_weight(rec, flat, weight, 1.0).item() == pytest.approx(1e4)


def test_the_patch_discriminator_gives_a_logit_per_patch_and_only_with_an_adversarial_weight():
    assert PatchDiscriminator(1, 8)(torch.zeros(2, 1, 28, 28)).shape == (2, 1, 6, 6)
    assert PatchDiscriminator(3, 8)(torch.zeros(2, 3, 16, 16)).shape == (2, 1, 3, 3)
    plain, adversarial = build_method(tiny(), 3, 16), build_method(tiny("ldm.adversarial_weight=0.5"), 3, 16)
    assert not hasattr(plain, "discriminator") and "loss_d" not in plain.LOGS
    assert set(adversarial.parameter_groups()) == {"autoencoder", "denoiser", "discriminator"}
    assert adversarial.LOGS[-2:] == ("loss_g", "loss_d") and "loss_d" not in LDM.LOGS
    # a spec written before the adversarial term (and ae_groups) rebuilds the same network, without a discriminator
    old = {key: value for key, value in plain.spec.items()
           if key not in ("adversarial_weight", "disc_channels", "guide_steps", "ae_groups", "guide_channels")}
    rebuilt = LDM.from_spec(old, plain.schedule, plain.diffusion)
    assert not hasattr(rebuilt, "discriminator") and not hasattr(rebuilt, "guide") and rebuilt.spec == plain.spec
    rebuilt.load_state_dict(plain.state_dict())


def test_the_autoencoder_maps_28_pixels_to_7_latents_and_back():
    config = load_config("cpu-demo-latent", ["ldm.ae_channels=8"])
    net = build_method(config, 1, 28)
    assert net.noise_shape == (8, 7, 7) and net.image_shape == (1, 28, 28)
    mean, logvar = net.autoencoder.encoder(torch.zeros(2, 1, 28, 28))
    assert mean.shape == logvar.shape == (2, 8, 7, 7)
    assert net.autoencoder.decoder(mean).shape == (2, 1, 28, 28)
    assert net(mean, torch.tensor([0, 5])).shape == (2, 8, 7, 7)  # the denoiser pads 7 to 8 and crops back


def test_the_autoencoders_groupnorm_takes_ldm_ae_groups():
    def groups(net):
        return sorted((m.num_groups, m.num_channels) for m in net.autoencoder.modules() if isinstance(m, nn.GroupNorm))
    default = build_method(load_config("cpu-demo-latent", ["ldm.ae_channels=16", "ldm.ae_groups=32"]), 1, 28)
    eight = build_method(load_config("cpu-demo-latent", ["ldm.ae_channels=16", "ldm.ae_groups=8"]), 1, 28)
    assert set(groups(default)) == {(16, 16), (32, 32), (32, 64)}  # one channel a group at 16 and 32 channels
    assert set(groups(eight)) == {(8, 16), (8, 32), (8, 64)} and len(groups(eight)) == len(groups(default))
    assert eight.spec["ae_groups"] == 8
    assert LDM.from_spec(eight.spec, eight.schedule, eight.diffusion).spec == eight.spec
    # the same weights, other statistics: a different function of the image
    eight.autoencoder.load_state_dict(default.autoencoder.state_dict())
    x = torch.linspace(-1, 1, 2 * 28 * 28).view(2, 1, 28, 28)
    assert not torch.allclose(default.autoencoder.encoder(x)[0], eight.autoencoder.encoder(x)[0])


def test_the_autoencoder_round_trip_improves_on_a_fixed_batch():
    """80 Adam steps of the autoencoder's phase on one batch of 16 shapes at least halve its L1 reconstruction error
    (0.57 -> 0.23 when written)."""
    torch.manual_seed(0)
    config = tiny("ldm.ae_channels=16")
    net = build_method(config, 3, 16)
    x0 = to_model_batch(load_dataset(config.data, "train").images[:16], False, None)
    optimizer = torch.optim.Adam(net.autoencoder.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    before = reconstruction_loss(x0, net.reconstruct(x0), "l1").item()
    for _ in range(80):
        phase = next(net.training_phases(x0, generator))
        assert phase.group == "autoencoder"
        optimizer.zero_grad()
        phase.loss.backward()
        optimizer.step()
    after = reconstruction_loss(x0, net.reconstruct(x0), "l1").item()
    assert after < 0.5 * before, (before, after)


# -- stage 2: the analytic latent Gaussian -----------------------------------------------------------
M, S = 0.1, 0.3  # latents z ~ N(M, S²) elementwise


class ExactLatentEps(torch.nn.Module):
    """ε*(z_t, t) = √(1−ᾱ_t) / (ᾱ_t s² + 1 − ᾱ_t) · (z_t − √ᾱ_t m): the exact predictor of N(m, s²) latents."""

    def __init__(self, schedule: NoiseSchedule, latent_channels: int, latent_size: int):
        super().__init__()
        self.schedule = schedule
        self.spec = UNet(in_channels=latent_channels, channels=8, channel_mult=(1,), attention_resolutions=(),
                         groups=8, image_size=latent_size).spec

    def forward(self, z, t, labels=None):
        a = gather(self.schedule.alphas_cumprod, t, z)
        return (1 - a).sqrt() / (a * S**2 + 1 - a) * (z - a.sqrt() * M)


def _gaussian_ldm():
    """An LDM whose denoiser is the exact ε of N(M, S²) latents and whose decoder is a fixed linear map, 2× the
    latent at latent scale 0.5 (decode: 2 · z / 0.5 = 4z, per channel summed into one pixel channel)."""
    schedule = NoiseSchedule.linear(1000)
    section = LDMConfig(factor=1, latent_channels=2, ae_channels=8)
    net = LDM(1, 4, section, ExactLatentEps(schedule, 2, 4), schedule, DiffusionConfig())
    net.latent_scale.fill_(0.5)
    decoder = torch.nn.Conv2d(2, 1, 1, bias=False)
    torch.nn.init.constant_(decoder.weight, 1.0)
    net.autoencoder.decoder = decoder  # a fixed linear decoder: pixel = z₁/scale + z₂/scale
    return net


@pytest.mark.parametrize("settings", [SamplingSettings("ddim", 1000), SamplingSettings("dpm-solver++", 20)])
def test_the_latent_sampler_recovers_the_gaussian_and_the_decoder_maps_it(settings):
    """Latents N(M, S²) through z / 0.5 summed over 2 channels: pixels N(4M, 8S²) = N(0.4, 0.72), before clamping."""
    net = _gaussian_ldm().eval()
    z = torch.randn(5000, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    latents = net.generate_latents(5000, None, settings, noise=z)
    assert latents.mean().item() == pytest.approx(M, abs=0.01) and latents.std().item() == pytest.approx(S, abs=0.01)
    decoded = net.autoencoder.decoder(latents / 0.5)
    torch.testing.assert_close(net.generate(5000, None, settings, noise=z), decoded.clamp(-1, 1))
    raw = decoded.flatten()  # the latent tolerance 0.01 carried through the decoder: × 4 on the mean, × 2√2 on the std
    assert raw.mean().item() == pytest.approx(4 * M, abs=0.04)
    assert raw.std().item() == pytest.approx(math.sqrt(8) * S, abs=0.03)


def test_a_wrong_latent_predictor_fails_the_same_check():
    net = _gaussian_ldm().eval()
    net.latent_scale.fill_(0.25)  # decoded with the wrong scale: twice the spread
    z = torch.randn(5000, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    raw = net.autoencoder.decoder(net.generate_latents(5000, None, SamplingSettings("ddim", 100), noise=z) / 0.25)
    raw = raw.flatten()
    assert abs(raw.std().item() - math.sqrt(8) * S) > 0.5


class ClassLatentEps(torch.nn.Module):
    """The exact ε of class c's latents N(means[c], S²); label 2 (the null label) is N(0, S²)."""

    null_label, num_classes = 2, 2

    def __init__(self, schedule, means=(0.1, -0.2)):
        super().__init__()
        self.schedule, self.means = schedule, torch.tensor([*means, 0.0])
        self.spec = UNet(in_channels=2, channels=8, channel_mult=(1,), attention_resolutions=(), groups=8,
                         image_size=4, num_classes=2).spec

    def forward(self, z, t, labels=None):
        a = gather(self.schedule.alphas_cumprod, t, z)
        labels = torch.full((len(z),), self.null_label) if labels is None else labels
        return (1 - a).sqrt() / (a * S**2 + 1 - a) * (z - a.sqrt() * self.means[labels].reshape(-1, 1, 1, 1))


@pytest.mark.parametrize("settings", [SamplingSettings("dpm-solver++", 20, guidance=1.5),
                                      SamplingSettings("ddim", 1000, guidance=0.0)])
def test_class_conditional_latents_are_the_analytically_guided_gaussians(settings):
    """ε is affine in the class mean, so (1 + w) ε_c − w ε_∅ is the exact ε of N((1 + w) m_c, S²) when ∅'s mean is 0:
    each class's latents must have that mean and spread, and the images must be their decoding."""
    schedule = NoiseSchedule.linear(1000)
    net = LDM(1, 4, LDMConfig(factor=1, latent_channels=2, ae_channels=8), ClassLatentEps(schedule), schedule,
              DiffusionConfig()).eval()
    net.latent_scale.fill_(0.5)
    assert net.num_classes == 2
    labels, w = torch.tensor([0, 1] * 1500), settings.guidance
    z = torch.randn(3000, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    latents = net.generate_latents(3000, None, settings, noise=z, labels=labels)
    for c, m in enumerate((0.1, -0.2)):
        assert latents[c::2].mean().item() == pytest.approx((1 + w) * m, abs=0.01)
        assert latents[c::2].std().item() == pytest.approx(S, abs=0.01)
    torch.testing.assert_close(net.generate(3000, None, settings, labels=labels, noise=z), net.decode(latents))


class ShiftedLatentEps(ExactLatentEps):
    """The exact ε of N(m, S²) latents for another mean m: a guide that has learnt the data's mean wrong."""

    def __init__(self, schedule: NoiseSchedule, m: float):
        super().__init__(schedule, 2, 4)
        self.m = m

    def forward(self, z, t, labels=None):
        a = gather(self.schedule.alphas_cumprod, t, z)
        return (1 - a).sqrt() / (a * S**2 + 1 - a) * (z - a.sqrt() * self.m)


def _autoguided_ldm(guide_mean: float) -> LDM:
    """_gaussian_ldm's exact denoiser of N(M, S²) with a ready guide that is exact for N(guide_mean, S²)."""
    schedule = NoiseSchedule.linear(1000)
    net = LDM(1, 4, LDMConfig(factor=1, latent_channels=2, ae_channels=8, guide_steps=1),
              ExactLatentEps(schedule, 2, 4), schedule, DiffusionConfig())
    net.guide = ShiftedLatentEps(schedule, guide_mean)
    net.guide_ready.fill_(1.0)
    net.latent_scale.fill_(0.5)
    return net.eval()


@pytest.mark.parametrize("settings", [SamplingSettings("dpm-solver++", 20, guidance=1.5),
                                      SamplingSettings("ddim", 1000, guidance=0.5)])
def test_autoguided_latents_are_the_analytically_guided_gaussian(settings):
    """ε is affine in the mean, so (1 + w) ε_M − w ε_m' is the exact ε of N((1 + w) M − w m', S²): autoguidance moves
    the samples away from the guide's mean, by w times the gap, at the same spread; w 0 leaves the model alone."""
    net, w = _autoguided_ldm(-0.1), settings.guidance
    z = torch.randn(5000, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    latents = net.generate_latents(5000, None, settings, noise=z)
    assert latents.mean().item() == pytest.approx((1 + w) * M - w * -0.1, abs=0.01)  # 0.4 at w 1.5, 0.2 at 0.5
    assert latents.std().item() == pytest.approx(S, abs=0.01)
    unguided = net.generate_latents(5000, None, settings.with_(guidance=0.0), noise=z)
    assert unguided.mean().item() == pytest.approx(M, abs=0.01)
    assert settings.nfe(1000, autoguided=True) == 2 * settings.nfe(1000) == 2 * settings.steps
    assert settings.with_(guidance=0.0).nfe(1000, autoguided=True) == settings.steps


def test_a_guide_equal_to_the_model_changes_nothing_and_an_unset_guide_is_not_used():
    net = _autoguided_ldm(M)  # the guide knows what the model knows: nothing to steer away from
    z = torch.randn(200, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    settings = SamplingSettings("dpm-solver++", 10)
    plain = net.generate_latents(200, None, settings, noise=z)
    torch.testing.assert_close(net.generate_latents(200, None, settings.with_(guidance=2.0), noise=z), plain)
    net = _autoguided_ldm(-0.1)
    net.guide_ready.zero_()  # not set yet (before diffusion step ldm.guide_steps): unguided
    torch.testing.assert_close(net.generate_latents(200, None, settings.with_(guidance=2.0), noise=z), plain)


# -- stages in the trainer ------------------------------------------------------------------------
def test_stages_split_train_steps_with_their_own_rates():
    config = tiny("ldm.ae_lr=3e-3", "train.lr=1e-3")
    first, last = training_stage(config, 0), training_stage(config, 5)
    assert first == last and (last.name, last.first, last.end, last.lr, last.batch_size) == ("autoencoder", 0, 6, 3e-3, 16)
    stage = training_stage(config, 6)
    assert (stage.name, stage.first, stage.end, stage.lr) == ("diffusion", 6, 12, 1e-3)
    assert training_stage(tiny("ldm.ae_batch_size=8"), 0).batch_size == 8


def test_images_seen_sums_each_stages_steps_times_its_batch():
    config = tiny("ldm.ae_batch_size=8")  # 6 autoencoder steps of 8, then 6 diffusion steps of 16
    assert [images_seen(config, n) for n in (0, 4, 6, 9, 12)] == [0, 32, 48, 96, 144]
    assert images_seen(load_config("tiny", ["train.batch_size=16"]), 5) == 5 * 16


def test_the_diffusion_stage_data_is_every_training_image_encoded_once_in_fixed_chunks():
    """encode_dataset gives μ(x) · scale of each image (the mirrored image's too with random_flip), the same in any
    chunking, and measures the scale once: 1/std of all the unmirrored latents."""
    torch.manual_seed(0)
    net = build_method(tiny(), 3, 16).eval()
    images = load_dataset(tiny().data, "train").images[:10]
    x = to_model_batch(images, False, None)
    views = net.encode_dataset(images, random_flip=True, chunk=3)
    assert views.shape == (10, 2, 4, 4, 4)
    scale = net.latent_scale.clone()
    mean = net.autoencoder.encoder(x)[0].detach()
    assert scale.item() == pytest.approx(1 / mean.std().item(), rel=1e-5)
    torch.testing.assert_close(views[:, 0], mean * scale, rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(views[:, 1], net.autoencoder.encoder(x.flip(-1))[0].detach() * scale,
                               rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(net.encode_dataset(images, chunk=500)[:, 0], views[:, 0], rtol=1e-4, atol=2e-5)
    assert torch.equal(net.latent_scale, scale)  # measured once; a second encoding keeps it
    torch.testing.assert_close(net.encode(x), views[:, 0], rtol=1e-4, atol=2e-5)


def test_encoded_views_are_picked_with_the_same_flip_draws_as_images():
    """pick_views of (x, mirrored x) draws exactly what to_model_batch draws from the same generator state."""
    images = load_dataset(tiny().data, "train").images[:32]
    x = to_model_batch(images, False, None)
    views = torch.stack([x, x.flip(-1)], dim=1)
    first, second = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    flipped = to_model_batch(images, True, first)
    assert torch.equal(pick_views(views, True, second), flipped) and not torch.equal(flipped, x)
    assert torch.equal(first.get_state(), second.get_state())
    assert torch.equal(pick_views(views[:, :1], False, None), x)


class InterruptedTrainer(Trainer):
    """Sends itself SIGINT after step `stop_at`: the loop saves a checkpoint and returns, as for Ctrl-C."""
    stop_at = None

    def after_step(self, lr, bar):
        super().after_step(lr, bar)
        if self.step == self.stop_at:
            signal.raise_signal(signal.SIGINT)


def _trained(tmp_path_factory, name: str, *overrides) -> Trainer:
    """A Trainer that has run tiny(*overrides) to the end in a module-wide temporary folder `name`."""
    trainer = Trainer(tiny(*overrides), tmp_path_factory.mktemp(name) / "run", progress=False)
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return _trained(tmp_path_factory, "straight")


def _rows_without_timings(path):
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in read_metrics(path)]


@pytest.mark.parametrize("stop_at", [3, 6, 8], ids=["in-stage-1", "at-the-switch", "in-stage-2"])
def test_an_interrupted_ldm_run_resumes_bit_identically(straight, tmp_path, stop_at):
    InterruptedTrainer.stop_at = stop_at
    first = InterruptedTrainer(tiny(), tmp_path / "run", progress=False)
    assert first.train()["interrupted"] and first.step == stop_at
    resumed = Trainer.resume(tmp_path / "run", progress=False)
    assert resumed.step == stop_at
    resumed.train()
    _states_equal(straight.model.state_dict(), resumed.model.state_dict())
    _states_equal(straight.ema.shadow.state_dict(), resumed.ema.shadow.state_dict())
    for group, optimizer in straight.optimizers.items():
        _states_equal(optimizer.state_dict()["state"][0], resumed.optimizers[group].state_dict()["state"][0])
    # an interruption between log lines logs its own row, and the next row means the steps after it only
    split = {stop_at, stop_at + 1} if stop_at % 2 else set()
    rows = [r for r in _rows_without_timings(tmp_path / "run" / "metrics.csv") if r["step"] not in split]
    assert rows == [r for r in _rows_without_timings(straight.run_dir / "metrics.csv") if r["step"] not in split]


def test_an_ldm_run_with_random_flips_resumes_bit_identically_in_stage_2(tmp_path):
    """With data.random_flip the diffusion stage trains on both views' latents; a resume re-encodes the same bits."""
    config = tiny("data.random_flip=true")
    straight_run = Trainer(config, tmp_path / "straight", progress=False)
    straight_run.train()
    InterruptedTrainer.stop_at = 9
    first = InterruptedTrainer(config, tmp_path / "run", progress=False)
    assert first.train()["interrupted"]
    resumed = Trainer.resume(tmp_path / "run", progress=False)
    resumed.train()
    assert resumed.stage_data.shape[1] == 2
    _states_equal(straight_run.model.state_dict(), resumed.model.state_dict())
    _states_equal(straight_run.ema.shadow.state_dict(), resumed.ema.shadow.state_dict())


ADVERSARIAL = ("ldm.adversarial_weight=0.5", "ldm.adversarial_start=2", "ldm.disc_channels=8")


@pytest.fixture(scope="module")
def adversarial(tmp_path_factory):
    return _trained(tmp_path_factory, "adversarial", *ADVERSARIAL)


def _resumes_like(reference: Trainer, overrides, run_dir, stop_at: int) -> None:
    """A run of tiny(*overrides) interrupted after step `stop_at` and resumed ends with the uninterrupted
    `reference`'s model, EMA network and every optimizer's state, bit for bit."""
    InterruptedTrainer.stop_at = stop_at
    first = InterruptedTrainer(tiny(*overrides), run_dir, progress=False)
    assert first.train()["interrupted"] and first.step == stop_at
    resumed = Trainer.resume(run_dir, progress=False)
    resumed.train()
    _states_equal(reference.model.state_dict(), resumed.model.state_dict())
    _states_equal(reference.ema.shadow.state_dict(), resumed.ema.shadow.state_dict())
    for group, optimizer in reference.optimizers.items():
        _states_equal(optimizer.state_dict()["state"][0], resumed.optimizers[group].state_dict()["state"][0])


@pytest.mark.parametrize("stop_at", [1, 4], ids=["before-the-adversary", "with-the-adversary"])
def test_an_adversarial_ldm_run_resumes_bit_identically(adversarial, tmp_path, stop_at):
    _resumes_like(adversarial, ADVERSARIAL, tmp_path / "run", stop_at)


def test_the_adversary_trains_from_its_start_step_and_changes_the_autoencoder(adversarial, straight):
    """The discriminator's phase runs from ldm.adversarial_start (0-based step 2, so in the rows of steps 4 and 6
    only); the term changes the autoencoder the same seed trains without it; the diffusion stage ignores D."""
    rows = {r["step"]: r for r in read_metrics(adversarial.run_dir / "metrics.csv")}
    assert rows[2]["loss_d"] is None and rows[2]["loss_g"] is None and rows[2]["grad_norm_discriminator"] is None
    for step in (4, 6):
        assert rows[step]["loss_d"] > 0 and rows[step]["grad_norm_discriminator"] > 0
        assert rows[step]["loss_g"] is not None and rows[step]["loss_ae"] is not None
    assert all(r["loss_d"] is None and r["grad_norm_discriminator"] is None for s, r in rows.items() if s > 6)
    plain, trained = straight.model.state_dict(), adversarial.model.state_dict()
    assert not torch.equal(plain["autoencoder.decoder.layers.0.weight"], trained["autoencoder.decoder.layers.0.weight"])
    untrained = build_method(tiny(*ADVERSARIAL), 3, 16).discriminator.state_dict()
    assert any(not torch.equal(value, trained[f"discriminator.{name}"]) for name, value in untrained.items())
    pipe = ddpmlab.load(adversarial.run_dir)
    assert hasattr(pipe.net, "discriminator") and pipe.sample(2, sampler="ddim", steps=3).shape == (2, 3, 16, 16)


def test_the_straight_run_logs_each_stage_and_keeps_the_scale_and_autoencoder(straight):
    rows = read_metrics(straight.run_dir / "metrics.csv")
    stage1, stage2 = [r for r in rows if r["step"] <= 6], [r for r in rows if r["step"] > 6]
    assert all(r["loss_ae"] is not None and r["loss_kl"] is not None and r["loss"] is None for r in stage1)
    assert all(r["loss"] is not None and r["loss_ae"] is None for r in stage2)
    assert all(r["grad_norm_autoencoder"] is not None and r["grad_norm_denoiser"] is None for r in stage1)
    assert all(r["grad_norm_denoiser"] is not None and r["grad_norm_autoencoder"] is None for r in stage2)
    scale = straight.model.latent_scale.item()
    assert scale > 0 and straight.ema.shadow.latent_scale.item() == scale
    model, ema = straight.model.state_dict(), straight.ema.shadow.state_dict()
    autoencoder = [name for name in model if name.startswith("autoencoder.")]
    assert all(torch.equal(model[name], ema[name]) for name in autoencoder)  # the EMA holds the trained autoencoder
    assert any(not torch.equal(model[name], ema[name]) for name in model if name.startswith("denoiser."))


# -- sampling through the CLI and ddpmlab.load ------------------------------------------------------
def test_a_tiny_ldm_samples_through_the_cli_and_ddpmlab_load(straight, tmp_path, capsys):
    out = tmp_path / "samples.npz"
    assert main(["sample", str(straight.run_dir), "--out", str(out), "--n", "6", "--sampler", "dpm-solver++",
                 "--steps", "5", "--seed", "3"]) == 0
    images = np.load(out)["images"]
    assert images.shape == (6, 16, 16, 3) and images.dtype == np.uint8 and images.std() > 0
    pipe = ddpmlab.load(straight.run_dir)
    again = pipe.sample(6, sampler="dpm-solver++", steps=5, seed=3)
    assert again.shape == (6, 3, 16, 16) and again.abs().max() <= 1
    np.testing.assert_array_equal(((again + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
                                  .numpy(), images)
    z = torch.randn(2, *pipe.noise_shape)
    assert pipe.noise_shape == (4, 4, 4)
    out = pipe.denoise(z, 50)
    torch.testing.assert_close(out, pipe.net.denoiser(z, torch.full((2,), 50)))
    with pytest.raises(UserError, match="x_t must be a N×4×4×4"):
        pipe.denoise(torch.zeros(2, 3, 16, 16), 50)


def test_nll_of_an_ldm_is_a_one_line_error(straight, tmp_path, capsys):
    assert main(["eval", str(straight.run_dir), "--metrics", "nll", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "latent" in err


# -- class-conditional ----------------------------------------------------------------------------------------
CONDITIONAL = ["model.conditional=true", "model.class_dropout=0.2", "sample.guidance=1.0"]
LABELS = [0, 0, 1, 1, 2, 2, 3, 3]  # --per-class --n 2 of the synthetic shapes' 4 classes


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    return _trained(tmp_path_factory, "conditional", *CONDITIONAL)


def test_a_conditional_ldm_trains_its_denoiser_on_the_labels_and_resumes_bit_identically(conditional, tmp_path):
    net = conditional.model
    assert net.num_classes == 4 and net.denoiser.label_emb is not None
    z = net.encode(torch.zeros(4, 3, 16, 16))
    losses = [net.diffusion_loss(z, torch.Generator().manual_seed(0), torch.tensor(labels)).item()
              for labels in ([0, 1, 2, 3], [4, 4, 4, 4])]  # 4: the null label
    assert losses[0] != losses[1]
    InterruptedTrainer.stop_at = 6  # at the switch: the denoiser untrained
    first = InterruptedTrainer(tiny(*CONDITIONAL), tmp_path / "run", progress=False)
    assert first.train()["interrupted"]
    untrained = first.model.denoiser.label_emb.weight[:4].clone()
    resumed = Trainer.resume(tmp_path / "run", progress=False)
    resumed.train()
    _states_equal(conditional.model.state_dict(), resumed.model.state_dict())
    _states_equal(conditional.ema.shadow.state_dict(), resumed.ema.shadow.state_dict())
    # the classes' embeddings learn in stage 2 only if the trainer passes the batches' labels (else all are null)
    assert not torch.equal(untrained, net.denoiser.label_emb.weight[:4])


def test_the_autoencoder_stage_draws_no_labels(tmp_path):
    """Stage 1 ignores labels, so a conditional LDM's run draws the same batches, flips and noise there as an
    unconditional one: the generator is in the same state at the switch."""
    states = []
    for name, extra in (("plain", []), ("conditional", CONDITIONAL)):
        InterruptedTrainer.stop_at = 6
        trainer = InterruptedTrainer(tiny(*extra), tmp_path / name, progress=False)
        assert trainer.train()["interrupted"]
        states.append(trainer.generator.get_state())
    assert torch.equal(*states)


def test_a_conditional_ldm_samples_each_class_through_the_cli_ddpmlab_load_and_eval(conditional, tmp_path, capsys):
    out = tmp_path / "grid.npz"
    assert main(["sample", str(conditional.run_dir), "--out", str(out), "--per-class", "--n", "2", "--sampler",
                 "dpm-solver++", "--steps", "4", "--guidance", "2", "--seed", "1"]) == 0
    images = np.load(out)["images"]
    assert images.shape == (8, 16, 16, 3)
    pipe = ddpmlab.load(conditional.run_dir)
    again = pipe.sample(8, sampler="dpm-solver++", steps=4, seed=1, labels=LABELS, guidance=2.0)
    np.testing.assert_array_equal(((again + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
                                  .numpy(), images)
    unguided = pipe.sample(8, sampler="dpm-solver++", steps=4, seed=1, labels=LABELS, guidance=0.0)
    assert not torch.equal(unguided, again)
    # eval at the run's own guidance (named or not) and at another: the w recorded, another name for another w
    names = []
    for extra in ([], ["--guidance", "1"], ["--guidance", "3"]):
        assert main(["eval", str(conditional.run_dir), "--n", "8", "--ref-n", "8", "--metrics", "speed", "--sampler",
                     "ddim", "--steps", "3", "--out", str(tmp_path / "e"), "--quiet", *extra]) == 0
        written = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("wrote ")
        names.append(written)
        assert json.loads(open(written).read())["settings"]["guidance"] == float(extra[1] if extra else 1)
    assert names[1] == names[0] and names[2] == names[0].replace(".json", "-w3.json")


def test_guidance_of_an_unconditional_ldm_is_a_one_line_error(straight, tmp_path, capsys):
    assert main(["eval", str(straight.run_dir), "--guidance", "2", "--n", "4", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "class-conditional" in err and "ldm.guide_steps" in err
    assert main(["eval", str(straight.run_dir), "--guidance", "-1", "--n", "4", "--out", str(tmp_path / "e")]) == 2
    assert "--guidance must be" in capsys.readouterr().err
    assert main(["sample", str(straight.run_dir), "--guidance-interval", "0.5,5",
                 "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --guidance-interval needs a class-conditional model") and "\n" not in err


GUIDED = ("ldm.guide_steps=2", "sample.guidance=1.0")  # the guide: the EMA denoiser after step 6 + 2 = 8


@pytest.fixture(scope="module")
def guided(tmp_path_factory):
    return _trained(tmp_path_factory, "guided", *GUIDED)


def test_the_guide_is_the_ema_denoiser_at_its_step_and_changes_no_training(guided, straight):
    """Training with a guide draws and learns exactly what training without one does; the guide (in the model and
    in the EMA network) is the EMA denoiser of diffusion step 2, global step 8, and stays frozen after it."""
    model, ema = guided.model.state_dict(), guided.ema.shadow.state_dict()
    _states_equal({k: v for k, v in model.items() if not k.startswith("guide")}, straight.model.state_dict())
    _states_equal({k: v for k, v in ema.items() if not k.startswith("guide")}, straight.ema.shadow.state_dict())
    at_8 = ddpmlab.load(straight.run_dir / "checkpoints" / "step_0000008").net.denoiser.state_dict()
    for net in (guided.model, guided.ema.shadow):
        assert net.guide_ready.item() == 1.0 and not any(p.requires_grad for p in net.guide.parameters())
        _states_equal(net.guide.state_dict(), at_8)
    assert not all(torch.equal(at_8[k], v) for k, v in guided.ema.shadow.denoiser.state_dict().items())
    before = ddpmlab.load(guided.run_dir / "checkpoints" / "step_0000004").net
    assert before.guide_ready.item() == 0.0 and before.ready_guide is None
    assert set(guided.model.parameter_groups()) == {"autoencoder", "denoiser"}  # the guide has no optimizer
    assert trained_parameters(guided.model) == trained_parameters(straight.model) == \
        sum(p.numel() for p in straight.model.parameters())


@pytest.mark.parametrize("stop_at", [7, 8, 9], ids=["before-the-guide", "at-the-guide", "after-the-guide"])
def test_a_guided_ldm_run_resumes_bit_identically(guided, tmp_path, stop_at):
    _resumes_like(guided, GUIDED, tmp_path / "run", stop_at)


def test_a_guided_ldm_samples_autoguided_through_the_cli_ddpmlab_load_and_eval(guided, straight, tmp_path, capsys):
    """sample.guidance (the run's w, 1) and --guidance W steer away from the guide, calling it at each step: twice the
    network evaluations; w 0 gives the unguided samples."""
    pipe = ddpmlab.load(guided.run_dir)
    settings = dict(sampler="dpm-solver++", steps=4, seed=3)
    own, unguided = pipe.sample(4, **settings), pipe.sample(4, guidance=0.0, **settings)
    assert not torch.equal(own, unguided)
    torch.testing.assert_close(own, pipe.sample(4, guidance=1.0, **settings))
    # the same weights without a guide (the straight run, trained bit-identically) sample the unguided images
    torch.testing.assert_close(unguided, ddpmlab.load(straight.run_dir).sample(4, **settings))
    out = tmp_path / "s.npz"
    assert main(["sample", str(guided.run_dir), "--out", str(out), "--n", "4", "--sampler", "dpm-solver++",
                 "--steps", "4", "--seed", "3", "--guidance", "2"]) == 0
    printed = capsys.readouterr().out
    assert "8 network evaluations" in printed and "guidance 2.0" in printed
    images = torch.from_numpy(np.load(out)["images"]).permute(0, 3, 1, 2)
    expected = pipe.sample(4, guidance=2.0, **settings)
    torch.testing.assert_close(images, ((expected + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
    assert main(["eval", str(guided.run_dir), "--n", "8", "--ref-n", "8", "--metrics", "speed", "--sampler",
                 "dpm-solver++", "--steps", "3", "--out", str(tmp_path / "e"), "--quiet"]) == 0
    written = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("wrote ")
    settings = json.loads(open(written).read())["settings"]
    assert settings["guidance"] == 1.0 and settings["nfe"] == 6


def test_a_guidance_interval_calls_the_guide_only_inside_it_through_the_cli_load_and_eval(guided, tmp_path, capsys):
    """--guidance-interval LO,HI (and pipe.sample's guidance_interval) guide only the steps at σ_t in (LO, HI]: the
    network evaluations are the steps plus the guided ones; an interval holding every step is plain guidance, one
    holding none the unguided sampler; `none` restores every step."""
    from ddpmlab.samplers import SamplingSettings, guided_evaluations
    pipe = ddpmlab.load(guided.run_dir)
    settings = dict(sampler="dpm-solver++", steps=6, seed=3)
    interval = (0.5, 5.0)
    inside = guided_evaluations(pipe.schedule, SamplingSettings("dpm-solver++", 6, guidance=1.0,
                                                                guidance_interval=interval))
    assert 0 < inside < 6
    part = pipe.sample(4, guidance_interval=interval, **settings)
    torch.testing.assert_close(pipe.sample(4, guidance_interval=(0.0, 1e9), **settings), pipe.sample(4, **settings))
    torch.testing.assert_close(pipe.sample(4, guidance_interval=(), **settings), pipe.sample(4, **settings))
    torch.testing.assert_close(pipe.sample(4, guidance_interval=(1e6, 1e7), **settings),
                               pipe.sample(4, guidance=0.0, **settings))
    assert not torch.allclose(part, pipe.sample(4, **settings))
    out = tmp_path / "s.npz"
    assert main(["sample", str(guided.run_dir), "--out", str(out), "--n", "4", "--sampler", "dpm-solver++",
                 "--steps", "6", "--seed", "3", "--guidance-interval", "0.5,5"]) == 0
    printed = capsys.readouterr().out
    assert f"{6 + inside} network evaluations" in printed and "at σ in (0.5, 5]" in printed
    images = torch.from_numpy(np.load(out)["images"]).permute(0, 3, 1, 2)
    torch.testing.assert_close(images, ((part + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
    assert main(["eval", str(guided.run_dir), "--n", "8", "--ref-n", "8", "--metrics", "speed", "--sampler",
                 "dpm-solver++", "--steps", "6", "--guidance-interval", "0.5,5", "--out", str(tmp_path / "e"),
                 "--quiet"]) == 0
    written = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("wrote ")
    assert written.endswith("-gi0.5-5.0.json")
    recorded = json.loads(open(written).read())["settings"]
    assert recorded["guidance_interval"] == [0.5, 5.0] and recorded["nfe"] == 6 + inside
    assert main(["sample", str(guided.run_dir), "--out", str(tmp_path / "all.npz"), "--n", "4", "--sampler",
                 "dpm-solver++", "--steps", "6", "--seed", "3", "--guidance-interval", "none"]) == 0
    assert "12 network evaluations" in capsys.readouterr().out
    assert main(["sample", str(guided.run_dir), "--out", str(tmp_path / "w0.npz"), "--guidance", "0",
                 "--guidance-interval", "0.5,5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --guidance-interval applies to guided sampling") and "\n" not in err
    for bad in ("0.5", "5,0.5", "a,b", "0,inf"):
        with pytest.raises(SystemExit) as exit_:
            main(["sample", str(guided.run_dir), "--out", str(tmp_path / "x.npz"), "--guidance-interval", bad])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "--guidance-interval" in err


def test_a_checkpoint_from_before_the_guide_samples_unguided_and_refuses_guidance(guided, tmp_path, capsys):
    """At step 4 the guide is not set: the run's sample.guidance does not apply (recorded as none, NFE = steps) and
    asking for a w is a one-line error, not samples labelled guided that are not."""
    early = guided.run_dir / "checkpoints" / "step_0000004"
    out = tmp_path / "s.npz"
    assert main(["sample", str(early), "--out", str(out), "--n", "2", "--sampler", "dpm-solver++", "--steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert "3 network evaluations" in printed and "guidance" not in printed
    assert main(["sample", str(early), "--out", str(tmp_path / "t.npz"), "--n", "2", "--guidance", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "none yet" in err
    with pytest.raises(UserError, match="autoguidance guide"):
        ddpmlab.load(early).sample(2, guidance=1.0)
    assert ddpmlab.load(early).sample(2, sampler="ddim", steps=2).shape == (2, 3, 16, 16)


# -- a smaller guide of its own (ldm.guide_channels) -------------------------------------------------
# 6 autoencoder + 6 diffusion steps, as the straight run, then 3 steps of an 8-channel guide (the denoiser has 16)
SMALL_GUIDE = ("ldm.guide_channels=8", "ldm.guide_steps=3", "train.steps=15", "sample.guidance=1.0")


@pytest.fixture(scope="module")
def small_guide(tmp_path_factory):
    return _trained(tmp_path_factory, "small-guide", *SMALL_GUIDE)


def _without_guide(state: dict) -> dict:
    return {name: value for name, value in state.items() if not name.startswith("guide")}


def test_a_smaller_guide_trains_in_its_own_stage_and_changes_nothing_before_it(small_guide, straight):
    """The first 12 steps draw and learn exactly what the straight run's do (building the guide leaves the RNG that
    dropout draws from alone); the guide stage (steps 12 to 14) trains the 8-channel guide alone, leaves the
    denoiser and its average as they were, averages the guide, and sets it ready at the end."""
    assert [training_stage(small_guide.config, step).name for step in (5, 6, 11, 12, 14)] == \
        ["autoencoder", "diffusion", "diffusion", "guide", "guide"]
    _states_equal(_without_guide(small_guide.model.state_dict()), _without_guide(straight.model.state_dict()))
    _states_equal(_without_guide(small_guide.ema.shadow.state_dict()),
                  _without_guide(straight.ema.shadow.state_dict()))
    for group, optimizer in straight.optimizers.items():
        _states_equal(optimizer.state_dict()["state"][0], small_guide.optimizers[group].state_dict()["state"][0])
    model, ema = small_guide.model, small_guide.ema.shadow
    assert model.guide.spec.channels == 8 and model.denoiser.spec.channels == 16
    assert set(model.parameter_groups()) == {"autoencoder", "denoiser", "guide"}
    guide_parameters = sum(p.numel() for p in model.guide.parameters())
    assert 0 < guide_parameters < sum(p.numel() for p in model.denoiser.parameters()) / 2
    assert trained_parameters(model) == trained_parameters(straight.model) + guide_parameters
    at_12 = ddpmlab.load(small_guide.run_dir / "checkpoints" / "step_0000012").net
    assert at_12.guide_ready.item() == 0.0 and at_12.ready_guide is None
    untrained = at_12.guide.state_dict()
    for net in (model, ema):
        assert net.guide_ready.item() == 1.0 and net.ready_guide is net.guide
        changed = [not torch.equal(untrained[k], v) for k, v in net.guide.state_dict().items()]
        assert sum(changed) > len(changed) / 2  # trained (a zero-initialised layer's inputs get no gradient at first)
    assert not all(torch.equal(a, b) for a, b in zip(model.guide.parameters(), ema.guide.parameters()))
    rows = read_metrics(small_guide.run_dir / "metrics.csv")
    assert all(r["loss_guide"] is not None and r["loss"] is None and r["grad_norm_guide"] is not None
               and r["grad_norm_denoiser"] is None for r in rows if r["step"] > 12)
    assert all(r["loss_guide"] is None for r in rows if r["step"] <= 12)


@pytest.mark.parametrize("stop_at", [12, 13], ids=["at-the-guide-stage", "in-the-guide-stage"])
def test_a_run_with_a_smaller_guide_resumes_bit_identically(small_guide, tmp_path, stop_at):
    _resumes_like(small_guide, SMALL_GUIDE, tmp_path / "run", stop_at)


def test_a_finished_run_gains_a_smaller_guide_on_resume_as_if_it_had_planned_one(small_guide, straight, tmp_path):
    """`--resume RUN ldm.guide_channels=8 ldm.guide_steps=3 train.steps=15` on the finished straight run trains the
    guide the planned run trained, bit for bit, and notes it in run.log; a guide whose stage would start before the
    checkpoint's step, or a begun guide stage moved, is refused."""
    import shutil
    run = tmp_path / "run"
    shutil.copytree(straight.run_dir, run)
    overrides = ["ldm.guide_channels=8", "ldm.guide_steps=3", "train.steps=15", "sample.guidance=1.0"]
    with pytest.raises(UserError, match=r"cannot change ldm.guide_steps on --resume .*whole stage lies ahead "
                                        r"\(train.steps - ldm.guide_steps >= 12\)"):
        Trainer.resume(run, ["ldm.guide_channels=8", "ldm.guide_steps=3", "train.steps=14"], progress=False)
    resumed = Trainer.resume(run, overrides, progress=False)
    resumed.train()
    _states_equal(small_guide.model.state_dict(), resumed.model.state_dict())
    _states_equal(small_guide.ema.shadow.state_dict(), resumed.ema.shadow.state_dict())
    for group, optimizer in small_guide.optimizers.items():
        _states_equal(optimizer.state_dict()["state"][0], resumed.optimizers[group].state_dict()["state"][0])
    assert "a new guide: ldm.guide_channels=8" in (run / "run.log").read_text()
    torch.testing.assert_close(ddpmlab.load(run).sample(3, sampler="dpm-solver++", steps=3, seed=1),
                               ddpmlab.load(small_guide.run_dir).sample(3, sampler="dpm-solver++", steps=3, seed=1))
    InterruptedTrainer.stop_at = 13
    assert InterruptedTrainer(tiny(*SMALL_GUIDE), tmp_path / "mid", progress=False).train()["interrupted"]
    with pytest.raises(UserError, match="the run is in its guide stage"):
        Trainer.resume(tmp_path / "mid", ["train.steps=16"], progress=False)
    with pytest.raises(UserError, match="its guide stays"):  # a begun guide stage cannot be replaced either
        Trainer.resume(tmp_path / "mid", ["ldm.guide_channels=16", "ldm.guide_steps=3", "train.steps=16"],
                       progress=False)
    InterruptedTrainer.stop_at = 9  # before the guide stage: shortening the run may not put it behind step 9
    assert InterruptedTrainer(tiny(*SMALL_GUIDE), tmp_path / "early", progress=False).train()["interrupted"]
    with pytest.raises(UserError, match="at step 8, behind the run's step 9: give train.steps >= 12"):
        Trainer.resume(tmp_path / "early", ["train.steps=11"], progress=False)


def test_a_guide_copied_from_the_denoiser_is_replaced_by_a_smaller_one_on_resume(guided, small_guide, tmp_path):
    """The guided run (its guide: the EMA denoiser after diffusion step 2, a copy of the denoiser's shape, set)
    resumed with a smaller guide of its own ends as the run planned with it: the copy and its readiness are dropped,
    the denoiser it trained is kept, and the new guide trains as there."""
    import shutil
    run = tmp_path / "run"
    shutil.copytree(guided.run_dir, run)
    resumed = Trainer.resume(run, ["ldm.guide_channels=8", "ldm.guide_steps=3", "train.steps=15"], progress=False)
    assert resumed.model.guide_ready.item() == 0.0 and resumed.model.guide.spec.channels == 8
    resumed.train()
    _states_equal(small_guide.model.state_dict(), resumed.model.state_dict())
    _states_equal(small_guide.ema.shadow.state_dict(), resumed.ema.shadow.state_dict())


def test_a_smaller_guide_samples_through_the_cli_ddpmlab_load_and_an_export(small_guide, straight, tmp_path,
                                                                          capsys, monkeypatch):
    """The run's w (1) steers away from the small guide at each step: twice the network evaluations, and samples
    other than the unguided ones, which are the straight run's; an exported copy samples the same."""
    pipe = ddpmlab.load(small_guide.run_dir)
    settings = dict(sampler="dpm-solver++", steps=4, seed=3)
    guided, unguided = pipe.sample(4, **settings), pipe.sample(4, guidance=0.0, **settings)
    assert not torch.allclose(guided, unguided)
    torch.testing.assert_close(unguided, ddpmlab.load(straight.run_dir).sample(4, **settings))
    assert main(["sample", str(small_guide.run_dir), "--out", str(tmp_path / "s.npz"), "--n", "4", "--sampler",
                 "dpm-solver++", "--steps", "4", "--seed", "3"]) == 0
    assert "8 network evaluations" in capsys.readouterr().out
    monkeypatch.setenv("DDPMLAB_PRETRAINED_DIR", str(tmp_path / "shipped"))
    assert main(["pretrained", "export", str(small_guide.run_dir), "tiny-ldm-guide"]) == 0
    shipped = ddpmlab.load("pretrained:tiny-ldm-guide")
    assert shipped.net.guide.spec.channels == 8
    torch.testing.assert_close(shipped.sample(4, **settings), guided)


# -- config errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,fragment", [
    (["ldm.factor=3"], "ldm.factor: 3 must be a power of two"),
    (["ldm.autoencoder_steps=12"], "ldm.autoencoder_steps: 12 must be in 1..train.steps-1 (11)"),
    (["ldm.autoencoder_steps=0"], "ldm.autoencoder_steps"),
    (["ldm.reconstruction=lpips"], "ldm.reconstruction: 'lpips' is not one of l1, mse"),
    (["ldm.kl_weight=-1"], "ldm.kl_weight: must be >= 0"),
    (["ldm.latent_channels=0"], "ldm.latent_channels: must be positive"),
    (["ldm.ae_groups=0"], "ldm.ae_groups: must be positive"),
    (["ldm.ae_lr=0"], "ldm.ae_lr: must be positive"),
    (["ldm.adversarial_weight=-1"], "ldm.adversarial_weight: must be >= 0"),
    (["ldm.adversarial_start=6"], "ldm.adversarial_start: 6 must be in 0..ldm.autoencoder_steps-1 (5)"),
    (["ldm.disc_channels=0"], "ldm.disc_channels: must be positive"),
    (["ldm.guide_steps=-1"], "ldm.guide_steps: must be >= 0"),
    (["ldm.guide_steps=6"], "ldm.guide_steps: 6 must be below the 6 diffusion steps"),
    (["ldm.guide_steps=2", "model.conditional=true"], "autoguidance applies to an unconditional denoiser"),
    (["ldm.guide_channels=-1"], "ldm.guide_channels: must be >= 0"),
    (["ldm.guide_channels=8"], "ldm.guide_steps: 0 must be in 1..5 with ldm.guide_channels"),
    (["ldm.guide_channels=8", "ldm.guide_steps=6"], "ldm.guide_steps: 6 must be in 1..5 with ldm.guide_channels"),
    (["ldm.guide_channels=8", "ldm.guide_steps=3", "model.conditional=true"], "and ldm.guide_channels=0"),
    (["ldm.guide_channels=8", "ldm.guide_steps=3", "train.eval_every=4", "train.keep_best=true"],
     "train.keep_best: picks a checkpoint by the denoiser's unguided scores"),
])
def test_bad_ldm_settings_are_one_line_errors(capsys, overrides, fragment):
    assert main(["config", "tiny", *TINY, *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and fragment in err


def test_ldm_keys_with_another_method_and_a_factor_that_does_not_divide_are_errors(capsys):
    assert main(["config", "tiny", "ldm.factor=2"]) == 2
    assert "ldm.factor applies to method=ldm" in capsys.readouterr().err
    with pytest.raises(UserError, match="ldm.factor=8 does not divide the 28×28 images"):
        build_method(load_config("cpu-demo-latent", ["ldm.factor=8"]), 1, 28)


def test_an_exported_ldm_loads_and_samples_like_its_run(straight, tmp_path, monkeypatch):
    monkeypatch.setenv("DDPMLAB_PRETRAINED_DIR", str(tmp_path / "shipped"))
    assert main(["pretrained", "export", str(straight.run_dir), "tiny-ldm"]) == 0
    shipped, run = ddpmlab.load("pretrained:tiny-ldm"), ddpmlab.load(straight.run_dir)
    assert shipped.net.latent_scale.item() == run.net.latent_scale.item() > 0
    torch.testing.assert_close(shipped.sample(4, sampler="ddim", steps=5), run.sample(4, sampler="ddim", steps=5))


def test_bench_times_both_stages_and_the_latent_sampler():
    result = bench_train("tiny", [*TINY, "ldm.ae_batch_size=8"], steps=1, warmup=0, device="cpu")
    assert [(s["stage"], s["batch_size"]) for s in result["stages"]] == [("autoencoder", 8), ("diffusion", 16)]
    assert result["images_per_s"] == result["stages"][1]["images_per_s"] and result["method"] == "ldm"
    assert result["stages"][0]["train_flops_per_image"] != result["stages"][1]["train_flops_per_image"]
    adversarial = bench_train("tiny", [*TINY, "ldm.ae_batch_size=8", *ADVERSARIAL], steps=1, warmup=0, device="cpu")
    # timed with the discriminator's phase and the generator term (7.6% more arithmetic per image than without when
    # written; timed from step 0, before adversarial_start, the two would count the same)
    assert (adversarial["stages"][0]["train_flops_per_image"]
            > 1.05 * result["stages"][0]["train_flops_per_image"])
    guided = bench_train("tiny", [*TINY, *SMALL_GUIDE], steps=1, warmup=0, device="cpu")
    assert [s["stage"] for s in guided["stages"]] == ["autoencoder", "diffusion", "guide"]
    assert guided["images_per_s"] == guided["stages"][1]["images_per_s"]  # the headline: the denoiser's stage
    assert guided["stages"][2]["train_flops_per_image"] < 0.5 * guided["stages"][1]["train_flops_per_image"]
    sampled = bench_sample("tiny", "ddim", 2, TINY, batch_size=2, repeats=1, device="cpu")
    assert sampled["method"] == "ldm" and sampled["nfe"] == 2 and sampled["images_per_s"] > 0
