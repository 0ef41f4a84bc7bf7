"""Images to score that no model draws here: a samples .npz, a folder of image files, or a dataset's split.

`ddpmlab eval SAMPLES --reference REF` reads both sides through `image_source` and `read_images`; `ddpmlab eval
MODEL --reference NAME:SPLIT` scores a model's samples against the split `reference_data` names.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddpmlab.config import DataConfig
from ddpmlab.data import FROM_PATH, check_split, dataset_names, load_dataset
from ddpmlab.data.folder import load_folder
from ddpmlab.errors import UserError
from ddpmlab.eval.cache import dataset_key
from ddpmlab.eval.classifier import held_out_split
from ddpmlab.eval.reference import subset_indices

NPZ_IMAGES = "images"  # the array of a samples .npz, N×H×W×C uint8, as `ddpmlab sample --out FILE.npz` writes it
FORMS = "a .npz with an `images` array, a folder of images or a dataset split NAME:SPLIT (e.g. cifar10:train)"


@dataclass(frozen=True)
class ImageSource:
    """Where a set of images comes from: `kind` "npz" or "folder" (at `path`) or "dataset" (`data`'s `split`)."""

    text: str  # as the user gave it
    kind: str
    path: Path | None = None
    data: DataConfig | None = None
    split: str | None = None

    @property
    def label(self) -> str:
        """A short name for file names: the file's stem, the folder's name, or NAME-SPLIT."""
        if self.kind == "dataset":
            return f"{self.data.name}-{self.split}"
        return self.path.resolve().stem if self.kind == "npz" else self.path.resolve().name


def split_names() -> list[str]:
    """The datasets a NAME:SPLIT can name: those whose name alone says which images they hold."""
    return [name for name in dataset_names() if name not in FROM_PATH]


def dataset_split(text: str) -> tuple[str, str] | None:
    """("cifar10", "train") for "cifar10:train" when NAME is a dataset split_names() knows; else None."""
    name, colon, split = str(text).partition(":")
    return (name, split) if colon and name in split_names() else None


def parse_dataset_split(text: str, flag: str) -> tuple[str, str]:
    """(NAME, SPLIT) of `text`; UserError naming the unknown dataset or split, or what a NAME:SPLIT is."""
    name, colon, split = str(text).partition(":")
    if not colon:
        raise UserError(f"{flag} {text}: not a dataset split; give NAME:SPLIT, e.g. cifar10:train")
    if name not in split_names():
        raise UserError(f"{flag} {text}: unknown dataset {name!r}; datasets: {', '.join(split_names())}")
    try:
        check_split(DataConfig(name=name), split)
    except UserError as exc:
        raise UserError(f"{flag} {text}: {exc}") from None
    return name, split


def model_reference(text: str | None) -> tuple[str, str] | None:
    """(NAME, SPLIT) of a model's --reference (None when not given); UserError for a file or folder, whose images a
    model's samples are scored against once written to a .npz."""
    if text is None:
        return None
    if Path(text).expanduser().exists() or ":" not in str(text):
        raise UserError(f"--reference {text}: a model's samples are scored against a dataset split NAME:SPLIT (e.g. "
                        f"cifar10:train); to score them against other images, write them with `ddpmlab sample MODEL "
                        f"--n N --out SAMPLES.npz`, then run `ddpmlab eval SAMPLES.npz --reference {text}`")
    return parse_dataset_split(text, "--reference")


def image_source(text: str, flag: str) -> ImageSource:
    """The source `text` names, checked to exist: a .npz file, a folder, or a dataset split; UserError otherwise."""
    path = Path(text).expanduser()
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise UserError(f"{flag} {text}: no such file")
        return ImageSource(text, "npz", path=path)
    if path.is_dir():
        return ImageSource(text, "folder", path=path)
    if path.exists() or ":" not in str(text):
        what = "is neither" if path.exists() else "does not exist; give"
        raise UserError(f"{flag} {text} {what} {FORMS}")
    name, split = parse_dataset_split(text, flag)
    return ImageSource(text, "dataset", data=DataConfig(name=name), split=split)


def read_npz_images(path: Path) -> torch.Tensor:
    """uint8 N×C×H×W of the `images` array (N×H×W×C, C 1 or 3) in the .npz at `path`; never a pickle."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if NPZ_IMAGES not in data.files:
                raise UserError(f"{path}: no `{NPZ_IMAGES}` array (it holds {', '.join(data.files) or 'none'}); "
                                f"expected N×H×W×C uint8 images, as `ddpmlab sample --out FILE.npz` writes")
            images = data[NPZ_IMAGES]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a readable .npz of images ({str(exc).splitlines()[0][:100]})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or 0 in images.shape:
        raise UserError(f"{path}: `{NPZ_IMAGES}` is {images.dtype} of shape {images.shape}; expected uint8 N×H×W×C "
                        f"with C 1 or 3 (as `ddpmlab sample --out FILE.npz` writes)")
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def read_images(source: ImageSource, n: int | None = None) -> torch.Tensor:
    """uint8 N×C×H×W images of `source` on the CPU: all of them, or with `n` the fixed-seed draw of min(n, all) that
    eval.reference.subset_indices makes (so a dataset's reference statistics are the same images either way)."""
    if source.kind == "npz":
        images = read_npz_images(source.path)
    elif source.kind == "folder":
        images = load_folder(str(source.path), None)[0]
    else:
        images = load_dataset(source.data, source.split).images
    return images if n is None else images[subset_indices(len(images), n)].contiguous()


def describe(source: ImageSource, images: torch.Tensor, digest: str | None) -> dict:
    """What a results file records of one side: the source as given, its kind, how many images of which shape, and
    their SHA-256 (files) or dataset key and split (a dataset)."""
    facts = {"source": source.text, "kind": source.kind, "n": len(images), "image_shape": list(images.shape[1:])}
    if source.kind == "dataset":
        return {**facts, "dataset": dataset_key(source.data, source.split), "split": source.split}
    return {**facts, "sha256": digest}


def reference_data(model_data: DataConfig, reference: tuple[str, str] | None) -> tuple[DataConfig, str]:
    """(data config, split) a model's samples are scored against: by default its dataset's held-out split; with
    `reference` (NAME, SPLIT) that split: of the model's own data config when NAME is its dataset (same files, same
    val_fraction), else of NAME's defaults read from the same data.root."""
    if reference is None:
        return model_data, held_out_split(model_data)
    name, split = reference
    data = model_data if name == model_data.name else DataConfig(name=name, root=model_data.root,
                                                                 download=model_data.download)
    check_split(data, split)
    return data, split
