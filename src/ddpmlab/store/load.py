"""Find a checkpoint and load a trained network from it: a run directory, a checkpoint folder, one weights file, a
pretrained model, a diffusers DDPM folder (or `hf:ORG/NAME`) or an original port of Ho et al.'s checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import safe_open

from ddpmlab.config import Config, config_from_dict
from ddpmlab.errors import UserError
from ddpmlab.methods import rebuild_method
from ddpmlab.rng import resolve_device
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.diffusers_format import diffusers_folders, diffusers_weights_file, load_diffusers
from ddpmlab.store.original_ddpm import ARCHS, SUFFIXES, is_original_checkpoint, load_original
from ddpmlab.store.pretrained import WEIGHTS_FILE, as_float32, is_pretrained_folder, read_info, resolve_source


WEIGHTS_SUFFIX = ".safetensors"


def check_weights_path(path: Path) -> None:
    """UserError naming what a file given where trained weights are expected is, unless it is a .safetensors file
    or an original DDPM port's checkpoint (.ckpt, .pt, .pth): a config file (a run's config.yaml names its run
    directory) or anything else."""
    if path.suffix in (WEIGHTS_SUFFIX, *SUFFIXES):
        return
    if path.suffix in (".yaml", ".yml"):
        run = path.parent
        fix = (f"give its run directory {run}" if ckpt.list_checkpoints(run)
               else "give a run directory, a checkpoint folder, one .safetensors weights file or pretrained:NAME")
        raise UserError(f"{path} is a config file, not trained weights; {fix}")
    raise UserError(f"{path} is not a weights file (.safetensors, or an original DDPM port's {'/'.join(SUFFIXES)}); "
                    f"give a run directory, a checkpoint folder, one weights file or pretrained:NAME")


def is_lone_weights(path: Path) -> bool:
    """Whether `path` is a weights file outside any checkpoint or pretrained folder (loaded from its metadata alone)."""
    folder = path.parent
    return path.is_file() and not ((folder / ckpt.PROGRESS_FILE).is_file() or is_pretrained_folder(folder))


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a run directory (its newest), a checkpoint folder, or a weights file inside one;
    a pretrained model's folder from `pretrained:NAME` or the folder itself. UserError for a weights file outside
    a checkpoint folder (see is_lone_weights) and for a file that holds no weights."""
    path = resolve_source(path)
    if not path.exists():
        raise UserError(f"no such run directory or checkpoint: {path}")
    if path.is_file():
        check_weights_path(path)
        if is_lone_weights(path):
            raise UserError(f"{path}: a weights file on its own, outside a checkpoint folder; give the checkpoint "
                            f"folder it came from")
        return path.parent
    if (path / ckpt.PROGRESS_FILE).is_file() or is_pretrained_folder(path):
        return path
    checkpoints = ckpt.list_checkpoints(path)
    if not checkpoints:
        raise UserError(f"{path}: no checkpoint found (expected a run directory or a checkpoints/step_XXXXXXX folder)")
    return checkpoints[-1]


def weights_file(path: str | Path, use_ema: bool = True) -> Path:
    """The weights a path names: a .safetensors file itself; in a run directory (its newest checkpoint) or a
    checkpoint folder, the EMA weights (or the raw ones when not use_ema); a pretrained model's (EMA) weights; a
    diffusers folder's UNet weights (its only ones, whatever use_ema says)."""
    path = resolve_source(path)
    if path.is_file():
        check_weights_path(path)
        return path
    folders = diffusers_folders(path)
    if folders is not None:
        return diffusers_weights_file(folders[0])
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


def load_trained(path: str | Path, use_ema: bool = True, device=None, arch: str | None = None):
    """(network in eval mode on `device`, NoiseSchedule or None, Config, step) from a run directory, a checkpoint
    folder or one weights file (that file is used, whatever `use_ema` says; outside a checkpoint folder, its
    metadata alone rebuilds the network: config, model spec, method and step, as ddpmlab writes them), a
    pretrained model (`pretrained:NAME` or its folder; float16-stored weights are loaded as float32), a diffusers
    DDPM folder or `hf:ORG/NAME[@REVISION]` (ddpmlab.store.diffusers_format, store.hub: its only weights, whatever
    `use_ema` says; step 0), or an original port of Ho et al.'s checkpoints (ddpmlab.store.original_ddpm: a .ckpt,
    .pt or .pth file; `arch`, one of cifar10, celeba, lsun, gives its shape, else the weights do).

    The network is the checkpoint's method (metadata `method`; "ddpm" for checkpoints written before there were
    others), rebuilt from its stored spec: a methods.DDPM, callable like its UNet, with its schedule; or a baseline
    (VAE, DCGAN, VAE-GAN), which has no schedule (None). Draw images with ddpmlab.methods.sample_images.
    Raises UserError for a missing, corrupt or foreign checkpoint, for a weights file whose metadata lacks what
    rebuilds it (naming the missing key), and for one whose progress or weights file differs from the checksum
    recorded when it was written.
    """
    source = resolve_source(path)
    if arch is not None and not is_original_checkpoint(source):
        raise UserError(f"--arch ({', '.join(ARCHS)}) applies to the original DDPM ports' {'/'.join(SUFFIXES)} "
                        f"files only; {path} says its own architecture")
    if diffusers_folders(source) is not None:
        return load_diffusers(source, device)
    if is_original_checkpoint(source):
        return load_original(source, use_ema, device, arch)
    weights = weights_file(source, use_ema)
    lone = is_lone_weights(weights)
    folder = weights if lone else find_checkpoint(path)  # what error messages name
    if not lone:
        verify(folder, weights)
    state, metadata = ckpt.read_weights(weights)
    step = metadata_step(weights, metadata) if lone else checkpoint_step(folder)
    config, net = rebuilt_network(folder, metadata)
    state = as_float32(state)
    mismatch = ckpt.state_mismatch(net.state_dict(), state)
    if mismatch:
        raise UserError(f"{folder}: weights do not match the stored model spec: {mismatch}")
    net.load_state_dict(state)
    schedule = None if net.SINGLE_PASS else net.schedule
    return net.to(resolve_device(device)).eval(), schedule, config, step


