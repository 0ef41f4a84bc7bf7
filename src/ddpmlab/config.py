"""Typed run configuration: dataclasses whose defaults follow Ho et al. (2020), YAML presets, validation.

A preset (src/ddpmlab/presets/NAME.yaml) overrides only what differs from these defaults;
`key=value` overrides from the command line go on top. `validate` is the one place that checks values.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from ddpmlab.errors import UserError

DATASETS = ("fashion-mnist", "mnist", "cifar10", "sprites", "folder", "synthetic")
SCHEDULES = ("linear", "cosine", "custom")
PREDICTIONS = ("eps", "x0", "v")
LOSS_WEIGHTINGS = ("none", "min-snr")
LR_SCHEDULES = ("constant", "cosine", "linear")
METHODS = ("ddpm", "vae", "dcgan", "vaegan")  # `method`: the diffusion model, or a baseline with its own section
RECONSTRUCTIONS = ("pixel", "features")
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
    warmup_steps: int = 5000
    lr_schedule: str = "constant"  # after warm-up: constant, or a cosine/linear decay that ends at train.steps
    lr_end_factor: float = 0.0  # where a decaying schedule ends, as a fraction of the peak rate
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
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
    clip_denoised: bool = True


# The baselines (method=vae|dcgan|vaegan): their networks' arguments and their Adam settings (β2 = 0.999).
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


BASELINE_SECTIONS = ("vae", "dcgan", "vaegan")  # each read only when `method` has its name
TOP_LEVEL_KEYS = ("method",)  # settings outside any section

# What `--resume` may change: how long and how fast to train, where and how often to write. Everything else
# (`method` and the baseline sections included) defines the model, the data or the process that the saved
# weights were trained for.
RESUME_SAFE_KEYS = ("train.steps", "train.lr", "train.lr_schedule", "train.lr_end_factor", "vae.lr", "dcgan.lr",
                    "vaegan.lr", "train.device", "train.bf16", "train.data_on_device", "train.fused_adam",
                    "train.channels_last", "train.compile",
                    "train.log_every", "train.val_every", "train.val_batches", "train.sample_every", "train.sample_n",
                    "train.checkpoint_every", "train.keep_checkpoints", "train.max_bad_steps", "train.eval_every",
                    "train.eval_n", "train.eval_metrics", "train.eval_sampler", "train.eval_steps", "train.keep_best",
                    "train.tensorboard", "data.root", "data.download", "sample.*")


def preset_names() -> list[str]:
    """Names of the presets shipped in the package, sorted."""
    folder = resources.files("ddpmlab") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_description(name: str) -> str:
    """The first comment line of a shipped preset, e.g. "Seconds on a CPU: synthetic shapes, ..."."""
    text = (resources.files("ddpmlab") / "presets" / f"{name}.yaml").read_text()
    first = next((line for line in text.splitlines() if line.startswith("#")), "")
    return first.lstrip("# ").strip()


def parse_yaml(text: str | bytes, source: str) -> Any:
    """The plain data (mappings, lists, strings, numbers, booleans, null) of a YAML document, read with the safe
    loader only: a tag that would build a Python object (`!!python/object/apply:...`) is refused, never run.
    UserError naming `source` for anything that is not UTF-8 YAML."""
    try:
        return yaml.safe_load(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: e.g. 2020-13-45
        raise UserError(f"{source}: not valid YAML ({exc.__class__.__name__}); a config or suite holds plain "
                        f"mappings, lists, strings and numbers") from None


def read_yaml_file(path: str | Path, source: str | None = None) -> Any:
    """`parse_yaml` of the file at `path`; UserError when it is missing or unreadable."""
    path, source = Path(path), source or str(path)
    try:
        return parse_yaml(path.read_bytes(), source)
    except FileNotFoundError:
        raise UserError(f"file not found: {source}") from None
    except OSError as exc:
        raise UserError(f"{source}: cannot read ({exc.strerror or exc})") from None


def _read_yaml(source: str) -> dict:
    """The mapping in a preset name or a YAML path."""
    path = Path(source)
    if source in preset_names():
        data = parse_yaml((resources.files("ddpmlab") / "presets" / f"{source}.yaml").read_text(), source)
    elif path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"config file not found: {source}")
        data = read_yaml_file(path, source)
    else:
        raise UserError(f"unknown preset {source!r}; presets: {', '.join(preset_names())} (or give a YAML path)")
    if not isinstance(data, dict):
        raise UserError(f"{source}: a config must be a mapping of sections, got {shown(data)}")
    return data


def shown(value: Any) -> str:
    """`value`'s repr cut short (a hostile YAML can nest aliases into a structure whose full repr never ends)."""
    return _SHORT_REPR.repr(value)


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 80
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 2, 4, 4


