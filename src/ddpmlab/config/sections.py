"""The config's sections: typed dataclasses whose defaults follow Ho et al. (2020), and the names each key takes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

DATASETS = ("fashion-mnist", "mnist", "cifar10", "sprites", "folder", "synthetic")
SCHEDULES = ("linear", "cosine", "custom")
PREDICTIONS = ("eps", "x0", "v")
LOSS_WEIGHTINGS = ("none", "min-snr")
LR_SCHEDULES = ("constant", "cosine", "linear")
METHODS = ("ddpm", "vae", "dcgan", "vaegan", "ldm")  # `method`: a diffusion model, or a baseline with its own section
RECONSTRUCTIONS = ("pixel", "features")
AE_LOSSES = ("l1", "mse")  # ldm.reconstruction: the autoencoder's per-pixel loss
# A speed switch: on, off, or "auto" (on where it is a known win: see ddpmlab.train.hotpath.resolve_switch)
Switch = Literal["auto", True, False]
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
BAD_IMAGE_POLICIES = ("error", "skip")  # data.on_bad_image: stop at an unreadable image file, or leave it out
EVAL_METRICS = ("fd", "fid")  # train.eval_metrics: classifier FD (fast), Inception FID (slow on a CPU)


@dataclass
class DataConfig:
    name: str = "fashion-mnist"
    root: str | None = None  # where dataset files live or are downloaded to; None: ~/.cache/ddpmlab/data
    path: str | None = None  # sprites: the images .npy; folder: the image folder
    labels_path: str | None = None  # sprites: an optional labels .npy (integer or one-hot)
    image_size: int | None = None  # resize to this square size; None keeps the native size
    random_flip: bool = False
    val_fraction: float = 0.02  # held out of the training split for the validation loss
    limit: int | None = None  # use only the first N training images
    download: bool = True  # allow torchvision to download when no local copy is found
    synthetic_count: int = 2048
    synthetic_size: int = 16
    synthetic_channels: int = 3
    on_bad_image: str = "error"  # folder: an unreadable image file stops the load ("error") or is left out ("skip")


@dataclass
class ModelConfig:
    channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [16])
    dropout: float = 0.1
    groups: int = 32  # GroupNorm groups
    conditional: bool = False  # class-conditional (num_classes taken from the dataset)
    class_dropout: float = 0.1  # probability of the null label in training, for classifier-free guidance


@dataclass
class DiffusionConfig:
    timesteps: int = 1000
    schedule: str = "linear"
    # None: Ho et al.'s 1e-4 .. 0.02 at T=1000, scaled by 1000/T at other T (Nichol & Dhariwal 2021), so
    # every T ends near pure noise; explicit values are used as given
    beta_start: float | None = None
    beta_end: float | None = None
    cosine_s: float = 0.008
    betas: list[float] | None = None  # schedule=custom
    prediction: str = "eps"
    loss_weighting: str = "none"
    min_snr_gamma: float = 5.0


@dataclass
class TrainConfig:
    steps: int = 800_000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    adam_beta2: float = 0.999  # AdamW's β2, every optimizer's (β1: 0.9 for a DDPM or LDM, the section's for a baseline)
    warmup_steps: int = 5000
    lr_schedule: str = "constant"  # after warm-up: constant, or a cosine/linear decay that ends at train.steps
    lr_end_factor: float = 0.0  # where a decaying schedule ends, as a fraction of the peak rate
    grad_clip: float = 1.0
    ema_decay: float = 0.9999  # a cap: after s updates the decay is min(ema_decay, (1 + s)/(ema_warmup + s))
    ema_warmup: float = 10.0  # diffusers' EMAModel's; smaller: a longer average in runs too short for ema_decay to bind
    seed: int = 0
    device: str = "auto"  # auto|cpu|cuda|cuda:N
    bf16: bool = True  # autocast to bfloat16 on CUDA
    # speed switches (ddpmlab.train.hotpath); none changes the maths, auto means on for CUDA
    data_on_device: Switch = "auto"  # the uint8 dataset on the device, batches gathered and flipped there
    fused_adam: Switch = "auto"  # AdamW's fused kernel (on the CPU it rounds differently from the default)
    channels_last: Switch = "auto"  # NHWC weights and batches
    compile: bool = False  # torch.compile the networks
    log_every: int = 50
    val_every: int = 1000
    val_batches: int = 4
    sample_every: int = 5000
    sample_n: int = 64
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    max_bad_steps: int = 10  # consecutive steps with a non-finite loss or gradient (each skipped) that stop the run
    # evaluation during training (ddpmlab.eval.during_training): every eval_every steps (0: never) the EMA
    # network draws eval_n samples (fixed seed) with eval_sampler at eval_steps (diffusion models only), scored
    # against the held-out split's cached statistics; the first of eval_metrics ranks checkpoints for keep_best
    eval_every: int = 0
    eval_n: int = 500
    eval_metrics: str = "fd"
    eval_sampler: str = "dpm-solver++"
    eval_steps: int = 20
    keep_best: bool = False  # keep the best-scoring checkpoint as checkpoints/best/ besides the newest ones
    tensorboard: bool = False  # mirror metrics.csv and the sample grids to RUN_DIR/tensorboard (pip extra)


@dataclass
class SampleConfig:
    sampler: str = "ddim"
    steps: int = 100
    eta: float = 0.0
    n: int = 64
    batch_size: int = 64
    guidance: float | None = None
    # [σ_lo, σ_hi]: guide only at noise levels σ_t = √((1 − ᾱ_t)/ᾱ_t) in (σ_lo, σ_hi] (Kynkäänniemi et al. 2024);
    # null: at every step
    guidance_interval: list[float] | None = None
    clip_denoised: bool = True
    variance: str = "posterior"  # ddpm's reverse variance: σ² = β̃ (posterior) or β (Ho et al.'s FID 3.17)


# The baselines (method=vae|dcgan|vaegan): their networks' arguments and their Adam settings (β2: train.adam_beta2).
# `model.*` and `diffusion.*` describe the DDPM and are not read by them; nor is train.lr (each has its own lr).
@dataclass
class VAEConfig:
    """Kingma & Welling (2014); Adam 1e-3."""
    latent_dim: int = 128
    base_channels: int = 64  # channels of the outermost conv stage, doubled at each stage inwards
    kl_weight: float = 1.0
    decoder_std: float = 0.1  # σ of p(x | z) on images in [-1, 1]
    lr: float = 1e-3
    beta1: float = 0.9


@dataclass
class DCGANConfig:
    """Radford et al. (2016): 100-d z, Adam 2e-4, β1 = 0.5."""
    latent_dim: int = 100
    base_channels: int = 64
    lr: float = 2e-4
    beta1: float = 0.5


@dataclass
class VAEGANConfig:
    """Larsen et al. (2016); Adam 2e-4, β1 = 0.5."""
    latent_dim: int = 256
    base_channels: int = 64
    adversarial_weight: float = 0.1
    decoder_std: float = 0.1
    reconstruction: str = "pixel"  # pixel | features (the discriminator's last hidden layer)
    lr: float = 2e-4
    beta1: float = 0.5


# method=ldm (Rombach et al. 2022): stage 1 trains this autoencoder for autoencoder_steps, stage 2 a DDPM (model.*,
# diffusion.*, train.lr) on its latents scaled to unit variance for the rest of train.steps.
@dataclass
class LDMConfig:
    autoencoder_steps: int = 1500  # the first train.steps train the autoencoder; the rest the latent DDPM
    factor: int = 4  # spatial downsampling, a power of two dividing the image size: 28×28 -> 7×7 at 4
    latent_channels: int = 4
    ae_channels: int = 32  # channels of the autoencoder's outermost stage, doubled at each stage inwards
    ae_groups: int = 32  # the autoencoder's GroupNorm groups, fewer where a stage's channels are not divisible by it
    reconstruction: str = "l1"  # l1 | mse, the mean over pixels
    kl_weight: float = 1e-6  # on KL(q(z|x) || N(0, I)), the mean over latent elements; 0: a plain autoencoder
    ae_lr: float = 1e-3  # the autoencoder stage's peak learning rate (train.lr is the diffusion stage's)
    ae_batch_size: int | None = None  # the autoencoder stage's batch; None: train.batch_size (the diffusion stage's)
    adversarial_weight: float = 0.0  # δ, the patch discriminator's term in the autoencoder's loss (Esser et al.); 0: none
    adversarial_start: int = 0  # the autoencoder step from which the discriminator trains and its term applies
    disc_channels: int = 32  # the patch discriminator's first convolution (its second has twice as many)
    guide_steps: int = 0  # autoguidance: the EMA denoiser after this many diffusion steps, frozen as the guide; 0:
    # none. With guide_channels: the steps of the guide's own stage, the last of train.steps
    guide_channels: int = 0  # > 0: the guide is a smaller UNet, the denoiser's with this many base channels, trained
    # on the same latents in a third stage after the diffusion stage (Karras et al. 2024's smaller, shorter-trained
    # guide); 0: the guide is the denoiser itself after ldm.guide_steps diffusion steps


@dataclass
class Config:
    method: str = "ddpm"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    dcgan: DCGANConfig = field(default_factory=DCGANConfig)
    vaegan: VAEGANConfig = field(default_factory=VAEGANConfig)
    ldm: LDMConfig = field(default_factory=LDMConfig)


BASELINE_SECTIONS = ("vae", "dcgan", "vaegan")  # each read only when `method` has its name
TOP_LEVEL_KEYS = ("method",)  # settings outside any section

# What `--resume` may change: how long and how fast to train, where and how often to write. Everything else
# (`method` and the baseline sections included) defines the model, the data or the process that the saved
# weights were trained for.
RESUME_SAFE_KEYS = ("train.steps", "train.lr", "train.lr_schedule", "train.lr_end_factor", "vae.lr", "dcgan.lr",
                    "vaegan.lr", "ldm.ae_lr", "train.device", "train.bf16", "train.data_on_device", "train.fused_adam",
                    "train.channels_last", "train.compile",
                    "train.log_every", "train.val_every", "train.val_batches", "train.sample_every", "train.sample_n",
                    "train.checkpoint_every", "train.keep_checkpoints", "train.max_bad_steps", "train.eval_every",
                    "train.eval_n", "train.eval_metrics", "train.eval_sampler", "train.eval_steps", "train.keep_best",
                    "train.tensorboard", "data.root", "data.download", "sample.*")


def config_to_dict(config: Config) -> dict:
    """Plain nested dict (YAML-ready)."""
    return dataclasses.asdict(config)


def flatten(config: Config) -> dict[str, Any]:
    """{"section.key": value} for every setting, and {"method": value} for the top-level keys."""
    flat = {}
    for section, values in config_to_dict(config).items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            flat[section] = values
    return flat


