"""diffusers' DDPM folders: read one as a ddpmlab model, write a ddpmlab model as one.

Two layouts are read: a pipeline folder (model_index.json, unet/config.json and weights, scheduler/
scheduler_config.json) and the flat folder of google/ddpm-cifar10-32 (config.json, diffusion_pytorch_model.*
and scheduler_config.json side by side). A UNet2DModel made of DownBlock2D/AttnDownBlock2D/UpBlock2D/AttnUpBlock2D
with single-head attention (and optionally class embeddings) maps one to one onto ddpmlab's UNet; a DDPMScheduler or
DDIMScheduler config onto its NoiseSchedule, prediction and sampling settings. What has no equivalent is a
UserError naming it. Nothing here imports diffusers: the folders are JSON and safetensors (`.bin` read with
torch.load(weights_only=True)).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ddpmlab.config import Config, DataConfig, DiffusionConfig, ModelConfig, SampleConfig
from ddpmlab.diffusion import NoiseSchedule
from ddpmlab.errors import UserError
from ddpmlab.methods import DDPM
from ddpmlab.nets import UNet, UNetSpec
from ddpmlab.paths import atomic_write_bytes, storage_errors_as_user_errors
from ddpmlab.rng import resolve_device
from ddpmlab.store.checkpoint import state_mismatch
from ddpmlab.store.diffusers_unet import ddpmlab_state, diffusers_state, unet_config, unet_spec

PIPELINE_INDEX, UNET_CONFIG, SCHEDULER_CONFIG = "model_index.json", "config.json", "scheduler_config.json"
WEIGHTS_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
SCHEDULERS = {"DDPMScheduler": "ddpm", "DDIMScheduler": "ddim"}  # -> the sampler it stands for
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
VARIANCE_TYPES = {"fixed_small": "posterior", "fixed_small_log": "posterior", "fixed_large": "beta",
                  "fixed_large_log": "beta"}
SCHEDULER_FIXED = {"thresholding": False, "rescale_betas_zero_snr": False}


# -- finding the folders ----------------------------------------------------------------------------------------
def diffusers_folders(path: str | Path) -> tuple[Path, Path] | None:
    """(the UNet's folder, the scheduler's folder) of a diffusers DDPM folder in either layout; None for any other
    path. A flat folder may have a model_index.json too (google/ddpm-cifar10-32 has; diffusers then reads the root)."""
    path = Path(path)
    flat = (path / UNET_CONFIG).is_file() and any((path / name).is_file() for name in WEIGHTS_FILES)
    if (path / PIPELINE_INDEX).is_file() and not (flat and not (path / "unet").is_dir()):
        return path / "unet", path / "scheduler"
    return (path, path) if flat else None


def is_diffusers_folder(path: str | Path) -> bool:
    return diffusers_folders(path) is not None


def diffusers_weights_file(unet_folder: Path) -> Path:
    """The UNet's weights: the .safetensors file where there is one, else the .bin; UserError when neither."""
    for name in WEIGHTS_FILES:
        if (unet_folder / name).is_file():
            return unet_folder / name
    raise UserError(f"{unet_folder}: no {' or '.join(WEIGHTS_FILES)} (not a diffusers model folder)")


