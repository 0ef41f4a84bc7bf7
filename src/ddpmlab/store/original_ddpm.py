"""The original PyTorch ports of Ho et al.'s (2020) checkpoints, read as ddpmlab models.

Two files share one layout, that of the DDIM paper's `models/diffusion.py` (ermongroup/ddim) and of
pesser/pytorch_diffusion: `model-790000.ckpt`, a plain state dict (`temb.dense.0.weight`, `conv_in.weight`,
`down.L.block.J.conv1.weight`, `down.L.attn.J.q.weight`, `down.L.downsample.conv.weight`, `mid.block_1`,
`mid.attn_1`, `mid.block_2`, `up.L.block.J`, `up.L.upsample.conv`, `norm_out`, `conv_out`), and the DDIM code's
`ckpt.pth`, a list [state dict, optimizer state, epoch, step, EMA state (when trained with EMA)] whose keys may
carry DataParallel's `module.` prefix. Both are read with torch.load(weights_only=True), nothing executed.

The network is ddpmlab's U-Net with Ho et al.'s conventions (TF "SAME" downsampling, GroupNorm ε = 1e-6, the
[sin, cos] embedding with frequencies 10000^(−i/(d/2 − 1))), its shape given by `arch` or read from the weights;
the process is theirs: β linear 1e-4..0.02, T = 1000, ε-prediction, ancestral sampling with σ² = β.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ddpmlab.config import Config, DataConfig, DiffusionConfig, SampleConfig
from ddpmlab.diffusion import NoiseSchedule
from ddpmlab.errors import UserError
from ddpmlab.methods import DDPM
from ddpmlab.nets import UNet, UNetSpec
from ddpmlab.rng import resolve_device
from ddpmlab.store.checkpoint import state_mismatch
from ddpmlab.store.diffusers_format import model_config, torch_load
from ddpmlab.store.diffusers_unet import UNetNames, module_pairs

SUFFIXES = (".ckpt", ".pt", ".pth")
# the released models' shapes (ermongroup/ddim configs/*.yml): 128 channels, 2 blocks a level, attention at 16×16
ARCHS = {"cifar10": {"image_size": 32, "channel_mult": [1, 2, 2, 2], "dropout": 0.1},
         "celeba": {"image_size": 64, "channel_mult": [1, 2, 2, 2, 4], "dropout": 0.1},
         "lsun": {"image_size": 256, "channel_mult": [1, 1, 2, 2, 4, 4], "dropout": 0.0}}
LAYOUT_KEYS = ("temb.dense.0.weight", "conv_in.weight", "down.0.block.0.conv1.weight", "mid.block_1.conv1.weight")
ATTENTION_SIZE = 16  # every released model attends at 16×16, which places the image size
RES_PARAMS = (("norm1", "norm1"), ("conv1", "conv1"), ("emb", "temb_proj"), ("norm2", "norm2"), ("conv2", "conv2"),
              ("skip", "nin_shortcut"))


def is_original_checkpoint(path: Path) -> bool:
    """Whether `path` is a file with a suffix of the original ports (.ckpt, .pt, .pth)."""
    return path.suffix in SUFFIXES and path.is_file()


# -- reading the file --------------------------------------------------------------------------------------------
def original_state(path: Path, use_ema: bool = True) -> tuple[dict[str, torch.Tensor], int]:
    """(state dict without a `module.` prefix, training step) of a plain state dict (the step from a name like
    model-790000.ckpt, else 0) or of the DDIM code's list (its EMA state when use_ema and it has one)."""
    loaded = torch_load(path)
    step = int(match.group(1)) if (match := re.search(r"(\d+)$", path.stem)) else 0
    if isinstance(loaded, (list, tuple)) and loaded and is_state(loaded[0]):
        has_ema = len(loaded) >= 5 and is_state(loaded[-1])
        step = loaded[3] if len(loaded) >= 4 and isinstance(loaded[3], int) else step
        loaded = loaded[-1] if use_ema and has_ema else loaded[0]
    if not is_state(loaded):
        raise UserError(f"{path}: not a state dict of tensors, nor the DDIM code's list [state dict, optimizer, "
                        f"epoch, step, EMA]")
    return {strip_prefix(name): value for name, value in loaded.items()}, step


