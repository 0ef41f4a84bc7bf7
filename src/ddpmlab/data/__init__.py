"""Datasets as uint8 image tensors: the registry of sources, the train/val/test splits, model batches.

Every source returns its official split as uint8 N×C×H×W on the CPU; `load_dataset` carves the
validation part out of the training split, applies `limit` and `image_size`, and `to_model_batch`
turns a batch into the model's [-1, 1] floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ddpmlab.config import DataConfig
from ddpmlab.data.arrays import load_array
from ddpmlab.data.cifar import load_cifar10
from ddpmlab.data.folder import load_folder
from ddpmlab.data.idx import load_idx
from ddpmlab.data.synthetic import synthetic_shapes
from ddpmlab.errors import UserError
from ddpmlab.images import uint8_to_model

SPLITS = ("train", "val", "test")
VALIDATION_SEED = 1234  # fixes which training images are held out, independently of train.seed
SYNTHETIC_SEED = 0


@dataclass
class ImageData:
    """Images of one split: uint8 N×C×H×W (square, CPU, contiguous) and, when the source has them, labels."""

    images: torch.Tensor
    labels: torch.Tensor | None  # int64 (N,)
    num_classes: int  # 0 when unlabelled
    class_names: list[str] | None
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[2]


Loaded = tuple[torch.Tensor, torch.Tensor | None, list[str] | None]  # what a source returns


def default_root() -> Path:
    """Where dataset files are looked for and downloaded when data.root is not set."""
    return Path.home() / ".cache" / "ddpmlab" / "data"


def _root(cfg: DataConfig) -> Path:
    return Path(cfg.root).expanduser() if cfg.root else default_root()


# name -> loader of its official "train" (or "test") split; sources without a test split ignore it
_SOURCES: dict[str, Callable[[DataConfig, str], Loaded]] = {
    "fashion-mnist": lambda cfg, split: load_idx("fashion-mnist", _root(cfg), split, cfg.download),
    "mnist": lambda cfg, split: load_idx("mnist", _root(cfg), split, cfg.download),
    "cifar10": lambda cfg, split: load_cifar10(_root(cfg), split, cfg.download),
    "sprites": lambda cfg, split: load_array(cfg.path, cfg.labels_path),
    "folder": lambda cfg, split: load_folder(cfg.path, cfg.image_size, cfg.on_bad_image),
    "synthetic": lambda cfg, split: synthetic_shapes(cfg.synthetic_count, cfg.synthetic_size,
                                                     cfg.synthetic_channels, SYNTHETIC_SEED),
}
WITH_TEST_SPLIT = ("fashion-mnist", "mnist", "cifar10")
FROM_PATH = ("sprites", "folder")  # the sources that read data.path: no name alone says which images they hold


def dataset_names() -> list[str]:
    """Names `load_dataset` accepts as data.name."""
    return list(_SOURCES)


def validation_indices(count: int, val_fraction: float) -> torch.Tensor:
    """Sorted int64 indices of the training images held out for validation: a fixed-seed draw of round(count·fraction)."""
    if val_fraction <= 0:
        return torch.empty(0, dtype=torch.int64)
    val_count = max(1, round(count * val_fraction))
    if val_count >= count:
        raise UserError(f"data.val_fraction={val_fraction} leaves no training images out of {count}")
    permutation = torch.randperm(count, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    return permutation[:val_count].sort().values


def resize(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 N×C×H×W -> uint8 N×C×size×size: antialiased bilinear on floats, rounded to the nearest level."""
    resized = [F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
               .round_().clamp_(0, 255).to(torch.uint8) for part in images.split(chunk)]
    return torch.cat(resized)


def check_split(cfg: DataConfig, split: str) -> None:
    """UserError unless data.name is a known source with a split `split` ("test" needs an official one, "val" a
    data.val_fraction above 0): checked before any long work that ends reading it."""
    if cfg.name not in _SOURCES:
        raise UserError(f"unknown dataset {cfg.name!r}; datasets: {', '.join(_SOURCES)}")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    if split == "test" and cfg.name not in WITH_TEST_SPLIT:
        raise UserError(f"{cfg.name} has no test split (only {', '.join(WITH_TEST_SPLIT)} do); "
                        f"use the val split, held out by data.val_fraction")
    if split == "val" and cfg.val_fraction <= 0:
        raise UserError("data.val_fraction is 0, so there is no val split; set it above 0")


def load_dataset(cfg: DataConfig, split: str = "train") -> ImageData:
    """The "train", "val" (held out of the official training split) or "test" (official) images of data.name.

    Images are uint8 N×C×H×W on the CPU, resized to data.image_size when set; data.limit keeps the
    first N training images. Raises UserError for missing or corrupt files and unknown splits.
    """
    check_split(cfg, split)
    images, labels, class_names = _SOURCES[cfg.name](cfg, "test" if split == "test" else "train")

    if split != "test":
        held_out = validation_indices(len(images), cfg.val_fraction)
        if split == "val":
            keep = held_out
        else:
            is_train = torch.ones(len(images), dtype=torch.bool)
            is_train[held_out] = False
            keep = is_train.nonzero().squeeze(1)[: cfg.limit]
        images = images[keep]
        labels = labels[keep] if labels is not None else None

    if cfg.image_size is not None and images.shape[-1] != cfg.image_size:
        images = resize(images, cfg.image_size)
    return ImageData(images=images.contiguous(), labels=labels, name=cfg.name, class_names=class_names,
                     num_classes=len(class_names) if labels is not None else 0)


def to_model_batch(images_uint8: torch.Tensor, random_flip: bool, generator: torch.Generator | None) -> torch.Tensor:
    """float32 N×C×H×W in [-1, 1] on the images' device; with `random_flip`, each image mirrored left-right
    with probability 1/2, drawn from `generator` (or the global RNG when None)."""
    batch = uint8_to_model(images_uint8)
    if not random_flip:
        return batch
    flip = flip_draws(len(batch), generator).to(batch.device)
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


def flip_draws(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n booleans, each true with probability 1/2, from `generator` (or the global RNG): which images are mirrored."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, generator=generator, device=device).lt(0.5)


def pick_views(views: torch.Tensor, random_flip: bool, generator: torch.Generator | None) -> torch.Tensor:
    """N×... rows of N×V×... `views` of images, encoded (V = 1, or 2 with [:, 1] the mirrored image's): with
    `random_flip` each row's mirrored view with probability 1/2, drawn as to_model_batch draws its flips."""
    if not random_flip:
        return views[:, 0]
    flip = flip_draws(len(views), generator).to(views.device)
    return views[torch.arange(len(views), device=views.device), flip.long()]