def read_json(path: Path) -> dict:
    """A JSON object from `path`; UserError naming the file when missing or not a JSON object."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing (a diffusers DDPM folder has model_index.json, unet/ and scheduler/, or "
                        f"config.json, the weights and scheduler_config.json side by side)") from None
    except (OSError, ValueError, UnicodeDecodeError):
        raise UserError(f"{path}: not readable JSON") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: not a JSON object")
    return value


def check_pipeline_index(folder: Path) -> None:
    """UserError when a pipeline folder has components besides unet and scheduler (a VAE, a text encoder, ...)."""
    index = read_json(folder / PIPELINE_INDEX)
    others = sorted(key for key, value in index.items() if not key.startswith("_") and key not in ("unet", "scheduler")
                    and value not in (None, [None, None]))
    if others:
        raise UserError(f"{folder}: a {index.get('_class_name', 'diffusers')} with {', '.join(others)}; ddpmlab "
                        f"reads pixel-space DDPM pipelines (a unet and a scheduler) only")


# -- the scheduler ------------------------------------------------------------------------------------------------
def scheduler_betas(config: dict) -> torch.Tensor:
    """β_1..β_T of a DDPMScheduler/DDIMScheduler config (float64; diffusers computes them in float32)."""
    T = config.get("num_train_timesteps", 1000)
    if config.get("trained_betas") is not None:
        return torch.as_tensor(config["trained_betas"], dtype=torch.float64)
    kind = config.get("beta_schedule", "linear")
    start, end = config.get("beta_start", 0.0001), config.get("beta_end", 0.02)
    if not isinstance(T, int) or T < 1:
        raise UserError(f"scheduler num_train_timesteps={T!r} must be a positive integer")
    if kind == "linear":
        return torch.linspace(start, end, T, dtype=torch.float64)
    if kind == "scaled_linear":  # Rombach et al. (2022): linear in √β
        return torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2
    if kind == "squaredcos_cap_v2":  # Nichol & Dhariwal (2021) Eq. 17, s = 0.008, β capped at 0.999
        return NoiseSchedule.cosine(T).betas
    raise UserError(f"scheduler beta_schedule={kind!r} has no ddpmlab equivalent (linear, scaled_linear, "
                    f"squaredcos_cap_v2 or trained_betas)")


def diffusion_config(config: dict) -> DiffusionConfig:
    """The DiffusionConfig of a scheduler config: its schedule and prediction."""
    for key, value in SCHEDULER_FIXED.items():
        if config.get(key, value) != value:
            raise UserError(f"scheduler {key}={config[key]!r} has no ddpmlab equivalent")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise UserError(f"scheduler prediction_type={prediction!r} is not one of {', '.join(PREDICTIONS)}")
    betas = scheduler_betas(config)
    T, kind = len(betas), config.get("beta_schedule", "linear")
    if config.get("trained_betas") is None and kind == "linear":
        return DiffusionConfig(timesteps=T, schedule="linear", beta_start=float(config.get("beta_start", 0.0001)),
                               beta_end=float(config.get("beta_end", 0.02)), prediction=PREDICTIONS[prediction])
    if config.get("trained_betas") is None and kind == "squaredcos_cap_v2":
        return DiffusionConfig(timesteps=T, schedule="cosine", prediction=PREDICTIONS[prediction])
    return DiffusionConfig(timesteps=T, schedule="custom", betas=betas.tolist(), prediction=PREDICTIONS[prediction])


def sample_config(config: dict) -> SampleConfig:
    """The sampling a scheduler config implies: its sampler (ddpm or ddim), clipping and DDPM's variance."""
    name = config.get("_class_name", "DDPMScheduler")
    if name not in SCHEDULERS:
        raise UserError(f"scheduler {name} has no ddpmlab equivalent ({', '.join(SCHEDULERS)})")
    variance = config.get("variance_type", "fixed_small") or "fixed_small"
    if variance not in VARIANCE_TYPES:
        raise UserError(f"scheduler variance_type={variance!r} (a learned variance) has no ddpmlab equivalent")
    clip = bool(config.get("clip_sample", True))
    if clip and config.get("clip_sample_range", 1.0) != 1.0:
        raise UserError(f"scheduler clip_sample_range={config['clip_sample_range']!r}: ddpmlab clips to [-1, 1]")
    return SampleConfig(sampler=SCHEDULERS[name], clip_denoised=clip, variance=VARIANCE_TYPES[variance])


def scheduler_config(diffusion: DiffusionConfig, schedule: NoiseSchedule, sample: SampleConfig) -> dict:
    """The DDPMScheduler config of a ddpmlab model: its β (as the linear or cosine schedule it names, else the
    list), prediction, DDPM variance and clipping."""
    config = {"_class_name": "DDPMScheduler", "num_train_timesteps": schedule.T,
              "prediction_type": {v: k for k, v in PREDICTIONS.items()}[diffusion.prediction],
              "variance_type": "fixed_large" if sample.variance == "beta" else "fixed_small",
              "clip_sample": sample.clip_denoised, "clip_sample_range": 1.0, "trained_betas": None}
    if diffusion.schedule == "linear":
        start, end = float(schedule.betas[0]), float(schedule.betas[-1])
        return {**config, "beta_schedule": "linear", "beta_start": start, "beta_end": end}
    if diffusion.schedule == "cosine" and diffusion.cosine_s == 0.008:
        return {**config, "beta_schedule": "squaredcos_cap_v2"}
    return {**config, "beta_schedule": "linear", "trained_betas": schedule.betas.tolist()}


