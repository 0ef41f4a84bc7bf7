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

PIPELINE_INDEX, UNET_CONFIG, SCHEDULER_CONFIG = "model_index.json", "config.json", "scheduler_config.json"
WEIGHTS_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DOWN_BLOCKS = {"DownBlock2D": False, "AttnDownBlock2D": True}  # block type -> has attention
UP_BLOCKS = {"UpBlock2D": False, "AttnUpBlock2D": True}
SCHEDULERS = {"DDPMScheduler": "ddpm", "DDIMScheduler": "ddim"}  # -> the sampler it stands for
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
VARIANCE_TYPES = {"fixed_small": "posterior", "fixed_small_log": "posterior", "fixed_large": "beta",
                  "fixed_large_log": "beta"}
# UNet2DModel's defaults, for keys a config.json leaves out
UNET_DEFAULTS = {"in_channels": 3, "out_channels": 3, "center_input_sample": False, "time_embedding_type": "positional",
                 "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
                 "mid_block_type": "UNetMidBlock2D",
                 "layers_per_block": 2, "mid_block_scale_factor": 1, "downsample_padding": 1, "downsample_type": "conv",
                 "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu", "attention_head_dim": 8,
                 "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
                 "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
                 "num_class_embeds": None}
# settings of UNet2DModel that ddpmlab's UNet has only at this value
UNET_FIXED = {"center_input_sample": False, "time_embedding_type": "positional", "mid_block_type": "UNetMidBlock2D",
              "mid_block_scale_factor": 1, "downsample_type": "conv", "upsample_type": "conv", "act_fn": "silu",
              "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None}
SCHEDULER_FIXED = {"thresholding": False, "rescale_betas_zero_snr": False}


# -- finding the folders ----------------------------------------------------------------------------------------
def diffusers_folders(path: str | Path) -> tuple[Path, Path] | None:
    """(the UNet's folder, the scheduler's folder) of a diffusers DDPM folder in either layout; None for any other
    path."""
    path = Path(path)
    if (path / PIPELINE_INDEX).is_file():
        return path / "unet", path / "scheduler"
    if (path / UNET_CONFIG).is_file() and any((path / name).is_file() for name in WEIGHTS_FILES):
        return path, path
    return None


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


# -- the U-Net ----------------------------------------------------------------------------------------------------
def unet_spec(config: dict, prediction: str = "eps") -> UNetSpec:
    """The UNetSpec of a UNet2DModel config; UserError naming the first setting ddpmlab's UNet has no equivalent for."""
    name = config.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise UserError(f"{name} has no ddpmlab equivalent; ddpmlab imports diffusers' UNet2DModel")
    c = {**UNET_DEFAULTS, **config}
    for key, value in UNET_FIXED.items():
        if c[key] != value:
            raise UserError(f"UNet2DModel {key}={c[key]!r} has no ddpmlab equivalent (only {value!r})")
    down, up = list(c.get("down_block_types") or []), list(c.get("up_block_types") or [])
    widths = [int(w) for w in c.get("block_out_channels") or []]
    for block in down + up:
        if block not in DOWN_BLOCKS and block not in UP_BLOCKS:
            raise UserError(f"UNet2DModel block type {block} has no ddpmlab equivalent (it takes "
                            f"{', '.join([*DOWN_BLOCKS, *UP_BLOCKS])})")
    if not widths or not (len(down) == len(up) == len(widths)) or any(b not in DOWN_BLOCKS for b in down) \
            or any(b not in UP_BLOCKS for b in up):
        raise UserError("UNet2DModel config: down_block_types, up_block_types and block_out_channels must list the "
                        "levels, down blocks first")
    attention = [DOWN_BLOCKS[b] for b in down]
    if attention != [UP_BLOCKS[b] for b in reversed(up)]:
        raise UserError("UNet2DModel with attention at different levels going down and up has no ddpmlab equivalent")
    base = widths[0]
    if any(w % base for w in widths):
        raise UserError(f"UNet2DModel block_out_channels {widths}: ddpmlab needs multiples of the first")
    size = c.get("sample_size")
    size = size[0] if isinstance(size, (list, tuple)) and len(set(size)) == 1 else size
    multiple = 2 ** (len(widths) - 1)
    if not isinstance(size, int) or size % multiple:
        raise UserError(f"UNet2DModel sample_size={c.get('sample_size')!r}: ddpmlab needs one square size, a multiple "
                        f"of {multiple}")
    groups = c["norm_num_groups"]
    if not isinstance(groups, int) or any(w % groups for w in widths) \
            or c["attn_norm_num_groups"] not in (None, groups):
        raise UserError(f"UNet2DModel norm_num_groups={groups!r}: ddpmlab needs one group count dividing every width")
    head = c["attention_head_dim"]
    heads = [w for w, a in zip(widths, attention) if a] + [widths[-1]]
    if head is not None and any(w != head for w in heads):
        raise UserError(f"UNet2DModel attention_head_dim={head}: multi-head attention has no ddpmlab equivalent "
                        f"(single head: attention_head_dim null or the width)")
    if c["out_channels"] != c["in_channels"]:
        raise UserError(f"UNet2DModel out_channels={c['out_channels']} differs from in_channels={c['in_channels']}; "
                        f"ddpmlab predicts one value per input channel (no learned variance)")
    if c["time_embedding_dim"] not in (None, 4 * base):
        raise UserError(f"UNet2DModel time_embedding_dim={c['time_embedding_dim']}: ddpmlab's is 4 × {base}")
    classes = c["num_class_embeds"]
    if classes is not None and (not isinstance(classes, int) or classes < 2):
        raise UserError(f"UNet2DModel num_class_embeds={classes!r}: ddpmlab needs the classes and a null label (>= 2)")
    padding = c["downsample_padding"]
    if padding not in (0, 1):
        raise UserError(f"UNet2DModel downsample_padding={padding!r} has no ddpmlab equivalent (0 or 1)")
    return UNetSpec(in_channels=c["in_channels"], channels=base, channel_mult=[w // base for w in widths],
                    num_res_blocks=c["layers_per_block"],
                    attention_resolutions=[size // 2**level for level, a in enumerate(attention) if a],
                    dropout=float(c["dropout"]), groups=groups, image_size=size,
                    num_classes=classes - 1 if classes else None, prediction=prediction,
                    downsample="tf-same" if padding == 0 else "symmetric", norm_eps=float(c["norm_eps"]),
                    flip_sin_to_cos=bool(c["flip_sin_to_cos"]), freq_shift=c["freq_shift"])


def unet_config(spec: UNetSpec) -> dict:
    """The UNet2DModel config.json of a ddpmlab UNet; UserError naming what UNet2DModel cannot express."""
    levels = len(spec.channel_mult)
    widths = [spec.channels * m for m in spec.channel_mult]
    if any(w % spec.groups for w in widths):
        raise UserError(f"group norm with {spec.groups} groups over {widths} channels: ddpmlab uses fewer groups where "
                        f"a width is not a multiple; UNet2DModel cannot")
    if spec.image_size % 2 ** (levels - 1):
        raise UserError(f"image size {spec.image_size} is not a multiple of {2 ** (levels - 1)}: ddpmlab pads the "
                        f"input inside the network; UNet2DModel cannot")
    attention = [spec.image_size // 2**level in spec.attention_resolutions for level in range(levels)]
    config = {
        "_class_name": "UNet2DModel", "sample_size": spec.image_size, "in_channels": spec.in_channels,
        "out_channels": spec.in_channels, "center_input_sample": False, "time_embedding_type": "positional",
        "freq_shift": spec.freq_shift, "flip_sin_to_cos": spec.flip_sin_to_cos,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "block_out_channels": widths, "layers_per_block": spec.num_res_blocks, "mid_block_scale_factor": 1,
        "downsample_padding": 0 if spec.downsample == "tf-same" else 1, "dropout": spec.dropout, "act_fn": "silu",
        "attention_head_dim": None, "norm_num_groups": spec.groups, "norm_eps": spec.norm_eps,
        "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
        "num_class_embeds": spec.num_classes + 1 if spec.num_classes else None,
    }
    return config


def module_pairs(spec: UNetSpec) -> list[tuple[str, str, str]]:
    """(ddpmlab module, UNet2DModel module, kind) for every module with weights; kind "res" (a residual block),
    "attn" (self-attention) or "plain" (a convolution, linear, norm or embedding: the same parameter names)."""
    levels, blocks = len(spec.channel_mult), spec.num_res_blocks
    attention = [spec.image_size // 2**level in spec.attention_resolutions for level in range(levels)]
    pairs = [("conv_in", "conv_in", "plain"), ("time_mlp.0", "time_embedding.linear_1", "plain"),
             ("time_mlp.2", "time_embedding.linear_2", "plain")]
    if spec.num_classes:
        pairs.append(("label_emb", "class_embedding", "plain"))
    k = 0
    for level in range(levels):
        for j in range(blocks):
            pairs.append((f"down.{k}.block", f"down_blocks.{level}.resnets.{j}", "res"))
            if attention[level]:
                pairs.append((f"down.{k}.attention", f"down_blocks.{level}.attentions.{j}", "attn"))
            k += 1
        if level != levels - 1:
            pairs.append((f"down.{k}.conv", f"down_blocks.{level}.downsamplers.0.conv", "plain"))
            k += 1
    pairs += [("mid.0", "mid_block.resnets.0", "res"), ("mid.1", "mid_block.attentions.0", "attn"),
              ("mid.2", "mid_block.resnets.1", "res")]
    k = 0
    for i, level in enumerate(reversed(range(levels))):
        for j in range(blocks + 1):
            pairs.append((f"up.{k}.block", f"up_blocks.{i}.resnets.{j}", "res"))
            if attention[level]:
                pairs.append((f"up.{k}.attention", f"up_blocks.{i}.attentions.{j}", "attn"))
            k += 1
        if level != 0:
            pairs.append((f"up.{k}.conv", f"up_blocks.{i}.upsamplers.0.conv", "plain"))
            k += 1
    return pairs + [("norm_out", "conv_norm_out", "plain"), ("conv_out", "conv_out", "plain")]


RES_PARAMS = (("norm1", "norm1"), ("conv1", "conv1"), ("emb", "time_emb_proj"), ("norm2", "norm2"),
              ("conv2", "conv2"), ("skip", "conv_shortcut"))
LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}  # diffusers < 0.14


def modern_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A UNet2DModel state dict with the attention names of diffusers before 0.14 (query, key, value, proj_attn)
    renamed as today's (to_q, to_k, to_v, to_out.0), as diffusers itself does on loading."""
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) >= 2 and parts[-2] in LEGACY_ATTENTION:
            key = ".".join([*parts[:-2], LEGACY_ATTENTION[parts[-2]], parts[-1]])
        renamed[key] = value
    return renamed


def ddpmlab_state(theirs: dict[str, torch.Tensor], spec: UNetSpec) -> dict[str, torch.Tensor]:
    """The ddpmlab UNet state dict holding a UNet2DModel's weights (names and layouts mapped; nothing is
    recomputed). Names the model lacks are left out and names it does not know are kept, for state_mismatch."""
    theirs = modern_names(theirs)
    ours, used = {}, set()

    def take(our_name: str, their_name: str, shape=None) -> None:
        if their_name in theirs:
            used.add(their_name)
            value = theirs[their_name]
            ours[our_name] = value.reshape(shape) if shape is not None else value

    for mine, other, kind in module_pairs(spec):
        if kind == "plain":
            for param in ("weight", "bias"):
                take(f"{mine}.{param}", f"{other}.{param}")
        elif kind == "res":
            for a, b in RES_PARAMS:
                for param in ("weight", "bias"):
                    take(f"{mine}.{a}.{param}", f"{other}.{b}.{param}")
        else:
            for param in ("weight", "bias"):
                take(f"{mine}.norm.{param}", f"{other}.group_norm.{param}")
            parts = [f"{other}.{name}" for name in ("to_q", "to_k", "to_v")]
            if all(f"{p}.weight" in theirs and f"{p}.bias" in theirs for p in parts):
                weight = torch.cat([theirs[f"{p}.weight"] for p in parts])
                ours[f"{mine}.qkv.weight"] = weight.reshape(*weight.shape, 1, 1)
                ours[f"{mine}.qkv.bias"] = torch.cat([theirs[f"{p}.bias"] for p in parts])
                used.update(f"{p}.{param}" for p in parts for param in ("weight", "bias"))
            weight = theirs.get(f"{other}.to_out.0.weight")
            take(f"{mine}.proj.weight", f"{other}.to_out.0.weight",
                 (*weight.shape, 1, 1) if weight is not None and weight.dim() == 2 else None)
            take(f"{mine}.proj.bias", f"{other}.to_out.0.bias")
    ours.update({name: value for name, value in theirs.items() if name not in used})  # reported as unknown
    return ours


def diffusers_state(ours: dict[str, torch.Tensor], spec: UNetSpec) -> dict[str, torch.Tensor]:
    """The UNet2DModel state dict of a ddpmlab UNet's weights: the inverse of ddpmlab_state."""
    theirs = {}
    for mine, other, kind in module_pairs(spec):
        if kind == "plain":
            theirs.update({f"{other}.{p}": ours[f"{mine}.{p}"] for p in ("weight", "bias") if f"{mine}.{p}" in ours})
        elif kind == "res":
            theirs.update({f"{other}.{b}.{p}": ours[f"{mine}.{a}.{p}"] for a, b in RES_PARAMS
                           for p in ("weight", "bias") if f"{mine}.{a}.{p}" in ours})
        else:
            theirs.update({f"{other}.group_norm.{p}": ours[f"{mine}.norm.{p}"] for p in ("weight", "bias")})
            q, k, v = ours[f"{mine}.qkv.weight"].flatten(1).chunk(3)
            qb, kb, vb = ours[f"{mine}.qkv.bias"].chunk(3)
            theirs.update({f"{other}.to_q.weight": q, f"{other}.to_k.weight": k, f"{other}.to_v.weight": v,
                           f"{other}.to_q.bias": qb, f"{other}.to_k.bias": kb, f"{other}.to_v.bias": vb,
                           f"{other}.to_out.0.weight": ours[f"{mine}.proj.weight"].flatten(1),
                           f"{other}.to_out.0.bias": ours[f"{mine}.proj.bias"]})
    return {name: value.detach().cpu().contiguous() for name, value in theirs.items()}


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
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, ValueError, RuntimeError, EOFError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not readable weights ({reason})") from None
    except pickle.UnpicklingError:  # torch.load(weights_only=True) refuses anything but tensors and plain containers
        raise UserError(f"{path}: holds more than weights; it is never unpickled") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state dict of tensors")
    return state


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


__all__ = ["diffusers_folders", "is_diffusers_folder", "diffusers_weights_file", "load_diffusers", "write_diffusers",
           "unet_spec", "unet_config", "ddpmlab_state", "diffusers_state", "scheduler_betas", "diffusion_config",
           "sample_config", "scheduler_config"]
