"""Find a checkpoint and load a trained network from it: a run directory, a checkpoint folder, one weights file or a
pretrained model."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import safe_open

from ddpmlab.config import Config, config_from_dict
from ddpmlab.errors import UserError
from ddpmlab.methods import rebuild_method
from ddpmlab.rng import resolve_device
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.pretrained import WEIGHTS_FILE, as_float32, is_pretrained_folder, read_info, resolve_source


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a run directory (its newest), a checkpoint folder, or a weights file inside one;
    a pretrained model's folder from `pretrained:NAME` or the folder itself."""
    path = resolve_source(path)
    if not path.exists():
        raise UserError(f"no such run directory or checkpoint: {path}")
    if path.is_file():
        return path.parent
    if (path / ckpt.PROGRESS_FILE).is_file() or is_pretrained_folder(path):
        return path
    checkpoints = ckpt.list_checkpoints(path)
    if not checkpoints:
        raise UserError(f"{path}: no checkpoint found (expected a run directory or a checkpoints/step_XXXXXXX folder)")
    return checkpoints[-1]


def weights_file(path: str | Path, use_ema: bool = True) -> Path:
    """The weights a path names: a .safetensors file itself; in a run directory (its newest checkpoint) or a
    checkpoint folder, the EMA weights (or the raw ones when not use_ema); a pretrained model's (EMA) weights."""
    path = resolve_source(path)
    if path.is_file():
        return path
    folder = find_checkpoint(path)
    if is_pretrained_folder(folder):
        if not use_ema:
            raise UserError(f"{folder}: a pretrained model ships its EMA weights only; drop --no-ema")
        return folder / WEIGHTS_FILE
    return folder / (ckpt.EMA_FILE if use_ema else ckpt.MODEL_FILE)


def checkpoint_step(folder: Path) -> int:
    """The training step of a checkpoint folder (progress.json) or of a pretrained model's folder (info.json)."""
    if is_pretrained_folder(folder):
        return int(read_info(folder).get("training", {}).get("steps") or 0)
    return int(ckpt.read_progress(folder)["step"])


def load_trained(path: str | Path, use_ema: bool = True, device=None):
    """(network in eval mode on `device`, NoiseSchedule or None, Config, step) from a run directory, a checkpoint
    folder or one weights file inside a checkpoint (that file is used, whatever `use_ema` says), or a pretrained
    model (`pretrained:NAME` or its folder; float16-stored weights are loaded as float32).

    The network is the checkpoint's method (metadata `method`; "ddpm" for checkpoints written before there were
    others), rebuilt from its stored spec: a methods.DDPM, callable like its UNet, with its schedule; or a baseline
    (VAE, DCGAN, VAE-GAN), which has no schedule (None). Draw images with ddpmlab.methods.sample_images.
    Raises UserError for a missing, corrupt or foreign checkpoint, and for one whose progress or weights file differs
    from the checksum recorded when it was written.
    """
    folder, weights = find_checkpoint(path), weights_file(path, use_ema)
    try:
        ckpt.verify_checkpoint(folder, [ckpt.PROGRESS_FILE] + ([weights.name] if weights.parent == folder else []))
    except ckpt.DamagedCheckpoint as exc:
        if not is_pretrained_folder(folder):
            raise
        raise UserError(f"{exc.reason}; reinstall ddpmlab (pip install --force-reinstall ddpmlab) or export the model "
                        f"again") from None
    step = checkpoint_step(folder)
    state, metadata = ckpt.read_weights(weights)
    state = as_float32(state)
    config = config_of(metadata, folder)
    try:
        spec = json.loads(metadata["model_spec"])
        if not isinstance(spec, dict):
            raise ValueError("not a JSON object")
        net = rebuild_method(metadata.get("method") or "ddpm", spec, config)
    except (KeyError, TypeError, ValueError):  # JSONDecodeError is a ValueError
        raise UserError(f"{folder}: checkpoint metadata is missing or corrupt") from None
    mismatch = ckpt.state_mismatch(net.state_dict(), state)
    if mismatch:
        raise UserError(f"{folder}: weights do not match the stored model spec: {mismatch}")
    net.load_state_dict(state)
    schedule = None if net.SINGLE_PASS else net.schedule
    return net.to(resolve_device(device)).eval(), schedule, config, step


def config_of(metadata: dict[str, str], folder: Path) -> Config:
    """The config a checkpoint's weights were trained with, from their metadata; UserError if missing or corrupt."""
    try:
        config = json.loads(metadata["config"])
    except (KeyError, TypeError, ValueError):  # JSONDecodeError is a ValueError
        config = None
    if not isinstance(config, dict):
        raise UserError(f"{folder}: checkpoint metadata is missing or corrupt")
    return config_from_dict(config, str(folder))


def trained_config(folder: Path) -> Config:
    """The config checkpoint `folder`'s weights were trained with (model.safetensors' metadata), whatever its run's
    editable config.yaml now says."""
    return config_of(ckpt.read_metadata(Path(folder) / ckpt.MODEL_FILE), folder)


def stored_method(path: str | Path, use_ema: bool = True) -> str:
    """The method ("ddpm", "vae", ...) whose weights a run directory, checkpoint folder or weights file holds, read
    from the metadata alone; "ddpm" for checkpoints written before there were other methods."""
    return ckpt.read_metadata(weights_file(path, use_ema)).get("method") or "ddpm"


def stored_class_names(path: str | Path, num_classes: int, use_ema: bool = True) -> list[str]:
    """The class names saved with a checkpoint's weights ("class K" where none were saved)."""
    with safe_open(str(weights_file(path, use_ema)), framework="pt") as handle:
        try:
            names = json.loads((handle.metadata() or {}).get("class_names") or "null")
        except ValueError:  # not JSON: the names are unknown, the weights may still be fine
            names = None
    if isinstance(names, list) and len(names) == num_classes and all(isinstance(name, str) for name in names):
        return names
    return [f"class {k}" for k in range(num_classes)]
