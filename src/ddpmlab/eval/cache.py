"""Where evaluation files are cached, and the names that tell one dataset variant from another."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ddpmlab.config import DataConfig


def cache_dir(*parts: str) -> Path:
    """$DDPMLAB_CACHE (default ~/.cache/ddpmlab) joined with `parts`; not created here."""
    root = os.environ.get("DDPMLAB_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "ddpmlab").joinpath(*parts)


def images_identity(cfg: DataConfig, split: str | None = None) -> dict:
    """The data-config fields that decide which images `split` holds (not where the files live).

    With split None: only what decides the images themselves (for a classifier); "train" and "val"
    add val_fraction (and "train" limit), which choose the subset.
    """
    identity = {"name": cfg.name, "path": cfg.path, "image_size": cfg.image_size}
    if cfg.name == "synthetic":
        identity.update(synthetic_count=cfg.synthetic_count, synthetic_size=cfg.synthetic_size,
                        synthetic_channels=cfg.synthetic_channels)
    if split in ("train", "val"):
        identity["val_fraction"] = cfg.val_fraction
    if split == "train":
        identity["limit"] = cfg.limit
    return identity


def images_sha256(images: torch.Tensor) -> str:
    """SHA-256 (hex) of uint8 N×C×H×W `images`: their shape and their bytes in that order. What names images that
    no dataset config describes (a .npz, a folder of files), so that their cached statistics follow their content,
    wherever the file lies and whatever it is called."""
    digest = hashlib.sha256(f"uint8:{tuple(images.shape)}:".encode())
    digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()


def dataset_key(cfg: DataConfig, split: str | None = None) -> str:
    """`data.name` when the images are the defaults' (e.g. "fashion-mnist"), else name-<8 hex of the identity>."""
    identity = images_identity(cfg, split)
    if identity == images_identity(DataConfig(name=cfg.name), split):
        return cfg.name
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{cfg.name}-{digest}"