# -- reading and writing ------------------------------------------------------------------------------------------
def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file, or of a .bin read with torch.load(weights_only=True); UserError when
    unreadable."""
    try:
        state = load_file(str(path)) if path.suffix == ".safetensors" else None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not readable weights ({reason})") from None
    state = torch_load(path) if state is None else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state dict of tensors")
    return state


def torch_load(path: Path):
    """What a .bin/.ckpt/.pt file holds, read with torch.load(weights_only=True) on the CPU (tensors and plain
    containers only, nothing executed); UserError when unreadable or holding anything else."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not readable weights ({reason})") from None
    except pickle.UnpicklingError:  # torch.load(weights_only=True) refuses anything but tensors and plain containers
        raise UserError(f"{path}: holds more than weights; it is never unpickled") from None


def load_diffusers(path: str | Path, device=None):
    """(DDPM network in eval mode on `device`, NoiseSchedule, Config, step 0) from a diffusers DDPM folder; UserError
    for a folder that is not one, a setting ddpmlab has no equivalent for, or weights that disagree with the config."""
    path = Path(path)
    folders = diffusers_folders(path)
    if folders is None:
        raise UserError(f"{path}: not a diffusers model folder (no {PIPELINE_INDEX}, or {UNET_CONFIG} with weights)")
    unet_folder, scheduler_folder = folders
    if unet_folder != path:
        check_pipeline_index(path)
    scheduler = read_json(scheduler_folder / SCHEDULER_CONFIG)
    diffusion, sampling = diffusion_config(scheduler), sample_config(scheduler)
    spec = unet_spec(read_json(unet_folder / UNET_CONFIG), diffusion.prediction)
    weights = diffusers_weights_file(unet_folder)
    net = DDPM(UNet.from_spec(spec), NoiseSchedule(scheduler_betas(scheduler)), diffusion)
    state = ddpmlab_state(read_state(weights), spec)
    state = {name: value.float() if value.is_floating_point() else value for name, value in state.items()}
    mismatch = state_mismatch(net.state_dict(), state)
    if mismatch:
        raise UserError(f"{weights}: the weights do not match {unet_folder / UNET_CONFIG}: {mismatch}")
    net.load_state_dict(state)
    config = Config(method="ddpm", data=DataConfig(name="folder", image_size=spec.image_size),
                    model=model_config(spec), diffusion=diffusion, sample=sampling)
    return net.to(resolve_device(device)).eval(), net.schedule, config, 0


def model_config(spec: UNetSpec) -> ModelConfig:
    """The model section describing a UNet (its import conventions live in the spec)."""
    return ModelConfig(channels=spec.channels, channel_mult=list(spec.channel_mult), num_res_blocks=spec.num_res_blocks,
                       attention_resolutions=list(spec.attention_resolutions), dropout=spec.dropout, groups=spec.groups,
                       conditional=spec.num_classes is not None)


def write_diffusers(net, config: Config, out: str | Path) -> Path:
    """Write `net` (a DDPM around a ddpmlab UNet) as a DDPMPipeline folder: model_index.json, unet/config.json,
    unet/diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json. UserError for a baseline, a backbone
    without a spec, or what UNet2DModel cannot express; nothing is written then."""
    if net.SINGLE_PASS:
        raise UserError(f"a {config.method} model has no diffusers pipeline; only diffusion models are exported")
    spec = net.spec
    if not isinstance(spec, UNetSpec):
        raise UserError("only ddpmlab's UNet is exported (this backbone has no UNetSpec)")
    unet = unet_config(spec)
    scheduler = scheduler_config(config.diffusion, net.schedule, config.sample)
    state = diffusers_state(net.state_dict(), spec)
    index = {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
             "scheduler": ["diffusers", "DDPMScheduler"]}
    out = Path(out)
    with storage_errors_as_user_errors("the diffusers folder", "choose another --out"):
        (out / "unet").mkdir(parents=True, exist_ok=True)
        (out / "scheduler").mkdir(exist_ok=True)
        save_file(state, str(out / "unet" / WEIGHTS_FILES[0]), metadata={"format": "pt"})
        for path, value in ((out / "unet" / UNET_CONFIG, unet), (out / "scheduler" / SCHEDULER_CONFIG, scheduler),
                            (out / PIPELINE_INDEX, index)):
            atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())
    return out