# YAML 1.1 reads "1e-3" and "2E-4" (no dot) as strings; every number a user writes is accepted as a number
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _as_number(value: Any) -> Any:
    """`value` as an int or float when it is a numeric string ("1e-3", "2E-4", "1e2", "10"), else unchanged."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        try:
            return int(value) if re.fullmatch(r"[-+]?\d+", value.strip()) else float(value)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            return value
    return value


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check `value` against a dataclass field's type, converting where YAML is looser (int -> float, "1e-3")."""
    origin, args = get_origin(annotation), get_args(annotation)
    if value is None:
        if type(None) in args:
            return None
        raise UserError(f"{key} must not be null")
    if args and type(None) in args:  # X | None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, key)
    if origin is Literal:  # a Switch: exactly one of its values (1 is not true)
        if any(value == choice and type(value) is type(choice) for choice in args):
            return value
        raise UserError(f"{key} must be one of {', '.join(_literal_text(a) for a in args)}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key} must be a list, got {shown(value)}")
        return [_coerce(v, args[0], f"{key}[]") for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key} must be true or false, got {shown(value)}")
    if annotation in (int, float):
        value = _as_number(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{key} must be a finite number, got {shown(value)}")
    if annotation is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT64_MIN <= value <= INT64_MAX:  # every integer setting ends up in a torch int64 or a C long
                raise UserError(f"{key} must be an integer in -2**63..2**63-1, got {shown(value)}")
            return value
        raise UserError(f"{key} must be an integer, got {shown(value)}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer beyond float's range
                raise UserError(f"{key} must be a finite number, got {shown(value)}") from None
        raise UserError(f"{key} must be a number, got {shown(value)}")
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{key} must be a string, got {shown(value)}")
    return value


def _literal_text(choice: Any) -> str:
    """A Literal's value as a user writes it in YAML: true, false, auto."""
    return str(choice).lower() if isinstance(choice, bool) else str(choice)


def _merge(config: Config, data: dict, source: str) -> None:
    """Apply a {section: {key: value}, top-level key: value} mapping onto `config`, naming any unknown key."""
    sections = sorted(f.name for f in dataclasses.fields(Config) if f.name not in TOP_LEVEL_KEYS)
    top_level = get_type_hints(Config)
    for section_name, values in data.items():
        if section_name in TOP_LEVEL_KEYS:
            setattr(config, section_name, _coerce(values, top_level[section_name], section_name))
            continue
        if section_name not in sections:
            raise UserError(f"{source}: unknown config section {shown(section_name)}; sections: {', '.join(sections)}; "
                            f"top-level keys: {', '.join(TOP_LEVEL_KEYS)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise UserError(f"{source}: section {section_name!r} must be a mapping")
        section = getattr(config, section_name)
        hints = get_type_hints(type(section))
        for key, value in values.items():
            if key not in hints:
                name = key if isinstance(key, str) else shown(key)
                raise UserError(f"{source}: unknown key {section_name}.{name}; keys: {', '.join(sorted(hints))}")
            setattr(section, key, _coerce(value, hints[key], f"{section_name}.{key}"))


def parse_overrides(overrides: list[str]) -> dict:
    """['train.steps=10', 'model.channel_mult=[1,2]', 'method=vae'] -> {'train': {'steps': 10}, 'model': {...},
    'method': 'vae'}; values are YAML."""
    data: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or (key.count(".") != 1 and key not in TOP_LEVEL_KEYS):
            raise UserError(f"override {item!r} must look like section.key=value, e.g. train.steps=1000 "
                            f"(or method=NAME)")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except (yaml.YAMLError, ValueError, RecursionError):  # not YAML (or a date like 2020-13-45): the text itself
            value = raw
        if key in TOP_LEVEL_KEYS:
            data[key] = value
        else:
            section, name = key.split(".")
            data.setdefault(section, {})[name] = value
    return data


def config_from_dict(data: dict, source: str = "config") -> Config:
    """A validated Config from a {section: {key: value}} mapping over the defaults."""
    config = Config()
    _merge(config, data, source)
    validate(config)
    return config


def load_config(source: str, overrides: list[str] | None = None) -> Config:
    """Read a preset name or YAML path, apply `key=value` overrides, validate; raises UserError."""
    config = Config()
    _merge(config, _read_yaml(source), source)
    _merge(config, parse_overrides(overrides or []), "override")
    validate(config)
    return config


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """A copy of `config` with `key=value` overrides applied and validated."""
    copy = config_from_dict(config_to_dict(config))
    _merge(copy, parse_overrides(overrides), "override")
    validate(copy)
    return copy


def config_to_dict(config: Config) -> dict:
    """Plain nested dict (YAML-ready)."""
    return dataclasses.asdict(config)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    from ddpmlab.paths import atomic_write_bytes

    atomic_write_bytes(Path(path), yaml.safe_dump(config_to_dict(config), sort_keys=False).encode())


def flatten(config: Config) -> dict[str, Any]:
    """{"section.key": value} for every setting, and {"method": value} for the top-level keys."""
    flat = {}
    for section, values in config_to_dict(config).items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            flat[section] = values
    return flat


def resume_changes(saved: Config, requested: Config, step: int) -> None:
    """UserError naming the first change `--resume` must refuse: a key outside RESUME_SAFE_KEYS, or train.steps
    below the run's current `step`."""
    old, new = flatten(saved), flatten(requested)
    for key in old:
        if old[key] != new[key] and key not in RESUME_SAFE_KEYS and f"{key.split('.')[0]}.*" not in RESUME_SAFE_KEYS:
            raise UserError(f"cannot change {key} on --resume ({old[key]!r} -> {new[key]!r}): it defines the model, data "
                            f"or process the checkpoint was trained for; start a new run instead. On resume only "
                            f"{', '.join(RESUME_SAFE_KEYS)} may change")
    if requested.train.steps < step:
        raise UserError(f"train.steps={requested.train.steps} is below the run's step {step}; "
                        f"give train.steps >= {step} to continue it")


def eval_metric_names(text: str) -> list[str]:
    """train.eval_metrics "fd,fid" -> ["fd", "fid"] in the order given (the first ranks checkpoints); UserError
    naming the key for an unknown or missing name."""
    names = [name.strip().lower() for name in str(text).split(",") if name.strip()]
    unknown = [name for name in names if name not in EVAL_METRICS]
    _check(bool(names) and not unknown and len(set(names)) == len(names), "train.eval_metrics",
           f"{text!r} must name one or both of {', '.join(EVAL_METRICS)}, comma-separated, each once")
    return names


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise UserError(f"invalid config value {key}: {message}")


def validate(config: Config) -> None:
    """Raise UserError naming the first invalid key; the one place where values are checked."""
    d, m, f, t, s = config.data, config.model, config.diffusion, config.train, config.sample
    _check(config.method in METHODS, "method", f"{config.method!r} is not one of {', '.join(METHODS)}")
    _check_baseline_sections(config)
    _check(d.name in DATASETS, "data.name", f"{d.name!r} is not one of {', '.join(DATASETS)}")
    _check(d.image_size is None or 4 <= d.image_size <= 1024, "data.image_size", "must be in 4..1024")
    _check(0.0 <= d.val_fraction < 1.0, "data.val_fraction", "must be in [0, 1)")
    _check(d.limit is None or d.limit > 0, "data.limit", "must be positive")
    _check(d.synthetic_count > 0, "data.synthetic_count", "must be positive")
    _check(4 <= d.synthetic_size <= 256, "data.synthetic_size", "must be in 4..256")
    _check(d.synthetic_channels in (1, 3), "data.synthetic_channels", "must be 1 or 3")
    _check(d.on_bad_image in BAD_IMAGE_POLICIES, "data.on_bad_image",
           f"{d.on_bad_image!r} is not one of {', '.join(BAD_IMAGE_POLICIES)}")
    if d.name in ("sprites", "folder"):
        _check(d.path is not None, "data.path", f"data.name={d.name} needs data.path")

    _check(m.channels > 0, "model.channels", "must be positive")
    _check(len(m.channel_mult) > 0 and all(c > 0 for c in m.channel_mult), "model.channel_mult", "must be positive integers")
    _check(m.num_res_blocks > 0, "model.num_res_blocks", "must be positive")
    _check(0.0 <= m.dropout < 1.0, "model.dropout", "must be in [0, 1)")
    _check(m.groups > 0 and m.channels % m.groups == 0, "model.groups", f"must divide model.channels={m.channels}")
    _check(0.0 <= m.class_dropout < 1.0, "model.class_dropout", "must be in [0, 1)")

    _check(1 <= f.timesteps <= 4000, "diffusion.timesteps", f"{f.timesteps} is not in 1..4000")
    _check(f.schedule in SCHEDULES, "diffusion.schedule", f"{f.schedule!r} is not one of {', '.join(SCHEDULES)}")
    from ddpmlab.diffusion.schedule import linear_beta_range

    if f.schedule == "linear" and 1 <= f.timesteps <= 4000:
        default_start, default_end = linear_beta_range(f.timesteps)
        start = default_start if f.beta_start is None else f.beta_start
        end = default_end if f.beta_end is None else f.beta_end
        _check(0 < start <= end < 1, "diffusion.beta_start",
               f"need 0 < beta_start <= beta_end < 1 (got {start:g} and {end:g} at T={f.timesteps})")
    _check(f.cosine_s >= 0, "diffusion.cosine_s", "must be >= 0")
    if f.schedule == "custom":
        _check(f.betas is not None and len(f.betas) == f.timesteps, "diffusion.betas",
               "schedule=custom needs a list of diffusion.timesteps betas")
    _check(f.prediction in PREDICTIONS, "diffusion.prediction", f"{f.prediction!r} is not one of {', '.join(PREDICTIONS)}")
    _check(f.loss_weighting in LOSS_WEIGHTINGS, "diffusion.loss_weighting",
           f"{f.loss_weighting!r} is not one of {', '.join(LOSS_WEIGHTINGS)}")
    _check(f.min_snr_gamma > 0, "diffusion.min_snr_gamma", "must be positive")

    _check(t.steps > 0, "train.steps", "must be positive")
    _check(t.batch_size > 0, "train.batch_size", "must be positive")
    _check(t.lr > 0, "train.lr", "must be positive")
    _check(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    _check(t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
    _check(t.lr_schedule in LR_SCHEDULES, "train.lr_schedule",
           f"{t.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
    _check(0.0 <= t.lr_end_factor <= 1.0, "train.lr_end_factor", "must be in [0, 1]")
    _check(t.grad_clip >= 0, "train.grad_clip", "must be >= 0 (0 disables clipping)")
    _check(0.0 <= t.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1)")
    _check(t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"), "train.device",
           "must be auto, cpu, cuda or cuda:N")
    for key in ("log_every", "val_every", "val_batches", "sample_every", "sample_n", "checkpoint_every", "keep_checkpoints",
                "max_bad_steps"):
        _check(getattr(t, key) > 0, f"train.{key}", "must be positive")

    from ddpmlab.samplers import SAMPLERS

    _check(t.eval_every >= 0, "train.eval_every", "must be >= 0 (0: no evaluation during training)")
    _check(t.eval_n >= 2, "train.eval_n", "must be at least 2 (a covariance needs two images)")
    eval_metric_names(t.eval_metrics)
    _check(t.eval_sampler in SAMPLERS, "train.eval_sampler", f"{t.eval_sampler!r} is not one of {', '.join(SAMPLERS)}")
    _check(t.eval_steps > 0, "train.eval_steps", "must be positive")
    _check(not t.keep_best or t.eval_every > 0, "train.keep_best",
           "ranks checkpoints by their score during training: set train.eval_every > 0 too")
    _check(s.sampler in SAMPLERS, "sample.sampler", f"{s.sampler!r} is not one of {', '.join(SAMPLERS)}")
    _check(s.steps > 0, "sample.steps", "must be positive")
    _check(0.0 <= s.eta <= 1.0, "sample.eta", "must be in [0, 1]")
    _check(s.n > 0, "sample.n", "must be positive")
    _check(s.batch_size > 0, "sample.batch_size", "must be positive")


def _check_baseline_sections(config: Config) -> None:
    """A baseline section's keys apply to its own method only; a baseline is unconditional; values in range."""
    for name in BASELINE_SECTIONS:
        section, defaults = getattr(config, name), type(getattr(config, name))()
        if name != config.method:
            for key in (f.name for f in dataclasses.fields(section)):
                if getattr(section, key) != getattr(defaults, key):
                    raise UserError(f"{name}.{key} applies to method={name}, but this config has method={config.method}; "
                                    f"set method={name} or drop {name}.{key}")
        for key in ("latent_dim", "base_channels"):
            _check(getattr(section, key) > 0, f"{name}.{key}", "must be positive")
        _check(section.lr > 0, f"{name}.lr", "must be positive")
        _check(0.0 <= section.beta1 < 1.0, f"{name}.beta1", "must be in [0, 1)")
    _check(config.vae.kl_weight >= 0, "vae.kl_weight", "must be >= 0")
    _check(config.vae.decoder_std > 0, "vae.decoder_std", "must be positive")
    _check(config.vaegan.adversarial_weight >= 0, "vaegan.adversarial_weight", "must be >= 0")
    _check(config.vaegan.decoder_std > 0, "vaegan.decoder_std", "must be positive")
    _check(config.vaegan.reconstruction in RECONSTRUCTIONS, "vaegan.reconstruction",
           f"{config.vaegan.reconstruction!r} is not one of {', '.join(RECONSTRUCTIONS)}")
    _check(not (config.model.conditional and config.method != "ddpm"), "model.conditional",
           f"method={config.method} is unconditional; class conditioning (model.conditional=true) applies to method=ddpm")
