"""MNIST and Fashion-MNIST from their original IDX files (LeCun's format), found locally or downloaded."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from ddpmlab.errors import UserError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist

CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "mnist": [str(digit) for digit in range(10)],
}
_TORCHVISION_NAMES = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
_FILE_PREFIXES = {"train": "train", "test": "t10k"}
_UBYTE = 0x08  # IDX type code for unsigned bytes, the only one these datasets use


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array stored in an IDX file (optionally gzipped), checked against its header."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: cannot read ({exc}); delete it and fetch the dataset again") from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:2] != b"\0\0" or raw[2] != _UBYTE or raw[3] != ndim:
        raise UserError(f"{path}: not an IDX file of {ndim}-d unsigned bytes (bad magic number)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    if len(raw) != header + int(np.prod(dims)):
        raise UserError(f"{path}: truncated or corrupt: header says {dims}, "
                        f"which needs {header + int(np.prod(dims))} bytes, found {len(raw)}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _find(folder: Path, filename: str) -> Path | None:
    for candidate in (folder / filename, folder / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _first_folder_with(folders: list[Path], *filenames: str) -> Path | None:
    return next((f for f in folders if all(_find(f, name) for name in filenames)), None)


def _download(name: str, root: Path) -> None:
    """Fetch the IDX files into root/Dataset/raw with torchvision's MD5-checked downloader. Only the downloader:
    torchvision's dataset class would also torch.load a root/Dataset/processed/*.pt it finds there."""
    import torchvision
    from torchvision.datasets.utils import download_and_extract_archive

    dataset_class = getattr(torchvision.datasets, _TORCHVISION_NAMES[name])
    raw = root / _TORCHVISION_NAMES[name] / "raw"
    for filename, md5 in dataset_class.resources:
        errors = []
        for mirror in dataset_class.mirrors:
            try:
                download_and_extract_archive(f"{mirror}{filename}", str(raw), filename=filename, md5=md5)
                break
            except (OSError, RuntimeError) as exc:  # URLError is an OSError; a wrong MD5 a RuntimeError
                errors.append(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
        else:
            raise UserError(f"downloading {name} into {root} failed ({'; '.join(errors)}); "
                            f"put the IDX files in data.root instead")


def load_idx(name: str, root: Path, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(uint8 N×1×28×28 images, int64 labels, class names) of the official "train" or "test" split.

    Looks in `root`, root/NAME, torchvision's root/Dataset/raw, then (Fashion-MNIST) the Debian
    package's folder; downloads with torchvision when nothing is found and `download` is set.
    """
    prefix = _FILE_PREFIXES[split]
    images_file, labels_file = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    folders = [root, root / name, root / _TORCHVISION_NAMES[name] / "raw"]
    if name == "fashion-mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    found = _first_folder_with(folders, images_file, labels_file)
    if found is None and download:
        _download(name, root)
        found = _first_folder_with(folders, images_file, labels_file)
    if found is None:
        debian = "run `apt-get install dataset-fashion-mnist`, " if name == "fashion-mnist" else ""
        raise UserError(f"{name} {split} files ({images_file}[.gz], {labels_file}[.gz]) not found in "
                        f"{', '.join(map(str, folders))}; {debian}put the files in data.root, "
                        f"or set data.download=true")
    images_path, labels_path = _find(found, images_file), _find(found, labels_file)
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape[1] != images.shape[2]:
        raise UserError(f"{images_path}: images are {images.shape[1]}×{images.shape[2]}, expected square")
    if len(images) != len(labels):
        raise UserError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
    if labels.size and labels.max() >= 10:
        raise UserError(f"{labels_path}: labels must be 0..9, found {labels.max()}")
    return (torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
            list(CLASS_NAMES[name]))
