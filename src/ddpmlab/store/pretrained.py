"""Models that ship inside the package, named `pretrained:NAME` wherever a run directory or checkpoint is accepted.

One folder per NAME in ddpmlab/pretrained/ (or in $DDPMLAB_PRETRAINED_DIR, which replaces it): `config.yaml` (the
run's), `model.safetensors` (its EMA weights, float16 or float32 storage, with the checkpoint's metadata; always
loaded as float32), `info.json` (training steps, wall-clock, machine, date, command, scores with their protocol)
and, when the run had one, its `metrics.csv` up to the exported step (for the stability and cost columns of
`ddpmlab compare`), with `checksums.json` (the SHA-256 and size of each, checked like a checkpoint's before the
weights are used). `ddpmlab.commands.pretrained` writes such a folder from a run; nothing here needs a network connection.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import torch

from ddpmlab.errors import UserError
from ddpmlab.store import checkpoint as ckpt
from ddpmlab.store.hub import hub_folder, hub_source

PREFIX = "pretrained:"
ROOT_ENV = "DDPMLAB_PRETRAINED_DIR"
CONFIG_FILE, WEIGHTS_FILE, INFO_FILE, METRICS_FILE = "config.yaml", "model.safetensors", "info.json", "metrics.csv"
FORMAT = "ddpmlab-pretrained-1"


def package_root() -> Path:
    """The folder inside the installed package that holds the shipped models."""
    return Path(str(resources.files("ddpmlab") / "pretrained"))


def pretrained_root(root: str | Path | None = None) -> Path:
    """`root` if given, else $DDPMLAB_PRETRAINED_DIR if set, else package_root()."""
    if root is not None:
        return Path(root)
    env = os.environ.get(ROOT_ENV)
    return Path(env).expanduser() if env else package_root()


def is_pretrained_folder(path: str | Path) -> bool:
    """Whether `path` is a pretrained model's folder (info.json and weights, and no checkpoint progress)."""
    path = Path(path)
    return ((path / INFO_FILE).is_file() and (path / WEIGHTS_FILE).is_file()
            and not (path / ckpt.PROGRESS_FILE).is_file())


def pretrained_names(root: str | Path | None = None) -> list[str]:
    """Names of the pretrained models in the root, sorted."""
    folder = pretrained_root(root)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and is_pretrained_folder(p))


def pretrained_name(source: str | Path) -> str | None:
    """NAME for a source written `pretrained:NAME`, else None."""
    text = str(source)
    return text[len(PREFIX):] if text.startswith(PREFIX) else None


def pretrained_folder(name: str, root: str | Path | None = None) -> Path:
    """The folder of pretrained model NAME; UserError naming the available ones when there is none."""
    names = pretrained_names(root)
    if name not in names:
        raise UserError(f"unknown pretrained model '{name}'; available: {', '.join(names) or 'none'}")
    return pretrained_root(root) / name


def resolve_source(source: str | Path, root: str | Path | None = None) -> Path:
    """The path a run, checkpoint or weights argument names: `pretrained:NAME` -> that model's folder,
    `hf:ORG/NAME[@REVISION]` -> its snapshot in the Hugging Face cache (downloaded when online; see store/hub.py),
    else as given."""
    name = pretrained_name(source)
    if name is not None:
        return pretrained_folder(name, root)
    return hub_folder(source) if hub_source(source) is not None else Path(source)


def read_info(folder: str | Path) -> dict:
    """The info.json of a pretrained model's folder; UserError when missing or corrupt."""
    path = Path(folder) / INFO_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{folder}: not a pretrained model (no {INFO_FILE})") from None
    except (OSError, ValueError):
        raise UserError(f"{path}: corrupt pretrained model info") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise UserError(f"{path}: not a ddpmlab pretrained model info ({FORMAT})")
    return info


def as_float32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float16-stored tensors as float32 (how shipped weights are loaded); other tensors unchanged."""
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}


def stored_state(state: dict[str, torch.Tensor], fp16: bool) -> dict[str, torch.Tensor]:
    """The tensors written to model.safetensors: float32 ones as float16 when `fp16` (float64 and integer buffers
    stay as they are)."""
    return {k: (v.half() if fp16 and v.dtype == torch.float32 else v).contiguous().cpu() for k, v in state.items()}