def is_state(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def strip_prefix(name: str) -> str:
    return name[len("module."):] if name.startswith("module.") else name


# -- the architecture --------------------------------------------------------------------------------------------
def check_layout(state: dict[str, torch.Tensor], where: Path) -> None:
    """UserError naming what was found when the keys are not the original ports' layout."""
    missing = [key for key in LAYOUT_KEYS if key not in state]
    if missing:
        found = ", ".join(list(state)[:4]) + (", ..." if len(state) > 4 else "")
        raise UserError(f"{where}: its keys match no known layout (found {len(state)} tensors: {found}; the original "
                        f"DDPM ports' have {', '.join(LAYOUT_KEYS)})")


def original_spec(state: dict[str, torch.Tensor], where: Path, arch: str | None = None) -> UNetSpec:
    """The UNetSpec of the original layout's weights: channels, multipliers, blocks and attention levels read from
    the shapes; the image size from `arch` (cifar10, celeba, lsun) or, without it, from attention at 16×16."""
    check_layout(state, where)
    channels, in_channels = state["conv_in.weight"].shape[:2]
    levels = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("down."))
    blocks = len({key.split(".")[3] for key in state if key.startswith("down.0.block.")})
    mult = [state[f"down.{level}.block.0.conv1.weight"].shape[0] // channels for level in range(levels)]
    attention = [level for level in range(levels) if f"down.{level}.attn.0.q.weight" in state]
    preset = ARCHS.get(arch) if arch is not None else next((a for a in ARCHS.values() if a["channel_mult"] == mult),
                                                           None)
    if arch is not None and preset is None:
        raise UserError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    if arch is not None and preset["channel_mult"] != mult:
        raise UserError(f"{where}: --arch {arch} has channel multipliers {preset['channel_mult']}, the weights {mult}")
    if preset is None and not attention:
        raise UserError(f"{where}: no attention layer to place the image size by; give the architecture "
                        f"({', '.join(ARCHS)})")
    size = preset["image_size"] if preset is not None else ATTENTION_SIZE * 2 ** attention[0]
    return UNetSpec(in_channels=in_channels, channels=channels, channel_mult=mult, num_res_blocks=blocks,
                    attention_resolutions=[size // 2**level for level in attention],
                    dropout=preset["dropout"] if preset is not None else 0.0, groups=32, image_size=size,
                    downsample="tf-same", norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1)


# -- the weights' names ------------------------------------------------------------------------------------------
# the original code keeps `up` indexed by level, run from the deepest
ORIGINAL_NAMES = UNetNames(
    time=("temb.dense.0", "temb.dense.1"), label=None, down_res="down.{level}.block.{j}",
    down_attn="down.{level}.attn.{j}", downsample="down.{level}.downsample.conv",
    mid=("mid.block_1", "mid.attn_1", "mid.block_2"), up_res="up.{level}.block.{j}", up_attn="up.{level}.attn.{j}",
    upsample="up.{level}.upsample.conv", norm_out="norm_out")


def ddpmlab_state(theirs: dict[str, torch.Tensor], spec: UNetSpec) -> dict[str, torch.Tensor]:
    """The ddpmlab UNet state dict holding the original layout's weights (q, k and v joined into one 1×1
    convolution, nothing recomputed). Names it lacks are left out and names ddpmlab does not know are kept, for
    state_mismatch to report."""
    ours, used = {}, set()
    renames = []
    for mine, other, kind in module_pairs(spec, ORIGINAL_NAMES):
        if kind == "plain":
            renames += [(f"{mine}.{p}", f"{other}.{p}") for p in ("weight", "bias")]
        elif kind == "res":
            renames += [(f"{mine}.{a}.{p}", f"{other}.{b}.{p}") for a, b in RES_PARAMS for p in ("weight", "bias")]
        else:
            renames += [(f"{mine}.{a}.{p}", f"{other}.{b}.{p}") for a, b in (("norm", "norm"), ("proj", "proj_out"))
                        for p in ("weight", "bias")]
            parts = [f"{other}.{name}.{p}" for p in ("weight", "bias") for name in "qkv"]
            if all(part in theirs for part in parts):
                ours[f"{mine}.qkv.weight"] = torch.cat([theirs[part] for part in parts[:3]])
                ours[f"{mine}.qkv.bias"] = torch.cat([theirs[part] for part in parts[3:]])
                used.update(parts)
    for mine, other in renames:
        if other in theirs:
            ours[mine] = theirs[other]
            used.add(other)
    ours.update({name: value for name, value in theirs.items() if name not in used})  # reported as unknown
    return ours


# -- the model ---------------------------------------------------------------------------------------------------
def original_config(spec: UNetSpec) -> Config:
    """Ho et al.'s process for a network of `spec`: β linear 1e-4..0.02 over T = 1000, ε-prediction, ancestral
    sampling with σ² = β and x_0 clipped to [−1, 1]."""
    return Config(method="ddpm", data=DataConfig(name="folder", image_size=spec.image_size), model=model_config(spec),
                  diffusion=DiffusionConfig(timesteps=1000, schedule="linear", beta_start=1e-4, beta_end=0.02,
                                            prediction="eps"),
                  sample=SampleConfig(sampler="ddpm", clip_denoised=True, variance="beta"))


def load_original(path: Path, use_ema: bool = True, device=None, arch: str | None = None):
    """(DDPM network in eval mode on `device`, NoiseSchedule, Config, step) from an original port's checkpoint;
    UserError for a file that is not one or weights that disagree with the architecture."""
    state, step = original_state(path, use_ema)
    spec = original_spec(state, path, arch)
    config = original_config(spec)
    d = config.diffusion
    net = DDPM(UNet.from_spec(spec), NoiseSchedule.linear(d.timesteps, d.beta_start, d.beta_end), d)
    ours = {name: value.float() if value.is_floating_point() else value
            for name, value in ddpmlab_state(state, spec).items()}
    mismatch = state_mismatch(net.state_dict(), ours)
    if mismatch:
        raise UserError(f"{path}: the weights do not match the original DDPM layout they were read as: {mismatch}")
    net.load_state_dict(ours)
    return net.to(resolve_device(device)).eval(), net.schedule, config, step