def verify(folder: Path, weights: Path) -> None:
    """The checksum check of a checkpoint's (or pretrained model's) progress and weights files before use."""
    try:
        ckpt.verify_checkpoint(folder, [ckpt.PROGRESS_FILE] + ([weights.name] if weights.parent == folder else []))
    except ckpt.DamagedCheckpoint as exc:
        if not is_pretrained_folder(folder):
            raise
        raise UserError(f"{exc.reason}; reinstall ddpmlab (pip install --force-reinstall ddpmlab) or export the model "
                        f"again") from None


# the metadata a weights file needs to be loaded on its own, with what each holds
REBUILD_KEYS = {"config": "the run's config", "model_spec": "the network's shape", "step": "the training step"}


def missing_metadata(where: Path, key: str) -> UserError:
    """The error for weights whose metadata lacks `key` (one of REBUILD_KEYS)."""
    fix = "; use the checkpoint folder or run directory it came from" if where.is_file() else ""
    return UserError(f"{where}: its metadata has no '{key}' ({REBUILD_KEYS[key]}), which loading the weights "
                     f"needs{fix}")


def metadata_step(weights: Path, metadata: dict[str, str]) -> int:
    """The training step a weights file's metadata records (ddpmlab writes it into every checkpoint file)."""
    try:
        return int(metadata["step"])
    except KeyError:
        raise missing_metadata(weights, "step") from None
    except ValueError:
        raise UserError(f"{weights}: checkpoint metadata is corrupt (step {metadata['step']!r})") from None


def rebuilt_network(where: Path, metadata: dict[str, str]):
    """(Config, untrained network of the stored method) from a weights file's metadata; UserError naming a missing
    key, for a custom backbone's weights (no spec to rebuild from) and for corrupt metadata."""
    for key in ("config", "model_spec"):
        if key not in metadata:
            raise missing_metadata(where, key)
    if not metadata["model_spec"]:
        raise UserError(f"{where}: weights of a custom backbone (no stored model spec), which ddpmlab cannot rebuild; "
                        f"load them into that backbone in Python")
    config = config_of(metadata, where)
    try:
        spec = json.loads(metadata["model_spec"])
        if not isinstance(spec, dict):
            raise ValueError("not a JSON object")
        return config, rebuild_method(metadata.get("method") or "ddpm", spec, config)
    except (KeyError, TypeError, ValueError):  # JSONDecodeError is a ValueError
        raise UserError(f"{where}: checkpoint metadata is missing or corrupt") from None


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
    from the metadata alone; "ddpm" for checkpoints written before there were other methods, diffusers folders and
    the original DDPM ports."""
    source = resolve_source(path)
    if diffusers_folders(source) is not None or is_original_checkpoint(source):
        return "ddpm"
    return ckpt.read_metadata(weights_file(source, use_ema)).get("method") or "ddpm"


def stored_class_names(path: str | Path, num_classes: int, use_ema: bool = True) -> list[str]:
    """The class names saved with a checkpoint's weights ("class K" where none were saved)."""
    source = resolve_source(path)
    if diffusers_folders(source) is not None or is_original_checkpoint(source):
        return [f"class {k}" for k in range(num_classes)]
    with safe_open(str(weights_file(source, use_ema)), framework="pt") as handle:
        try:
            names = json.loads((handle.metadata() or {}).get("class_names") or "null")
        except ValueError:  # not JSON: the names are unknown, the weights may still be fine
            names = None
    if isinstance(names, list) and len(names) == num_classes and all(isinstance(name, str) for name in names):
        return names
    return [f"class {k}" for k in range(num_classes)]
